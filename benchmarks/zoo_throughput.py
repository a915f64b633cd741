"""Model-zoo generation throughput on one CPU core.

What it measures: how many .tflite models per second `Generator(dir).add(spec)` produces -- the
exact per-model path of `halo-coord zoo generate` (build the graph, quantise for int8, serialise,
hash, write the file, append the manifest line) -- for nb201 and fbnet, float32 and int8.

How: the process is pinned to one CPU (`os.sched_setaffinity`). Each configuration generates a
fixed-seed sample of distinct architectures into a fresh temporary directory, after one untimed
warm-up model. Every model is timed with `time.perf_counter_ns()`; the table shows models/s over
the whole loop, the median and p90 of the per-model times, and the mean file size.

numpy's BLAS is limited to one thread (OPENBLAS_NUM_THREADS etc. default to 1 unless set).

Reference in the same run: the I/O floor -- `hashlib.sha256` of the same bytes plus writing them
to a temporary file and renaming it into place, as the generator does. `floor share` = median
floor time / median generation time. For int8, `calib share` is the median time of the
calibration pass alone (`activation_ranges` on `calibration_inputs`, re-run on the float graph)
over the median generation time. `vs target` = nb201 float32 models/s / 200 (the goal is >= 1).

    python benchmarks/zoo_throughput.py [--quick] [--out FILE.json]
"""

from __future__ import annotations

import os

# One core means one BLAS thread too: must be set before numpy loads OpenBLAS. With its default
# (one worker per core) pinned onto one CPU, the workers spin against each other and int8
# calibration runs ~10x slower. An explicit setting in the environment wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from machine import machine_facts as base_machine_facts  # noqa: E402
from report import print_rows, write_json  # noqa: E402

from coordinator.zoo.generate import Generator, build_graph, make_spec  # noqa: E402
from coordinator.zoo.quantize import activation_ranges, calibration_inputs  # noqa: E402
from coordinator.zoo.spaces import fbnet, nb201  # noqa: E402

NAME = "zoo_throughput"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / f"{NAME}.json"
TARGET_MODELS_PER_S = 200.0  # nb201 float32 on one core
SEED = 0
# (space, dtype, models in full mode, models in --quick mode)
CONFIGS = (
    ("nb201", "float32", 500, 40),
    ("nb201", "int8", 60, 4),
    ("fbnet", "float32", 150, 15),
    ("fbnet", "int8", 50, 5),
)
CALIBRATION_MODELS = 5  # int8 models whose calibration pass is timed on its own


def machine_facts() -> dict:
    return {
        **base_machine_facts(),
        "blas_threads_env": {
            v: os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
        },
        "process_threads": len(os.listdir("/proc/self/task")),
    }


def pin_one_cpu() -> int:
    """Pin every thread of the process (numpy's BLAS workers already exist) and later ones."""
    cpu = min(os.sched_getaffinity(0))
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), {cpu})
    return cpu


