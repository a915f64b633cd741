"""Parse ``tegrastats`` output (JetPack 4 to 7) to cross-check our own INA3221 readings.

tegrastats is NVIDIA's one-line-per-interval status printer. Its rail pairs are
``<RAIL> <cur>/<avg>`` in mW, where ``avg`` is the mean since tegrastats started (not an EMA).
The formats differ by release:

- JP4 (L4T R32): ``VDD_IN 5297/5297`` (no unit), no timestamp; AGX Xavier uses bare
  ``GPU``/``CPU``/``SOC``/``CV``/``VDDRQ``/``SYS5V``; Nano uses ``POM_5V_*``.
- JP5/JP6 (R35/R36): ``VDD_IN 4824mW/4824mW`` and the line starts with ``MM-DD-YYYY HH:MM:SS``.
- JP7 (R39): three values, ``VDD_GPU_SOC 5139mW/5139mW/5139mW``. What the third one is has not
  been verified (likely the peak), so it is kept as the neutrally named ``extra_mw``.

Everything else on the line (RAM, CPU, GPU load, temperatures) is parsed when present; unknown
tokens are ignored and no input raises: a line we cannot read is a :class:`TegraLine` with no
rails. Total power follows the parent-rail rule of the power reference (§6): a parent rail is
never added to its own sub-rails.

Python 3.8 compatible, stdlib only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from power.boards import rail_policy

# re.ASCII: tegrastats prints ASCII, and without it \d would accept other scripts' digits.
_FLAGS = re.ASCII

# The reference's rail regex, ``\b([A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?``,
# with two changes:
# - the trailing lookahead rejects a match followed by a letter, digit or "/", so
#   "RAM 2305/7846MB", "SWAP 0/3923MB" and "IRAM 0/252kB" never count as rails (the digit in
#   the lookahead stops the engine from backtracking to "784" before "6MB");
# - numbers are at most 9 digits, so a runaway digit string is not matched at all rather than
#   handed to int() (which refuses > 4300 digits on recent Pythons).
RAIL_RE = re.compile(
    r"\b([A-Z0-9_]+) (\d{1,9})(?:mW)?/(\d{1,9})(?:mW)?(?:/(\d{1,9})(?:mW)?)?(?![A-Za-z0-9/])",
    _FLAGS,
)
# Names that look like rails in some format but are not: memory counters (caught by the
# lookahead already, listed again in case a release drops the unit) and clock fields.
NOT_RAILS = frozenset({"RAM", "SWAP", "IRAM", "LFB"})

# JP5+ lines start with the local time; JP4 lines have none.
TIMESTAMP_RE = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})(?!\d)", _FLAGS)
TIMESTAMP_FORMAT = "%m-%d-%Y %H:%M:%S"

RAM_RE = re.compile(r"\bRAM (\d{1,9})/(\d{1,9})MB", _FLAGS)
CPU_RE = re.compile(r"\bCPU \[([^\]]*)\]", _FLAGS)
CPU_CORE_RE = re.compile(r"^(\d{1,3})%(?:@(\d{1,9}))?$", _FLAGS)
# "GR3D_FREQ 0%@140" (JP4), "GR3D_FREQ 0%" (JP5+), "GR3D_FREQ 0%@[305,305]" (Orin, one clock
# per GPC) and "GR3D_FREQ @[1000,1000]" (Thor, no load at all).
GPU_RE = re.compile(r"\bGR3D_FREQ (?:(\d{1,3})%)?(?:@(\d{1,9}|\[[0-9,]*\]))?", _FLAGS)
# "CPU@41.5C", "tj@42.25C", "CV0@-256C", JP7's "cpu@52.9C/52.9C" (first value kept).
# The lookbehind keeps "MCPU@41C" from also yielding a "CPU" reading.
TEMP_RE = re.compile(
    r"(?<![A-Za-z0-9_])([A-Za-z][A-Za-z0-9_]*)@(-?\d{1,6}(?:\.\d{1,9})?)C(?![A-Za-z0-9_])",
    _FLAGS,
)


@dataclass(frozen=True)
class RailValue:
    """One rail on one line, in mW."""

    cur_mw: int  # instantaneous reading
    avg_mw: int  # tegrastats' mean since it started
    # JP7's third value; unverified (likely peak), so deliberately not called "peak".
    extra_mw: Optional[int] = None


@dataclass
class TegraLine:
    """Everything read from one tegrastats line; fields absent from the line stay None/empty."""

    raw: str
    timestamp: Optional[str] = None  # "MM-DD-YYYY HH:MM:SS" as printed (JP5+)
    timestamp_dt: Optional[datetime] = None  # the same, parsed; None if absent or invalid
    rails: Dict[str, RailValue] = field(default_factory=dict)
    ram_used_mb: Optional[int] = None
    ram_total_mb: Optional[int] = None
    # One entry per core, in order; None for a core shown as "off" (or unreadable).
    cpu_load_pct: List[Optional[int]] = field(default_factory=list)
    cpu_freq_mhz: List[Optional[int]] = field(default_factory=list)
    gpu_load_pct: Optional[int] = None
    # One clock per GPC: a single value on JP4, several on Orin ("@[305,305]"), none on JP5+
    # builds that print only the load.
    gpu_freq_mhz: List[int] = field(default_factory=list)
    # Sensor name as printed -> degrees C. Orin prints -256 for sensors that are powered off;
    # that is kept as printed, not interpreted.
    temps_c: Dict[str, float] = field(default_factory=dict)


class TegraLog(List[TegraLine]):
    """The lines of a tegrastats log that carried rails, plus how many non-blank ones did not."""

    skipped: int = 0


def parse_timestamp(line: str) -> Tuple[Optional[str], Optional[datetime]]:
    """The leading ``MM-DD-YYYY HH:MM:SS`` as printed and as a datetime (None where absent or
    not a real date, e.g. month 13)."""
    m = TIMESTAMP_RE.match(line)
    if not m:
        return None, None
    text = m.group(1)
    try:
        return text, datetime.strptime(text, TIMESTAMP_FORMAT)
    except ValueError:
        return text, None


def parse_rails(line: str) -> Dict[str, RailValue]:
    """Every ``<RAIL> <cur>/<avg>[/<extra>]`` pair on the line; a repeated name keeps its first."""
    rails: Dict[str, RailValue] = {}
    for m in RAIL_RE.finditer(line):
        name = m.group(1)
        if name in NOT_RAILS or name.endswith("_FREQ") or name in rails:
            continue
        extra = m.group(4)
        rails[name] = RailValue(
            cur_mw=int(m.group(2)),
            avg_mw=int(m.group(3)),
            extra_mw=int(extra) if extra is not None else None,
        )
    return rails


def parse_cpus(line: str) -> Tuple[List[Optional[int]], List[Optional[int]]]:
    """Per-core load (%) and clock (MHz) from ``CPU [12%@345,off,...]``; None for off cores."""
    m = CPU_RE.search(line)
    if not m:
        return [], []
    loads: List[Optional[int]] = []
    freqs: List[Optional[int]] = []
    for item in m.group(1).split(","):
        core = CPU_CORE_RE.match(item.strip())
        if core is None:  # "off", or something we do not know: no numbers rather than guesses
            loads.append(None)
            freqs.append(None)
            continue
        loads.append(int(core.group(1)))
        freqs.append(int(core.group(2)) if core.group(2) is not None else None)
    return loads, freqs


def parse_gpu(line: str) -> Tuple[Optional[int], List[int]]:
    """GPU load (%) and per-GPC clocks (MHz) from ``GR3D_FREQ``."""
    m = GPU_RE.search(line)
    if not m:
        return None, []
    load = int(m.group(1)) if m.group(1) is not None else None
    freq = m.group(2)
    if freq is None:
        return load, []
    if freq.startswith("["):
        return load, [int(f) for f in freq[1:-1].split(",") if f.isdigit() and len(f) <= 9]
    return load, [int(freq)]


def parse_temps(line: str) -> Dict[str, float]:
    """``NAME@<value>C`` temperatures; the first of a repeated name wins."""
    temps: Dict[str, float] = {}
    for m in TEMP_RE.finditer(line):
        temps.setdefault(m.group(1), float(m.group(2)))
    return temps


def parse_line(line: str) -> TegraLine:
    """One tegrastats line of any supported release. Never raises on text input."""
    timestamp, timestamp_dt = parse_timestamp(line)
    ram = RAM_RE.search(line)
    loads, freqs = parse_cpus(line)
    gpu_load, gpu_freqs = parse_gpu(line)
    return TegraLine(
        raw=line.rstrip("\r\n"),
        timestamp=timestamp,
        timestamp_dt=timestamp_dt,
        rails=parse_rails(line),
        ram_used_mb=int(ram.group(1)) if ram else None,
        ram_total_mb=int(ram.group(2)) if ram else None,
        cpu_load_pct=loads,
        cpu_freq_mhz=freqs,
        gpu_load_pct=gpu_load,
        gpu_freq_mhz=gpu_freqs,
        temps_c=parse_temps(line),
    )


def parse_lines(lines: Iterable[str]) -> TegraLog:
    """The lines that carry rails; blank lines are ignored, other rail-less lines counted in
    ``skipped`` (a truncated last line or a stray message in the log)."""
    log = TegraLog()
    for text in lines:
        if not text.strip():
            continue
        parsed = parse_line(text)
        if parsed.rails:
            log.append(parsed)
        else:
            log.skipped += 1
    return log


def parse_file(path: str) -> TegraLog:
    """A tegrastats ``--logfile``; see :func:`parse_lines`. Undecodable bytes are replaced,
    since a log cut off mid-write can end in anything."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_lines(f)


