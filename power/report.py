"""The energy figure of one benchmark window, with everything needed to trust it (power.md §11).

:func:`energy_report` turns a sampler's :class:`~power.sampler.SampleLog`, the source, its
total-power rule, the idle window and the measured window into the ``energy`` object of a
benchmark result. Total power at a sample is the sum of the total rails at that sample; a sample
where one of them failed is left out of the total (and counted), never filled with zero.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from power import energy
from power.boards import RailPolicy
from power.sampler import SampleLog
from power.source import PowerSource

NS = 1e9


def _percentiles(values: Sequence[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]

    return {"p50": at(0.5), "p99": at(0.99), "max": ordered[-1]}


def total_series(log: SampleLog, rails: Sequence[str]) -> Tuple[List[int], List[float], int]:
    """(times, summed mW, samples left out because a total rail had no value)."""
    names = [r.name for r in log.rails]
    cols = [log.mw[names.index(r)] for r in rails]
    times: List[int] = []
    values: List[float] = []
    missing = 0
    for i, t in enumerate(log.t_ns):
        parts = [col[i] for col in cols]
        if any(p is None for p in parts):
            missing += 1
            continue
        times.append(t)
        values.append(sum(parts))  # type: ignore[arg-type]
    return times, values, missing


TRACE_POINTS = 400


def trace(
    times: Sequence[int], values: Sequence[float], start: int, end: int, points: int = TRACE_POINTS
) -> Dict[str, List[float]]:
    """Total power between start and end, as at most `points` (s since start, mW) pairs: the
    mean of each equal time bin, so a spike is flattened but never invented. For plots; the
    energy figures come from every sample, not from this."""
    span = max(end - start, 1)
    sums = [0.0] * points
    counts = [0] * points
    for t, v in zip(times, values):
        if start <= t <= end:
            i = min(points - 1, (t - start) * points // span)
            sums[i] += v
            counts[i] += 1
    t_s = [round((start + (i + 0.5) * span / points - start) / NS, 4)
           for i in range(points) if counts[i]]  # fmt: skip
    mw = [round(sums[i] / counts[i], 2) for i in range(points) if counts[i]]
    return {"t_s": t_s, "total_mw": mw}


def sampler_health(log: SampleLog, start: int, end: int) -> Dict[str, Any]:
    gaps = [(b - a) / 1e6 for a, b in zip(log.t_ns, log.t_ns[1:])]
    spans_us = [s / 1e3 for s in log.span_ns]
    half_period = log.period_ns / 2
    return {
        "period_ms": log.period_ns / 1e6,
        "n_samples": len(log.t_ns),
        "n_in_window": sum(1 for t in log.t_ns if start < t < end),
        "interval_ms": dict(_percentiles(gaps), mean=(sum(gaps) / len(gaps) if gaps else None)),
        "read_span_us": _percentiles(spans_us),
        # A read taking more than half a period cannot keep the rate: a blocking driver.
        "blocked_reads": sum(1 for s in log.span_ns if s > half_period),
        "dropped_periods": log.dropped,
        "cpus": log.cpus,
    }


def _rail_stats(log: SampleLog, start: int, end: int) -> Dict[str, Dict[str, Any]]:
    stats: Dict[str, Dict[str, Any]] = {}
    for rail in log.rails:
        times, values = log.series(rail.name)
        lo = [v for t, v in zip(times, values) if start < t < end]
        entry: Dict[str, Any] = {
            "where": rail.where,
            "n": len(lo),
            "mean_mw": sum(lo) / len(lo) if lo else None,
            "peak_mw": max(lo) if lo else None,
            "min_mw": min(lo) if lo else None,
        }
        try:
            if rail.kind == "energy":
                entry["energy_mj"] = energy.counter_mj(*log.counter(rail.name), start, end)
            else:
                entry["energy_mj"] = energy.trapezoid_mj(times, values, start, end)
        except energy.NotEnoughSamples:
            entry["energy_mj"] = None
        errors = log.errors.get(rail.name)
        if errors is not None:
            entry["errors"] = {"count": errors.count, "first": errors.first, "last": errors.last}
        stats[rail.name] = entry
    return stats


def energy_report(
    log: SampleLog,
    source: PowerSource,
    policy: RailPolicy,
    window: Tuple[int, int],
    inferences: int,
    idle: Optional[Tuple[int, int]] = None,
) -> Dict[str, Any]:
    """The ``energy`` object of a result. ``window`` and ``idle`` are monotonic_ns (start, end)."""
    start, end = window
    seconds = (end - start) / NS
    report: Dict[str, Any] = {
        "method": source.method,
        "source": source.describe(),
        "total": policy.as_dict(),
        "window": {
            "t_start_ns": start,
            "t_end_ns": end,
            "seconds": seconds,
            "inferences": inferences,
        },
        "rails": _rail_stats(log, start, end),
        "sampler": sampler_health(log, start, end),
    }
    if not policy.total:
        report["status"] = "no-total"
        report["reason"] = policy.rule
        return report

    counters = all(r.kind == "energy" for r in log.rails if r.name in policy.total)
    times, values, missing = total_series(log, policy.total)
    report["sampler"]["total_samples_missing"] = missing
    try:
        if counters:
            e_total = sum(energy.counter_mj(*log.counter(r), start, end) for r in policy.total)
            integration = "counter"
        else:
            e_total = energy.trapezoid_mj(times, values, start, end)
            integration = "trapezoid"
    except energy.NotEnoughSamples as exc:
        report["status"] = "insufficient-samples"
        report["reason"] = str(exc)
        return report

    # The trace starts with the idle baseline when there is one (t < 0 is idle).
    lead = idle[0] if idle is not None else start
    shown = trace(times, values, lead, end)
    shown["t_s"] = [round(t - (start - lead) / NS, 4) for t in shown["t_s"]]
    report["trace"] = shown
    p_mean, n_inside = energy.mean_power(times, values, start, end)
    report.update(
        status="ok",
        integration=integration,
        e_total_mj=e_total,
        e_per_inference_mj=e_total / inferences if inferences else None,
        p_mean_mw=e_total / seconds,
        p_sample_mean_mw=p_mean,
        p_peak_mw=max((v for t, v in zip(times, values) if start < t < end), default=None),
        integration_check=dict(energy.cross_check(e_total, p_mean, seconds), samples=n_inside),
    )
    if idle is not None:
        idle_mean, idle_std, idle_n = energy.baseline(times, values, idle[0], idle[1])
        report["idle"] = {
            "seconds": (idle[1] - idle[0]) / NS,
            "n_samples": idle_n,
            "p_mean_mw": idle_mean,
            "p_std_mw": idle_std,
        }
        if idle_mean is not None:
            e_dyn = e_total - idle_mean * seconds
            report["e_dynamic_mj"] = e_dyn
            report["e_dyn_per_inference_mj"] = e_dyn / inferences if inferences else None
    return report
