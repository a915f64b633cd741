"""From an arch's stored results (repetitions) to its row figures, and from measured and imported
rows to one dataset. Pure functions over plain values; the store is read in `select`."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

from coordinator.dataset.rows import MEASURED, Aggregate, Dataset, DatasetKey, Row, arch_order

NS_PER_MS = 1e6


@dataclass(frozen=True)
class Measurement:
    """The figures of one stored result, in the store's units (ns)."""

    result_id: str
    p50_ns: float
    p90_ns: float | None = None
    mean_ns: float | None = None
    std_ns: float | None = None  # population std of the result's runs (ddof=0)
    count: int | None = None
    energy_mj: float | None = None
    energy_dyn_mj: float | None = None
    power_mw: float | None = None
    energy_method: str | None = None


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def pooled_mean_std(
    counts: Sequence[int], means: Sequence[float], stds: Sequence[float]
) -> tuple[float, float]:
    """Mean and population std of all runs of several results, from each result's count, mean
    and population std: what numpy gives on the concatenated raw runs.

    The variance is Σc·(std² + (mean − M)²)/N, equal to Σc·(std² + mean²)/N − M² but without
    subtracting two large nearly equal numbers (latencies are ~1e6 ns, their spread ~1e4).
    """
    n = sum(counts)
    if n <= 0:
        raise ValueError("pooling needs at least one run")
    mean = sum(c * m for c, m in zip(counts, means, strict=True)) / n
    var = (
        sum(c * (s * s + (m - mean) ** 2) for c, m, s in zip(counts, means, stds, strict=True)) / n
    )
    return mean, math.sqrt(max(var, 0.0))


def rep_cv(p50s: Sequence[float]) -> float | None:
    """How much an arch's repetitions disagree: population std of their p50s over their mean."""
    if len(p50s) < 2:
        return 0.0 if p50s else None
    mean = statistics.fmean(p50s)
    return statistics.pstdev(p50s) / mean if mean > 0 else None


def aggregate(results: Sequence[Measurement]) -> Aggregate:
    """One arch's figures over its results (each result is a repetition)."""
    if not results:
        raise ValueError("an arch needs at least one result")
    p50s = [r.p50_ns / NS_PER_MS for r in results]
    pooled = [r for r in results if r.count and r.mean_ns is not None and r.std_ns is not None]
    mean_ms = std_ms = None
    if pooled:
        mean_ns, std_ns = pooled_mean_std(
            [r.count for r in pooled], [r.mean_ns for r in pooled], [r.std_ns for r in pooled]
        )
        mean_ms, std_ms = mean_ns / NS_PER_MS, std_ns / NS_PER_MS
    p90 = median(r.p90_ns for r in results)
    methods = sorted({r.energy_method for r in results if r.energy_method})
    counts = [r.count for r in results if r.count is not None]
    return Aggregate(
        latency_p50_ms=statistics.median(p50s),
        latency_p90_ms=None if p90 is None else p90 / NS_PER_MS,
        latency_mean_ms=mean_ms,
        latency_std_ms=std_ms,
        latency_rep_cv=rep_cv(p50s),
        energy_mj=median(r.energy_mj for r in results),
        energy_dyn_mj=median(r.energy_dyn_mj for r in results),
        power_mw=median(r.power_mw for r in results),
        energy_method="+".join(methods) if methods else None,
        n_runs=sum(counts) if counts else None,
        n_results=len(results),
    )


@dataclass(frozen=True)
class StoredResult:
    """A result that counts for a dataset, with what the store knows about its model."""

    key: DatasetKey
    arch: str
    index: int | None
    macs: int | None
    params: int | None
    job_id: str
    received_at: float
    campaign_id: str | None  # the campaign that accepted it as a measure job, if any
    figures: Measurement


def drift_flagged(
    device: str, campaign_ids: Iterable[str | None], flagged: Mapping[str, Set[str]]
) -> bool:
    """Whether any campaign the results were accepted in flagged their device (flagged:
    campaign id -> the devices its canaries flagged)."""
    return any(device in flagged.get(c, ()) for c in campaign_ids if c is not None)


def measured_rows(results: Iterable[StoredResult], flagged: Mapping[str, Set[str]]) -> list[Row]:
    """One row per (dataset, arch) over the results, in the order the arches first appear."""
    groups: dict[tuple[DatasetKey, str], list[StoredResult]] = {}
    for r in results:
        groups.setdefault((r.key, r.arch), []).append(r)
    rows = []
    for (key, arch), group in groups.items():
        # Models of one arch differ only in seed (weights) or resolution; the first says.
        first = group[0]
        index = next((r.index for r in group if r.index is not None), None)
        rows.append(
            Row(
                key,
                arch,
                index,
                aggregate([r.figures for r in group]),
                macs=first.macs,
                params=first.params,
                drift_flagged=drift_flagged(key.device, (r.campaign_id for r in group), flagged),
                origin=MEASURED,
                result_ids=[r.figures.result_id for r in group],
            )
        )
    return rows


def assemble(measured: Iterable[Row], imported: Iterable[Row]) -> list[Dataset]:
    """Datasets from measured and imported rows of any keys, sorted by id."""
    by_key: dict[DatasetKey, tuple[list[Row], list[Row]]] = {}
    for origin, rows in ((0, measured), (1, imported)):
        for r in rows:
            by_key.setdefault(r.key, ([], []))[origin].append(r)
    out = []
    for key, (mine, theirs) in by_key.items():
        rows, shadowed = merge(mine, theirs)
        out.append(Dataset(key, rows, shadowed))
    return sorted(out, key=lambda d: d.id)


def merge(measured: Iterable[Row], imported: Iterable[Row]) -> tuple[list[Row], int]:
    """One dataset's rows: every measured arch, plus the imported archs not measured (a
    measurement on our own farm is preferred over a number from elsewhere). Returns the rows
    sorted by index then arch, and how many imported rows were shadowed."""
    rows = {r.arch: r for r in measured}
    shadowed = 0
    for r in imported:
        if r.arch in rows:
            shadowed += 1
        else:
            rows[r.arch] = r
    return sorted(rows.values(), key=lambda r: arch_order(r.index, r.arch)), shadowed
