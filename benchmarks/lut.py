"""Per-layer lookup table against end-to-end latency, measured on this machine.

What it measures: the fbnet CIFAR-100 lookup table (`halo-coord zoo lut`: 102 single-block
models) and N fbnet networks drawn from HELP's public list of 5000, every model timed by the
agent's own benchmark job (`agent.bench.job.run_bench_job`: spawned child, LiteRT with XNNPACK,
1 thread, pinned to one CPU), in shuffled order, `--rounds` times (median of the per-round
p50s). Reported:

* the raw table sum against the end-to-end p50: Spearman and MAPE (no fitted constant), and the
  constant the stem and head add (median of measured - sum);
* leave-samples-out with k = 5/10/20 measured networks as the target samples (`--draws` seeded
  draws, as `halo-coord predict eval`): the `lut` method (sum + fitted stem/head constant)
  against the few-shot methods, which take HELP's 19 public fbnet columns as sources and this
  machine as the unseen target. The references in the same run are those methods and the
  flops (MACs) baseline on the same draws.

    python benchmarks/lut.py [--quick] [--archs N] [--rounds R] [--out FILE.json]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from machine import machine_facts  # noqa: E402
from predictors import load_table  # noqa: E402
from report import print_rows, write_json  # noqa: E402

from agent.bench.job import run_bench_job  # noqa: E402
from agent.runtime import load_runtime, runtime_info  # noqa: E402
from coordinator.analysis.evaluate import evaluate  # noqa: E402
from coordinator.zoo import lut  # noqa: E402
from coordinator.zoo.generate import Generator, make_spec  # noqa: E402
from protocol.bodies import BenchSpec  # noqa: E402

NAME = "lut"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / f"{NAME}.json"
DATASET = "cifar100"  # HELP's fbnet setting
KS = (5, 10, 20)
METHODS = ("flops", "ridge", "nnls", "adaproxy", "help", "lut", "auto")


def measure(path: Path, name: str, cpu: int, quick: bool) -> float:
    spec = BenchSpec(
        model_sha256="0" * 64,
        model_name=name[:128],
        threads=1,
        xnnpack=True,
        affinity=[cpu],
        warmup_seconds=0.1 if quick else 0.2,
        min_seconds=0.2 if quick else 0.5,
        keep_raw=False,
    )
    result = run_bench_job(str(path), spec, "lut", uuid.uuid4().hex, uuid.uuid4().hex)
    if result.status != "ok":
        sys.exit(f"benchmark of {name} failed: {result.reason}")
    return result.stats.p50 / 1e6


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy import stats

    return float(stats.spearmanr(x, y).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    ap.add_argument("--quick", action="store_true", help="30 networks, 1 round, short timing")
    ap.add_argument("--archs", type=int, default=100, help="fbnet networks measured end to end")
    ap.add_argument("--rounds", type=int, default=2, help="timing rounds (median of p50s)")
    ap.add_argument("--draws", type=int, default=20, help="seeded sample draws per k")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n_archs, rounds = (30, 1) if args.quick else (args.archs, args.rounds)
    cpu = sorted(os.sched_getaffinity(0))[-1]

    public = load_table("fbnet")
    rng = np.random.default_rng(args.seed)
    pool = sorted(next(iter(public.values())))
    archs = [pool[i] for i in rng.choice(len(pool), n_archs, replace=False)]
    ops = lut.op_archs("fbnet", DATASET)
    print(f"{len(ops)} table entries + {len(archs)} networks x {rounds} round(s) on CPU {cpu}")

    with tempfile.TemporaryDirectory() as tmp:
        models = []
        with Generator(Path(tmp)) as gen:
            for space, arch in [("op", a) for a in ops] + [("fbnet", a) for a in archs]:
                row, _ = gen.add(make_spec(space, arch, None if space == "op" else DATASET))
                models.append((space, arch, Path(tmp) / row["file"]))
        p50s: dict[tuple[str, str], list[float]] = {(s, a): [] for s, a, _ in models}
        t0 = time.perf_counter()
        for r in range(rounds):
            order = np.random.default_rng([args.seed, r]).permutation(len(models))
            for i in order:
                space, arch, path = models[i]
                p50s[(space, arch)].append(measure(path, arch, cpu, args.quick))
            print(f"round {r + 1}/{rounds} done at {time.perf_counter() - t0:.0f} s")
    ms = {key: float(np.median(v)) for key, v in p50s.items()}
    table = {a: ms[("op", a)] for a in ops}
    target = {a: ms[("fbnet", a)] for a in archs}

    y = np.array([target[a] for a in archs])
    s = lut.layer_sums(lut.entry_matrix("fbnet", DATASET, table), "fbnet", archs)
    raw = {
        "spearman": spearman(s, y),
        "mape_pct": 100 * float(np.mean(np.abs(s - y) / y)),
        "stem_head_ms": float(np.median(y - s)),
        "network_ms_median": float(np.median(y)),
        "table_sum_ms_median": float(np.median(s)),
    }
    print(
        f"\nraw table sum vs end to end ({len(archs)} networks): Spearman "
        f"{raw['spearman']:.3f}, MAPE {raw['mape_pct']:.1f} %, median network "
        f"{raw['network_ms_median']:.3f} ms, median sum {raw['table_sum_ms_median']:.3f} ms, "
        f"stem+head {raw['stem_head_ms']:.3f} ms\n"
    )

    per_k = {}
    lines = [("k", "method", "spearman", "MAPE %", "±10 % acc %", "90% cover %")]
    for k in KS:
        scores = evaluate("fbnet", target, public, k, args.draws, METHODS, args.seed, table)
        per_k[k] = [sc.to_dict() for sc in scores]
        for sc in scores:
            if sc.error:
                lines.append((str(k), sc.method, "-", "-", "-", sc.error[:40]))
                continue
            lines.append(
                (
                    str(k),
                    sc.method,
                    f"{sc.spearman:.3f} ± {sc.spearman_std:.3f}",
                    f"{sc.mape:.1f} ± {sc.mape_std:.1f}",
                    f"{100 * sc.acc10:.0f}",
                    f"{100 * sc.coverage:.0f}",
                )
            )
    print_rows(lines, left=2)
    write_json(
        args.out,
        {
            "benchmark": NAME,
            "quick": args.quick,
            "seed": args.seed,
            "dataset": DATASET,
            "rounds": rounds,
            "draws": args.draws,
            "machine": machine_facts(),
            "runtime": runtime_info(load_runtime()),
            "table_ms": table,
            "networks_ms": target,
            "raw": raw,
            "results": per_k,
        },
    )


if __name__ == "__main__":
    main()
