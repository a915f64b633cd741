"""How well our NAS-Bench-201 models rank like the published per-device latencies.

(a) MACs of all 15625 nb201 archs (cifar10, float32) against each device column of
`nb201/latency_ms.csv` (HELP / HW-NAS-Bench): Spearman rho. MACs come from our builder
(`nb201.build` + `analytics.stats`, weights zeroed because MACs depend only on shapes), in two
conventions:
  * folded   -- the MACs of our models: a network whose cell output is disconnected is folded to
                a constant (0 MACs), as the TFLite converter does (what `pixel3` saw);
  * unfolded -- every edge op counted, no folding (what the PyTorch GPU/CPU columns ran). It is
                base + sum of per-edge op costs, with the costs taken from built graphs; the
                additive model is checked to equal the built MACs of every connected arch.
(b) Measured here: a fixed-seed sample of archs, generated as float32 models, each timed with
LiteRT + XNNPACK (`resolver="auto"`), 1 thread, the process pinned to one CPU, with
`benchmark_model` semantics: warm-up >= 1 run and >= 0.5 s, then >= 50 runs and >= 1 s (capped at
MAX_RUNS for near-empty folded models), `invoke()` alone timed with `time.perf_counter_ns()`,
median per model. Models are measured in a random order so drift does not line up with archs.
Spearman rho of our medians against each device column, and against our MACs, on all sampled
archs, on the connected ones, and on those without dead ops (an op whose result nothing on the
way to the cell output reads: XNNPACK removes such ops at run time, TFLite's own kernels and the
non-TFLite devices run them). The third MACs convention, `live ops`, counts only what XNNPACK
runs. The same columns' rho against MACs on the same sample shows what the sample alone gives.

Spearman rho = Pearson correlation of average ranks (ties share their mean rank); no scipy.

    python benchmarks/nb201_rank.py [--quick] [--data DIR] [--out FILE.json]
"""

from __future__ import annotations

import os

# One BLAS thread per process (set before numpy loads OpenBLAS): the MACs pass runs one worker
# per core and the timing pass pins everything to one CPU. An explicit setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from multiprocessing import Pool  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from machine import machine_facts  # noqa: E402
from report import print_rows, write_json  # noqa: E402

from agent.runtime import load_runtime, make_interpreter, runtime_info  # noqa: E402
from coordinator.zoo.analytics import stats  # noqa: E402
from coordinator.zoo.generate import build_model, make_spec  # noqa: E402
from coordinator.zoo.spaces import nb201  # noqa: E402
from coordinator.zoo.spaces.common import Init  # noqa: E402

NAME = "nb201_rank"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / f"{NAME}.json"
DEFAULT_DATA = REPO.parent / "shared" / "data"
SEED = 0  # arch sample
ORDER_SEED = 1  # measurement order
MAX_RUNS = 10_000  # a folded model runs in ~1 us; 1 s of it would be ~10^6 runs
# (archs measured, MACs sample, warm-up min runs/s, timed min runs/s); MACs sample None = all
FULL = {"archs": 100, "macs_sample": None, "warmup": (1, 0.5), "runs": (50, 1.0)}
QUICK = {"archs": 20, "macs_sample": 1000, "warmup": (1, 0.1), "runs": (10, 0.2)}
PHONE_CPU = (
    "gold_6240",
    "silver_4114",
    "silver_4210r",
    "pixel3",
    "essential_ph_1",
    "samsung_a50",
    "samsung_s7",
)


# ---------------------------------------------------------------- statistics


def rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values get the mean of the ranks they span."""
    _, inverse, counts = np.unique(np.asarray(x), return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    return (upper - (counts - 1) / 2.0)[inverse]


def spearman(x, y) -> float:
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


# ---------------------------------------------------------------- reference data


def load_latency(path: Path) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """(indices, arch strings, {device column: latencies}) in file order, checked against our
    index -> arch mapping."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    if header[:2] != ["index", "arch_str"]:
        raise SystemExit(f"{path}: expected columns index,arch_str,..., got {header[:3]}")
    indices = np.array([int(r[0]) for r in rows])
    archs = [r[1] for r in rows]
    wrong = [i for i, a in zip(indices, archs, strict=True) if nb201.from_index(int(i)) != a]
    if wrong:
        raise SystemExit(f"{path}: {len(wrong)} arch strings differ from ours, e.g. {wrong[:3]}")
    columns = {
        name: np.array([float(r[k]) for r in rows]) for k, name in enumerate(header) if k > 1
    }
    return indices, archs, columns


# ---------------------------------------------------------------- MACs


def built_macs(arch: str) -> int:
    """MACs of our cifar10 model of `arch` (0 when it is folded)."""
    return stats(nb201.build(arch, "cifar10", None, Init(0)).graph).macs


def folded_macs(archs: list[str]) -> np.ndarray:
    jobs = len(os.sched_getaffinity(0))
    with Pool(jobs) as pool:
        return np.array(pool.map(built_macs, archs, chunksize=64), dtype=np.int64)


def edge_costs() -> tuple[int, dict[str, int]]:
    """(MACs of the all-skip network, extra MACs of each op on one edge), from built graphs."""
    skip = ["skip_connect"] * len(nb201.EDGES)
    base = built_macs(nb201.ops_to_string(tuple(skip)))
    costs = {}
    for op in nb201.OPS:
        ops = list(skip)
        ops[3] = op  # edge 0->3: the cell stays connected (0->1->3) whatever op it holds
        costs[op] = built_macs(nb201.ops_to_string(tuple(ops))) - base
    return base, costs


def unfolded_macs(archs: list[str], base: int, costs: dict[str, int]) -> np.ndarray:
    return np.array(
        [base + sum(costs[op] for op in nb201.parse_ops(a)) for a in archs], dtype=np.int64
    )


def live_edges(ops: tuple[str, ...]) -> list[bool]:
    """Edges whose result is read on the way to the cell output. XNNPACK drops every op whose
    output nothing reads, so on LiteRT's default path only these edges cost time."""
    live = [op != "none" for op in ops]
    read = {3: True, 2: live[5]}
    read[1] = live[4] or (live[2] and read[2])
    return [live[k] and read[dst] for k, (_, dst) in enumerate(nb201.EDGES)]


def live_macs(archs: list[str], base: int, costs: dict[str, int]) -> np.ndarray:
    """MACs of the ops LiteRT + XNNPACK executes: live edges only, 0 when folded."""
    out = []
    for arch in archs:
        ops = nb201.parse_ops(arch)
        live = zip(ops, live_edges(ops), strict=True)
        out.append(
            base + sum(costs[op] for op, keep in live if keep) if nb201.is_connected(ops) else 0
        )
    return np.array(out, dtype=np.int64)


def has_dead_ops(arch: str) -> bool:
    ops = nb201.parse_ops(arch)
    return live_edges(ops) != [op != "none" for op in ops]


def macs_table(archs: list[str]) -> dict:
    t0 = time.perf_counter()
    folded = folded_macs(archs)
    base, costs = edge_costs()
    unfolded = unfolded_macs(archs, base, costs)
    connected = np.array([nb201.is_connected(nb201.parse_ops(a)) for a in archs])
    mismatch = int(np.sum(folded[connected] != unfolded[connected]))
    nonzero_folded = int(np.sum(folded[~connected] != 0))
    return {
        "folded": folded,
        "unfolded": unfolded,
        "connected": connected,
        "base_macs": base,
        "edge_op_macs": costs,
        "additive_mismatches_connected": mismatch,
        "disconnected_with_nonzero_macs": nonzero_folded,
        "seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------- timing


def pin_one_cpu() -> int:
    """Pin every existing thread of the process (and so every later one) to one CPU."""
    cpu = min(os.sched_getaffinity(0))
    for tid in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(tid), {cpu})
    return cpu


