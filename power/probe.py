"""``halo-agent power probe``: every source, its rails with live readings, the total-power rule
and the sensor settings, sampled for a few seconds so slow or blocking reads show up."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from power.boards import read_model
from power.discover import PowerOptions, discover, is_simulated, policy_for
from power.errors import PowerError
from power.report import sampler_health
from power.sampler import DEFAULT_PERIOD_S, ThreadSampler
from power.source import PowerSource


def _mean(values: List[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def probe_source(
    source: PowerSource, options: PowerOptions, seconds: float, period_s: float
) -> Dict[str, Any]:
    info = source.describe()
    try:
        policy = policy_for(source, options)
        info["total"] = policy.as_dict()
    except PowerError as exc:
        policy = None
        info["total"] = {"error": str(exc)}
    first = source.read(full=True)
    log = None
    if seconds > 0:
        sampler = ThreadSampler(source, period_s).start()
        time.sleep(seconds)
        log = sampler.stop()
    rails = []
    for k, rail in enumerate(source.rails):
        entry: Dict[str, Any] = {
            "rail": rail.name,
            "where": rail.where,
            "kind": rail.kind,
            "mw": first.mw[k],
            "mv": first.mv[k] if first.mv else None,
            "ma": first.ma[k] if first.ma else None,
        }
        if rail.name in first.errors:
            entry["error"] = first.errors[rail.name]
        if log is not None:
            _, values = log.series(rail.name)
            entry.update(
                n=len(values),
                mean_mw=_mean(values),
                min_mw=min(values, default=None),
                max_mw=max(values, default=None),
            )
            errors = log.errors.get(rail.name)
            if errors is not None:
                entry["errors"] = errors.count
        rails.append(entry)
    info["rails"] = rails
    if policy is not None and policy.total:
        now = [r["mw"] for r in rails if r["rail"] in policy.total]
        info["total_mw"] = sum(now) if all(v is not None for v in now) else None
    if log is not None and log.t_ns:
        info["sampler"] = sampler_health(log, log.t_ns[0], log.t_ns[-1])
    return info


def probe(
    options: Optional[PowerOptions] = None,
    seconds: float = 1.0,
    period_s: float = DEFAULT_PERIOD_S,
) -> Dict[str, Any]:
    options = options or PowerOptions()
    result: Dict[str, Any] = {
        "sysfs_root": options.sysfs_root,
        "board_model": read_model(options.sysfs_root),
        "simulated": is_simulated(options.sysfs_root),
        "sources": [],
    }
    for source in discover(options):
        with source:
            result["sources"].append(probe_source(source, options, seconds, period_s))
    return result


def _fmt(value: Optional[float], digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_probe(result: Dict[str, Any]) -> str:
    """A plain-text report of :func:`probe`."""
    lines = [
        f"board: {result['board_model'] or 'unknown'}"
        + ("  (simulated tree)" if result["simulated"] else ""),
        f"sysfs root: {result['sysfs_root']}",
    ]
    if not result["sources"]:
        lines.append("no power sources found")
    for src in result["sources"]:
        lines.append("")
        tau = src.get("tau_s")
        lines.append(
            f"source {src['name']} ({src['kind']}, {src['method']})"
            + (f", sensor time constant {tau:g} s" if tau else "")
        )
        total = src["total"]
        if "error" in total:
            lines.append(f"  total: error: {total['error']}")
        else:
            shown = " + ".join(total["rails"]) or "none"
            mw = src.get("total_mw")
            lines.append(
                f"  total: {shown} = {_fmt(mw)} mW  [{total['rule']}]"
                if mw is not None
                else f"  total: {shown}  [{total['rule']}]"
            )
        header = ["rail", "where", "mV", "mA", "mW", "mean mW", "min", "max", "n"]
        rows = [header]
        for r in src["rails"]:
            rows.append(
                [
                    r["rail"],
                    r["where"],
                    _fmt(r["mv"]),
                    _fmt(r["ma"]),
                    _fmt(r["mw"], 1) if "error" not in r else "error",
                    _fmt(r.get("mean_mw"), 1),
                    _fmt(r.get("min_mw"), 1),
                    _fmt(r.get("max_mw"), 1),
                    str(r.get("n", "-")),
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)).rstrip())
        for r in src["rails"]:
            if "error" in r:
                lines.append(f"  {r['rail']}: {r['error']}")
        settings = {
            k: v
            for k, v in src.items()
            if k not in ("rails", "total", "total_mw", "sampler", "name", "kind", "method")
        }
        lines.append(f"  sensor: {settings}")
        if "sampler" in src:
            s = src["sampler"]
            lines.append(
                "  sampler: {} samples, interval p50 {} ms, read p50/max {}/{} us, "
                "{} blocked, {} dropped".format(
                    s["n_samples"],
                    _fmt(s["interval_ms"]["p50"], 2),
                    _fmt(s["read_span_us"]["p50"]),
                    _fmt(s["read_span_us"]["max"]),
                    s["blocked_reads"],
                    s["dropped_periods"],
                )
            )
    return "\n".join(lines)