def total_rule(rail_names: Iterable[str]) -> Optional[Tuple[str, Tuple[str, ...]]]:
    """Which rails make up total power, as (label, rails), or None if no rule applies -- the same
    rule the sampler uses (:func:`power.boards.rail_policy`)."""
    policy = rail_policy(sorted(set(rail_names)))
    return ("+".join(policy.total), policy.total) if policy.total else None


def line_total_mw(line: TegraLine, rails: Sequence[str]) -> Optional[int]:
    """Sum of ``cur_mw`` over ``rails`` on one line, or None if any of them is missing there."""
    if not all(name in line.rails for name in rails):
        return None
    return sum(line.rails[name].cur_mw for name in rails)


def _mean(values: Sequence[int]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def summarize(lines: Sequence[TegraLine]) -> Dict[str, Any]:
    """Per-rail statistics of ``cur_mw`` and the mean total power under :func:`total_rule`.

    Returns ``{"lines", "skipped", "rails": {name: {"n", "mean_mw", "min_mw", "max_mw",
    "last_avg_mw"}}, "total_rail", "total_n", "total_mean_mw"}``. ``last_avg_mw`` is
    tegrastats' own running mean on the last line with that rail. The total is averaged over
    the lines that carry every rail of the rule; ``total_rail`` is None when no rule applies.
    """
    curs: Dict[str, List[int]] = {}
    last_avg: Dict[str, int] = {}
    for line in lines:
        for name, value in line.rails.items():
            curs.setdefault(name, []).append(value.cur_mw)
            last_avg[name] = value.avg_mw
    rails = {
        name: {
            "n": len(values),
            "mean_mw": _mean(values),
            "min_mw": min(values),
            "max_mw": max(values),
            "last_avg_mw": last_avg[name],
        }
        for name, values in curs.items()
    }
    rule = total_rule(curs)
    totals: List[int] = []
    if rule is not None:
        for line in lines:
            total = line_total_mw(line, rule[1])
            if total is not None:
                totals.append(total)
    return {
        "lines": len(lines),
        # Only a TegraLog knows how many lines it dropped.
        "skipped": lines.skipped if isinstance(lines, TegraLog) else 0,
        "rails": rails,
        "total_rail": rule[0] if rule is not None else None,
        "total_n": len(totals),
        "total_mean_mw": _mean(totals),
    }


def format_summary(summary: Dict[str, Any]) -> str:
    """A plain-text table of :func:`summarize`'s result, one rail per row, total last."""
    rails = summary["rails"]
    header = ("rail", "n", "mean mW", "min mW", "max mW", "tegrastats avg")
    rows = [
        (
            name,
            str(s["n"]),
            f"{s['mean_mw']:.1f}",
            str(s["min_mw"]),
            str(s["max_mw"]),
            str(s["last_avg_mw"]),
        )
        for name, s in rails.items()
    ]
    if summary["total_rail"] is not None and summary["total_mean_mw"] is not None:
        rows.append(
            (
                f"total ({summary['total_rail']})",
                str(summary["total_n"]),
                f"{summary['total_mean_mw']:.1f}",
                "",
                "",
                "",
            )
        )
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]

    def fmt(row: Tuple[str, ...]) -> str:
        # Rail names left-aligned, numbers right-aligned, like any numeric table.
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return "  ".join(cells).rstrip()

    out = [f"{summary['lines']} lines with rails, {summary['skipped']} skipped"]
    if not rows:
        out.append("no rail readings")
        return "\n".join(out)
    out.append(fmt(header))
    out.extend(fmt(row) for row in rows)
    if summary["total_rail"] is None:
        out.append("total: no rule for these rails (not summing sub-rails into a parent)")
    return "\n".join(out)
