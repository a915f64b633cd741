"""Leave-target-out evaluation of the few-shot latency predictors.

For each of N seeded draws: pick k archs of the target as its samples, adapt every method
(fitted once on the sources) to them, predict every other arch of the target and score
Spearman rho, Kendall tau-b, MAPE and the share within +-10 % of the measurement. The report
has one row per method (mean and std over draws); the baselines are always included.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from coordinator.analysis import features as feat
from coordinator.analysis import predictors as pred
from coordinator.errors import UserError

METRICS = ("spearman", "kendall", "mape", "acc10")


@dataclass
class MethodScore:
    method: str
    draws: int
    spearman: float
    spearman_std: float
    kendall: float
    kendall_std: float
    mape: float  # percent
    mape_std: float
    acc10: float  # share of predictions within +-10 %
    acc10_std: float
    coverage: float  # share of true latencies inside [lo, hi]
    adapt_s: float  # mean seconds per adapt
    predict_s: float  # mean seconds per predict (all held-out archs)
    # nb201: MAPE over connected archs only; a runtime folds a disconnected cell to a constant
    # (~0 ms), where any relative error explodes and drowns the rest.
    mape_connected: float | None = None
    chosen: dict[str, int] | None = None  # auto: how often each method was picked
    error: str | None = None  # the method could not run (e.g. flops on fbnet)

    def to_dict(self) -> dict:
        return asdict(self)


def scores(
    y: np.ndarray,
    mean: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    connected: np.ndarray | None = None,
) -> dict[str, float]:
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = stats.spearmanr(y, mean).statistic
        tau = stats.kendalltau(y, mean, variant="b").statistic
    rel = np.abs(mean - y) / y
    extra = {}
    if connected is not None and connected.any():
        extra["mape_connected"] = 100.0 * float(np.mean(rel[connected]))
    return {
        **extra,
        "spearman": float(rho) if not math.isnan(rho) else 0.0,
        "kendall": float(tau) if not math.isnan(tau) else 0.0,
        "mape": 100.0 * float(np.mean(rel)),
        "acc10": float(np.mean(rel <= 0.10)),
        "coverage": float(np.mean((y >= lo) & (y <= hi))),
    }


def methods_for(method: str | None, with_lut: bool = False) -> list[str]:
    """The methods a report covers: all of them (lut when there is a table), or the asked one
    plus the baselines."""
    if method is None:
        return [
            "flops",
            "ridge",
            "nnls",
            "adaproxy",
            "help",
            *(["lut"] if with_lut else []),
            "auto",
        ]
    if method not in pred.METHODS:
        raise UserError(
            f"--method: unknown method {method!r} (methods: {'|'.join(pred.ALL_METHODS)})"
        )
    return [*pred.BASELINES, *([method] if method not in pred.BASELINES else [])]


def evaluate(
    space: str,
    target: Mapping[str, float],
    sources: Mapping[str, Mapping[str, float]],
    k: int,
    draws: int,
    methods: Sequence[str] | None = None,
    seed: int = 0,
    table: Mapping[str, float] | None = None,
) -> list[MethodScore]:
    """Leave-target-out scores; `target` and `sources` map canonical arch -> ms; `table` is the
    target's per-layer lookup table (op arch -> ms) for lut."""
    archs = sorted(a for a, v in target.items() if math.isfinite(v) and v > 0)
    if k < pred.MIN_SAMPLES:
        raise UserError(f"--samples: k = {k}; at least {pred.MIN_SAMPLES} are needed")
    if k >= len(archs):
        raise UserError(
            f"--samples: k = {k} but the target has {len(archs)} archs; k must leave some to score"
        )
    if draws < 1:
        raise UserError("--draws: at least 1 draw is needed")
    if not sources:
        raise UserError("--source: at least one source device is needed")
    methods = list(methods) if methods is not None else methods_for(None, bool(table))
    y_all = np.array([target[a] for a in archs])
    connected_all = None
    if space == "nb201":
        connected_all = feat.features(space, archs)[:, feat.NB201_COLUMNS.index("connected")] > 0
    fitted: dict[str, pred.Predictor | str] = {}
    for m in methods:
        try:
            fitted[m] = pred.make(m, space, seed, table).fit(sources)
        except UserError as exc:
            fitted[m] = str(exc)
    per: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    chosen: dict[str, int] = {}
    for draw in range(draws):
        rng = np.random.default_rng([seed, draw])
        pick = np.zeros(len(archs), bool)
        pick[rng.choice(len(archs), size=k, replace=False)] = True
        samples = {a: target[a] for a, p in zip(archs, pick, strict=True) if p}
        query = [a for a, p in zip(archs, pick, strict=True) if not p]
        y = y_all[~pick]
        for m in methods:
            p = fitted[m]
            if isinstance(p, str):
                continue
            try:
                t0 = time.perf_counter()
                p.adapt(samples)
                t1 = time.perf_counter()
                mean, lo, hi = p.predict(query)
                t2 = time.perf_counter()
            except UserError as exc:
                fitted[m] = str(exc)
                continue
            s = scores(y, mean, lo, hi, None if connected_all is None else connected_all[~pick])
            s["adapt_s"], s["predict_s"] = t1 - t0, t2 - t1
            per[m].append(s)
            if isinstance(p, pred.Auto):
                chosen[p.chosen] = chosen.get(p.chosen, 0) + 1
    out = []
    for m in methods:
        rows = per[m]
        if not rows or isinstance(fitted[m], str):
            error = fitted[m] if isinstance(fitted[m], str) else "no draw could be scored"
            nan = math.nan
            out.append(MethodScore(m, 0, *[nan] * 11, error=error))
            continue

        def stat(key: str, rows: list[dict[str, float]] = rows) -> tuple[float, float]:
            v = np.array([r[key] for r in rows])
            return float(v.mean()), float(v.std())

        out.append(
            MethodScore(
                m,
                len(rows),
                *stat("spearman"),
                *stat("kendall"),
                *stat("mape"),
                *stat("acc10"),
                stat("coverage")[0],
                stat("adapt_s")[0],
                stat("predict_s")[0],
                stat("mape_connected")[0] if "mape_connected" in rows[0] else None,
                chosen=dict(sorted(chosen.items())) if m == "auto" else None,
            )
        )
    return out
