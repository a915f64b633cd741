"""Latency monotonicity across devices (OneProxy): do two devices rank the archs of a space the
same way? If they do (Spearman >= ~0.9), a search run on one device (the proxy) finds the
Pareto front of the other (the target) without measuring the target.

Pure functions over {arch: latency ms} maps; SciPy is imported lazily (the `analysis` extra).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from coordinator.errors import UserError

# Below this many common archs a rank correlation says nothing useful (and tau/rho of 2 points
# is always +-1).
MIN_COMMON = 3
MISSING_SCIPY = "analysis needs scikit-learn/SciPy: pip install 'halofarm[analysis]'"


@dataclass(frozen=True, slots=True)
class PairStats:
    n: int  # archs measured on both
    spearman: float | None  # None: fewer than MIN_COMMON common archs, or a constant series
    kendall: float | None  # tau-b (ties in latency are common on integer-ms timers)


@dataclass(frozen=True, slots=True)
class Matrices:
    labels: list[str]
    spearman: list[list[float | None]]
    kendall: list[list[float | None]]
    n: list[list[int]]


@dataclass(frozen=True, slots=True)
class Proxy:
    target: str
    proxy: str | None  # None: no other device has a correlation with the target
    spearman: float | None
    kendall: float | None


def _scipy_stats() -> ModuleType:
    try:
        from scipy import stats
    except ImportError:
        raise UserError(MISSING_SCIPY) from None
    return stats


def _finite(value: float) -> float | None:
    # A constant series gives NaN (and a warning); JSON and tables want "no value" instead.
    value = float(value)
    return None if math.isnan(value) else value


def _rank_stats(x: np.ndarray, y: np.ndarray) -> PairStats:
    n = len(x)
    if n < MIN_COMMON:
        return PairStats(n, None, None)
    stats = _scipy_stats()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConstantInputWarning: reported as None instead
        rho = stats.spearmanr(x, y).statistic
        tau = stats.kendalltau(x, y, variant="b").statistic
    return PairStats(n, _finite(rho), _finite(tau))


def pair_stats(a: Mapping[str, float], b: Mapping[str, float]) -> PairStats:
    """Spearman and Kendall tau-b of two devices' latencies over the archs both measured."""
    common = sorted(a.keys() & b.keys())
    x = np.fromiter((a[k] for k in common), float, len(common))
    y = np.fromiter((b[k] for k in common), float, len(common))
    return _rank_stats(x, y)


def _aligned(series: Mapping[str, Mapping[str, float]]) -> np.ndarray:
    """One row per series over the union of archs, NaN where a series lacks an arch: aligning
    once is what keeps 19 devices x 15,625 archs (171 pairs) fast."""
    archs = sorted(set().union(*(s.keys() for s in series.values())))
    position = {arch: i for i, arch in enumerate(archs)}
    out = np.full((len(series), len(archs)), np.nan)
    for row, s in zip(out, series.values(), strict=True):
        row[[position[k] for k in s]] = list(s.values())
    return out


def matrices(series: Mapping[str, Mapping[str, float]]) -> Matrices:
    """Pairwise Spearman, Kendall and common-arch counts; the diagonal is 1.0 and the series'
    own size. Symmetric by construction (each pair is computed once)."""
    labels = list(series)
    k = len(labels)
    rho: list[list[float | None]] = [[None] * k for _ in range(k)]
    tau: list[list[float | None]] = [[None] * k for _ in range(k)]
    n = [[0] * k for _ in range(k)]
    values = _aligned(series) if series else np.empty((0, 0))
    present = ~np.isnan(values)
    for i in range(k):
        rho[i][i], tau[i][i], n[i][i] = 1.0, 1.0, len(series[labels[i]])
        for j in range(i + 1, k):
            both = present[i] & present[j]
            p = _rank_stats(values[i][both], values[j][both])
            rho[i][j] = rho[j][i] = p.spearman
            tau[i][j] = tau[j][i] = p.kendall
            n[i][j] = n[j][i] = p.n
    return Matrices(labels, rho, tau, n)


def best_proxy(matrix: Sequence[Sequence[float | None]], labels: Sequence[str]) -> dict[str, str]:
    """For each target, the other label with the highest value (ties: the first label); targets
    with no value against any other label are left out."""
    out = {}
    for i, target in enumerate(labels):
        best, best_value = None, -math.inf
        for j, value in enumerate(matrix[i]):
            if j != i and value is not None and value > best_value:
                best, best_value = labels[j], value
        if best is not None:
            out[target] = best
    return out


def proxies(m: Matrices) -> list[Proxy]:
    """best_proxy on Spearman, with the pair's figures."""
    chosen = best_proxy(m.spearman, m.labels)
    index = {label: i for i, label in enumerate(m.labels)}
    out = []
    for i, target in enumerate(m.labels):
        proxy = chosen.get(target)
        j = None if proxy is None else index[proxy]
        out.append(
            Proxy(
                target,
                proxy,
                None if j is None else m.spearman[i][j],
                None if j is None else m.kendall[i][j],
            )
        )
    return out


def pareto_front(latency: Mapping[str, float], score: Mapping[str, float]) -> set[str]:
    """The archs no other arch dominates (as fast or faster and scoring as high or higher, one
    of them strictly), over the archs with both figures. Identical points do not dominate
    each other, so all of them stay. O(n log n): sweep by latency, keep the best score seen."""
    archs = [a for a in latency if a in score]
    archs.sort(key=lambda a: (latency[a], -score[a]))
    front: set[str] = set()
    best_faster = -math.inf  # best score among archs strictly faster than the current group
    i = 0
    while i < len(archs):
        lat = latency[archs[i]]
        j = i
        while j < len(archs) and latency[archs[j]] == lat:
            j += 1
        top = score[archs[i]]  # the group is sorted by score, highest first
        if top > best_faster:
            front.update(a for a in archs[i:j] if score[a] == top)
        best_faster = max(best_faster, top)
        i = j
    return front


def pareto_recovery(
    proxy_lat: Mapping[str, float], target_lat: Mapping[str, float], score: Mapping[str, float]
) -> float | None:
    """The share of the target's Pareto front that the proxy's front finds, over the archs that
    both devices measured and that have a score; None with fewer than MIN_COMMON such archs."""
    common = proxy_lat.keys() & target_lat.keys() & score.keys()
    if len(common) < MIN_COMMON:
        return None
    target_front = pareto_front({a: target_lat[a] for a in common}, score)
    proxy_front = pareto_front({a: proxy_lat[a] for a in common}, score)
    return len(proxy_front & target_front) / len(target_front)