def run_for(interpreter, min_runs: int, min_s: float, max_runs: int) -> list[int]:
    """ns per `invoke()`, until both min_runs and min_s are reached (or max_runs)."""
    times: list[int] = []
    start = time.perf_counter_ns()
    limit = int(min_s * 1e9)
    while len(times) < max_runs and (
        len(times) < min_runs or time.perf_counter_ns() - start < limit
    ):
        t0 = time.perf_counter_ns()
        interpreter.invoke()
        times.append(time.perf_counter_ns() - t0)
    return times


def time_model(rt, data: bytes, cfg: dict) -> dict:
    it = make_interpreter(rt, model_content=data, num_threads=1, resolver="auto")
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    x = np.random.default_rng(SEED).uniform(-1.0, 1.0, inp["shape"]).astype(np.float32)
    it.set_tensor(inp["index"], x)
    warm = run_for(it, *cfg["warmup"], MAX_RUNS)
    runs = run_for(it, *cfg["runs"], MAX_RUNS)
    kinds = [d["op_name"] for d in it._get_ops_details()]
    return {
        "median_ms": float(np.median(runs)) / 1e6,
        "warmup_runs": len(warm),
        "runs": len(runs),
        "delegate_nodes": kinds.count("DELEGATE"),
        "runs_us": [round(t / 1e3, 1) for t in runs],
    }


def measure(archs: list[str], cfg: dict) -> list[dict]:
    models = []
    for arch in archs:
        data, row, _ = build_model(make_spec("nb201", arch, "cifar10"))
        models.append((data, row))
    rt = load_runtime()
    order = np.random.default_rng(ORDER_SEED).permutation(len(archs))
    results: list[dict] = [{} for _ in archs]
    for k in order:
        data, row = models[k]
        results[k] = {
            "index": row["index"],
            "arch": row["arch"],
            "connected": row["connected"],
            "macs": row["macs"],
            "kernels": row["kernels"],
            **time_model(rt, data, cfg),
        }
    return results


# ---------------------------------------------------------------- report


def correlations(
    all_idx, columns, macs, sample_idx, measured, sample_macs, connected, alive
) -> list[dict]:
    """Per device: rho of MACs (all archs, both conventions), and on the sample of MACs and of
    our measured latency (all sampled, connected only, without dead ops)."""
    pos = {int(i): k for k, i in enumerate(all_idx)}
    rows_all = np.array([pos[int(i)] for i in macs["indices"]])
    rows_sample = np.array([pos[int(i)] for i in sample_idx])
    out = []
    for name, col in columns.items():
        s = col[rows_sample]
        out.append(
            {
                "device": name,
                "rho_macs_all_unfolded": spearman(macs["unfolded"], col[rows_all]),
                "rho_macs_all_folded": spearman(macs["folded"], col[rows_all]),
                "rho_macs_sample": spearman(sample_macs, s),
                "rho_measured_sample": spearman(measured, s),
                "rho_measured_sample_connected": spearman(measured[connected], s[connected]),
                "rho_measured_sample_no_dead_ops": spearman(measured[alive], s[alive]),
            }
        )
    return out


