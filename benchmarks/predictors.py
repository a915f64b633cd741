"""Few-shot latency predictors, leave-one-device-out on HELP's public tables.

What it measures: for every device column of `../shared/data/<space>/latency_ms.csv` as the
unseen target, with all other columns as sources, each method of `halo-coord predict` adapted
with k target samples (k in 5, 10, 20, 50; `--draws` seeded draws each) and scored on every
other arch of the target: Spearman, Kendall tau-b, MAPE, share within +-10 %, coverage of the
90 % interval, and the time of fit, adapt and predict (all archs of the space).

Reference in the same run: the baselines (flops = MACs, ridge on architecture features, nnls
over the sources) are scored on the same draws; the table shows each method's mean Spearman
over the targets, its margin over the best baseline, and HELP's published figure for k = 10
(0.932 nb201, 0.910 fbnet) as the bar.

Reference for the weakest targets: the self-fit -- ridge on the one-hot encoding and
architecture features fitted on a random half of the target's own archs (thousands of
measurements, not k), scored on the other half: how much of the column an additive model can
rank at all. On a noisy column it is low, and no few-shot method gets far past it (it is not
a strict bound: nnls borrows the sources' whole columns, which can share the target's quirks).

    python benchmarks/predictors.py [--space nb201|fbnet] [--quick] [--draws N] [--out FILE.json]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from machine import machine_facts  # noqa: E402
from report import print_rows, write_json  # noqa: E402

from coordinator.analysis import features as feat  # noqa: E402
from coordinator.analysis import predictors as pred  # noqa: E402
from coordinator.analysis.evaluate import evaluate  # noqa: E402

NAME = "predictors"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / f"{NAME}.json"
KS = (5, 10, 20, 50)
METHODS = ("flops", "ridge", "nnls", "adaproxy", "help", "auto")
BASELINES = ("flops", "ridge", "nnls")
HELP_PAPER = {"nb201": 0.932, "fbnet": 0.910}


def load_table(space: str) -> dict[str, dict[str, float]]:
    """device -> {canonical arch: ms} from the public wide CSV."""
    path = DATA / space / "latency_ms.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    arch_col = "arch_str" if space == "nb201" else "arch"
    archs = [feat.canonical(space, r[arch_col]) for r in rows]
    devices = [c for c in rows[0] if c not in ("index", arch_col)]
    return {d: {a: float(r[d]) for a, r in zip(archs, rows, strict=True)} for d in devices}


def timings(space: str, table: dict[str, dict[str, float]], target: str) -> dict[str, dict]:
    """fit / adapt (k = 10) / predict-all seconds per method, one run each."""
    sources = {d: v for d, v in table.items() if d != target}
    archs = sorted(table[target])
    rng = np.random.default_rng(0)
    samples = {a: table[target][a] for a in rng.choice(archs, 10, replace=False)}
    out = {}
    for m in METHODS:
        t0 = time.perf_counter()
        try:
            p = pred.make(m, space).fit(sources)
            t1 = time.perf_counter()
            p.adapt(samples)
            t2 = time.perf_counter()
            p.predict(archs)
            t3 = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - a method that cannot run is reported
            out[m] = {"error": str(exc)}
            continue
        out[m] = {"fit_s": t1 - t0, "adapt_s": t2 - t1, "predict_all_s": t3 - t2}
    return out


SELF_FIT_ALPHA = 1e-3  # ridge on thousands of archs: barely regularised


def self_fit(space: str, lat: dict[str, float], seed: int = 0) -> float:
    """Spearman on one half of the target's archs of a ridge model of log latency on the
    one-hot encoding and features, fitted on the other half."""
    from scipy import stats

    archs = sorted(lat)
    x = np.column_stack([np.ones(len(archs)), feat.features(space, archs)])
    y = np.log([lat[a] for a in archs])
    order = np.random.default_rng(seed).permutation(len(archs))
    fit, test = order[: len(order) // 2], order[len(order) // 2 :]
    a = x[fit].T @ x[fit] + SELF_FIT_ALPHA * np.eye(x.shape[1])
    w = np.linalg.solve(a, x[fit].T @ y[fit])
    return float(stats.spearmanr(x[test] @ w, y[test]).statistic)


def weakest_targets(
    results: dict, ks: tuple[int, ...], self_fits: dict[str, float], n: int = 3
) -> list[tuple[str, ...]]:
    """Rows for the n targets whose best baseline has the lowest Spearman at k = 10: that
    baseline against each learned method, and the target's self-fit."""
    if 10 not in ks:
        return []
    per = results["10"]

    def rho(t: str, m: str) -> float:
        return per[t][m]["spearman"] if per[t][m]["error"] is None else float("nan")

    best = {t: max(BASELINES, key=lambda b: np.nan_to_num(rho(t, b), nan=-1)) for t in per}
    order = sorted(per, key=lambda t: rho(t, best[t]))[:n]
    learned = [m for m in METHODS if m not in BASELINES]
    rows = [("target", "best baseline", *learned, "self-fit")]
    for t in order:
        base = rho(t, best[t])
        cells = [f"{rho(t, m):.3f} ({rho(t, m) - base:+.3f})" for m in learned]
        own = f"{self_fits[t]:.3f} ({self_fits[t] - base:+.3f})"
        rows.append((t, f"{best[t]} {base:.3f}", *cells, own))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", choices=("nb201", "fbnet"), default="nb201")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="k = 10 only, 2 draws, 4 targets")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if not (DATA / args.space / "latency_ms.csv").is_file():
        print(f"no public table at {DATA / args.space}", file=sys.stderr)
        return 2
    table = load_table(args.space)
    ks = (10,) if args.quick else KS
    draws = 2 if args.quick else args.draws
    targets = list(table)[:4] if args.quick else list(table)
    results: dict[str, dict] = {}
    started = time.perf_counter()
    for k in ks:
        for target in targets:
            sources = {d: v for d, v in table.items() if d != target}
            scores = evaluate(args.space, table[target], sources, k, draws, METHODS)
            results.setdefault(str(k), {})[target] = {s.method: s.to_dict() for s in scores}
            print(f"k={k:<3} {target:<15} " + "  ".join(
                f"{s.method} {s.spearman:.3f}" for s in scores if s.error is None
            ), flush=True)  # fmt: skip
    elapsed = time.perf_counter() - started

    lines = [("k", "method", "mean rho", "min rho", "vs best baseline", "MAPE %",
              "MAPE conn %", "cover %")]  # fmt: skip
    summary = {}
    for k in ks:
        per = results[str(k)]

        def mean_rho(m: str, per: dict = per) -> list[float]:
            return [per[t][m]["spearman"] for t in per if per[t][m]["error"] is None]

        best_base = max(np.mean(mean_rho(b)) for b in BASELINES if mean_rho(b))
        for m in METHODS:
            rho = mean_rho(m)
            if not rho:
                continue
            mape = np.mean([per[t][m]["mape"] for t in per if per[t][m]["error"] is None])
            conn = [per[t][m]["mape_connected"] for t in per if per[t][m]["error"] is None]
            conn_text = "-" if None in conn else f"{np.mean(conn):.0f}"
            cover = np.mean([per[t][m]["coverage"] for t in per if per[t][m]["error"] is None])
            summary[f"{k}/{m}"] = {"mean_spearman": float(np.mean(rho)), "min": min(rho)}
            lines.append((str(k), m, f"{np.mean(rho):.3f}", f"{min(rho):.3f}",
                          f"{np.mean(rho) - best_base:+.3f}", f"{mape:.0f}", conn_text,
                          f"{100 * cover:.0f}"))  # fmt: skip
    print()
    print_rows(lines, left=2)
    self_fits = {t: self_fit(args.space, table[t]) for t in targets}
    weakest = weakest_targets(results, ks, self_fits)
    if weakest:
        print("\nk = 10 on the 3 targets where the baselines are weakest (best baseline's rho):")
        print_rows(weakest, left=1)
    print(f"HELP paper, k = 10: {HELP_PAPER[args.space]}; {len(targets)} targets, {draws} draws, "
          f"{elapsed:.0f} s")  # fmt: skip
    times = timings(args.space, table, targets[0])
    print("\nseconds (target " + targets[0] + ", k = 10, predict = every arch of the table):")
    print_rows(
        [("method", "fit", "adapt", "predict all")]
        + [
            (m, f"{t['fit_s']:.3f}", f"{t['adapt_s']:.3f}", f"{t['predict_all_s']:.3f}")
            for m, t in times.items()
            if "error" not in t
        ]
    )
    write_json(args.out, {
        "benchmark": NAME, "space": args.space, "draws": draws, "ks": list(ks),
        "targets": targets, "machine": machine_facts(), "summary": summary,
        "timings": times, "results": results, "help_paper_k10": HELP_PAPER[args.space],
        "self_fit": self_fits,
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