def sample_archs(space: str, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    if space == "nb201":
        return nb201.sample(rng, n)
    archs: list[str] = []
    while len(archs) < n:  # distinct, so the generator never skips one as already written
        archs = list(dict.fromkeys(archs + fbnet.sample(rng, n - len(archs))))
    return archs


def generate(space: str, dtype: str, archs: list[str], out_dir: Path) -> dict:
    """Per-model times (ns), wall time (ns) and the files written."""
    times, files = [], []
    with Generator(out_dir) as gen:
        start = time.perf_counter_ns()
        for arch in archs:
            t0 = time.perf_counter_ns()
            row, written = gen.add(make_spec(space, arch, dtype=dtype, seed=SEED))
            times.append(time.perf_counter_ns() - t0)
            assert written, f"{row['id']} was not written"
            files.append(out_dir / row["file"])
        wall = time.perf_counter_ns() - start
    return {"times_ns": times, "wall_ns": wall, "files": files}


def io_floor(files: list[Path], out_dir: Path) -> list[int]:
    """Per-model ns to hash the same bytes and write them to disk the way the generator does."""
    times = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        data = path.read_bytes()
        target = out_dir / path.name
        tmp = target.with_suffix(".tflite.tmp")
        t0 = time.perf_counter_ns()
        hashlib.sha256(data).hexdigest()
        tmp.write_bytes(data)
        os.replace(tmp, target)
        times.append(time.perf_counter_ns() - t0)
    return times


def calibration_times(space: str, archs: list[str]) -> list[int]:
    """ns of the int8 calibration pass alone, on the float graph of each arch."""
    times = []
    for arch in archs:
        _, graph = build_graph(make_spec(space, arch, dtype="float32", seed=SEED))
        t0 = time.perf_counter_ns()
        activation_ranges(graph, calibration_inputs(graph, SEED))
        times.append(time.perf_counter_ns() - t0)
    return times


def run_config(space: str, dtype: str, n: int, workdir: Path) -> dict:
    archs = sample_archs(space, n + 1, SEED)
    warm, archs = archs[0], archs[1:]
    with Generator(workdir / "warmup") as gen:
        gen.add(make_spec(space, warm, dtype=dtype, seed=SEED))
    gen_result = generate(space, dtype, archs, workdir / "models")
    floor = io_floor(gen_result["files"], workdir / "floor")
    times_ms = np.array(gen_result["times_ns"]) / 1e6
    floor_ms = np.array(floor) / 1e6
    sizes = [p.stat().st_size for p in gen_result["files"]]
    result = {
        "space": space,
        "dtype": dtype,
        "models": len(archs),
        "models_per_s": len(archs) / (gen_result["wall_ns"] / 1e9),
        "ms_median": float(np.median(times_ms)),
        "ms_p90": float(np.percentile(times_ms, 90)),
        "mean_bytes": float(np.mean(sizes)),
        "floor_ms_median": float(np.median(floor_ms)),
        "floor_share": float(np.median(floor_ms) / np.median(times_ms)),
        "per_model_ms": times_ms.round(4).tolist(),
        "floor_per_model_ms": floor_ms.round(4).tolist(),
        "archs": archs,
    }
    if dtype == "int8":
        calib_ms = np.array(calibration_times(space, archs[:CALIBRATION_MODELS])) / 1e6
        result["calibration_ms_median"] = float(np.median(calib_ms))
        result["calibration_share"] = float(np.median(calib_ms) / result["ms_median"])
        result["calibration_models"] = len(calib_ms)
    if (space, dtype) == ("nb201", "float32"):
        result["vs_target"] = result["models_per_s"] / TARGET_MODELS_PER_S
    return result


def print_table(rows: list[dict]) -> None:
    header = (
        "config",
        "models",
        "models/s",
        "ms med",
        "ms p90",
        "mean MB",
        "floor ms",
        "floor share",
        "calib share",
        "vs target",
    )
    lines = [header]
    for r in rows:
        calib = r.get("calibration_share")
        target = r.get("vs_target")
        lines.append(
            (
                f"{r['space']} {r['dtype']}",
                str(r["models"]),
                f"{r['models_per_s']:.2f}",
                f"{r['ms_median']:.1f}",
                f"{r['ms_p90']:.1f}",
                f"{r['mean_bytes'] / 1e6:.2f}",
                f"{r['floor_ms_median']:.2f}",
                f"{r['floor_share']:.3f}",
                "-" if calib is None else f"{calib:.3f}",
                "-" if target is None else f"{target:.3f}",
            )
        )
    print_rows(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--quick", action="store_true", help="fewer models per configuration")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpu = pin_one_cpu()
    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo-throughput-") as tmp:
        for space, dtype, full_n, quick_n in CONFIGS:
            n = quick_n if args.quick else full_n
            rows.append(run_config(space, dtype, n, Path(tmp) / f"{space}-{dtype}"))
    print_table(rows)
    out = {
        "benchmark": NAME,
        "quick": args.quick,
        "seed": SEED,
        "pinned_cpu": cpu,
        "target_models_per_s": TARGET_MODELS_PER_S,
        "machine": machine_facts(),
        "results": rows,
    }
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