def print_table(
    rows: list[dict], extra: list[tuple], n: int, n_all: int, n_conn: int, n_alive: int
):
    header = (
        "device",
        f"rho MACs all-{n_all} (unfolded)",
        "(folded)",
        f"rho MACs {n}",
        f"rho measured {n}",
        f"(connected {n_conn})",
        f"(no dead ops {n_alive})",
    )
    lines = [header]
    fmt = lambda v: "-" if v is None else f"{v:+.3f}"  # noqa: E731
    for r in rows:
        lines.append(
            (
                r["device"],
                fmt(r["rho_macs_all_unfolded"]),
                fmt(r["rho_macs_all_folded"]),
                fmt(r["rho_macs_sample"]),
                fmt(r["rho_measured_sample"]),
                fmt(r["rho_measured_sample_connected"]),
                fmt(r["rho_measured_sample_no_dead_ops"]),
            )
        )
    for name, *rhos in extra:
        lines.append((name, "-", "-", "-", *map(fmt, rhos)))
    print_rows(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data directory")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--quick", action="store_true", help="20 archs, 1000-arch MACs sample")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    t_start = time.perf_counter()
    all_idx, all_archs, columns = load_latency(args.data / "nb201" / "latency_ms.csv")

    mac_idx = all_idx
    if cfg["macs_sample"]:
        rng = np.random.default_rng(SEED)
        mac_idx = np.sort(rng.choice(all_idx, cfg["macs_sample"], replace=False))
    macs = macs_table([nb201.from_index(int(i)) for i in mac_idx])
    macs["indices"] = mac_idx

    sample = nb201.sample(np.random.default_rng(SEED), cfg["archs"])
    cpu = pin_one_cpu()
    t_measure = time.perf_counter()
    results = measure(sample, cfg)
    measure_s = time.perf_counter() - t_measure

    sample_idx = np.array([r["index"] for r in results])
    measured = np.array([r["median_ms"] for r in results])
    sample_macs = np.array([r["macs"] for r in results])
    connected = np.array([r["connected"] for r in results])
    alive = np.array([not has_dead_ops(a) for a in sample])
    conventions = {
        "our MACs (folded)": sample_macs,
        "our MACs (unfolded)": unfolded_macs(sample, macs["base_macs"], macs["edge_op_macs"]),
        "our MACs (live ops)": live_macs(sample, macs["base_macs"], macs["edge_op_macs"]),
    }
    extra = [
        (
            name,
            spearman(measured, m),
            spearman(measured[connected], m[connected]),
            spearman(measured[alive], m[alive]),
        )
        for name, m in conventions.items()
    ]
    rows = correlations(all_idx, columns, macs, sample_idx, measured, sample_macs, connected, alive)
    print_table(rows, extra, len(sample), len(mac_idx), int(connected.sum()), int(alive.sum()))
    wall = time.perf_counter() - t_start
    print(
        f"{len(sample)} archs measured ({int(connected.sum())} connected, {int(alive.sum())} "
        f"without dead ops) in {measure_s:.0f} s; "
        f"MACs of {len(mac_idx)} archs in {macs['seconds']:.0f} s; wall {wall:.0f} s"
    )
    low = [r["device"] for r in rows if r["device"] in PHONE_CPU and r["rho_measured_sample"] < 0.8]
    if low:
        print(f"rho measured < 0.8 on phone/CPU columns: {', '.join(low)}")

    out = {
        "benchmark": NAME,
        "quick": args.quick,
        "config": {**cfg, "seed": SEED, "order_seed": ORDER_SEED, "max_runs": MAX_RUNS},
        "data": str(args.data / "nb201" / "latency_ms.csv"),
        "runtime": {**runtime_info(load_runtime()), "resolver": "auto", "num_threads": 1},
        "pinned_cpu": cpu,
        "machine": machine_facts(),
        "macs": {
            "archs": len(mac_idx),
            "seconds": macs["seconds"],
            "base_macs": macs["base_macs"],
            "edge_op_macs": macs["edge_op_macs"],
            "additive_mismatches_connected": macs["additive_mismatches_connected"],
            "disconnected": int((~macs["connected"]).sum()),
            "disconnected_with_nonzero_macs": macs["disconnected_with_nonzero_macs"],
        },
        "correlations": rows,
        "measured_vs_macs": [
            {"macs": n, "rho_all": a, "rho_connected": c, "rho_no_dead_ops": d}
            for n, a, c, d in extra
        ],
        "measure_seconds": measure_s,
        "wall_seconds": wall,
        "models": results,
    }
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
