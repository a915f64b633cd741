"""A labelled model estimate of board power from CPU load, for boards without a power sensor.

P = idle_mw + (busy_mw - idle_mw) * u, where u in [0, 1] is the CPU utilisation since the
previous read, from ``psutil.cpu_times()`` deltas (busy = total - idle - iowait). ``idle_mw`` and
``busy_mw`` come from the configuration: measured once with an external meter, or taken from a
datasheet. The figures are ``method = "model"`` and travel with that tag; they say nothing about
the GPU, accelerators or memory, and are no substitute for a measurement.

By default u is the whole system's busy share of CPU time. With ``cpus`` (the number of CPUs
``busy_mw`` was measured with, all busy) u is busy CPU-seconds / (cpus x wall seconds): a CPU
that is hot-plugged off (nvpmodel modes on Jetsons) then counts as idle instead of vanishing
from the denominator.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional, Tuple

import psutil

from power.source import PowerSource, Rail, Reading

FORMULA = "P = idle_mw + (busy_mw - idle_mw) * u"


def busy_total(times: Any) -> Tuple[float, float]:
    """(busy, total) CPU-seconds from a ``psutil.cpu_times()`` tuple.

    On Linux ``guest``/``guest_nice`` are already inside ``user``/``nice`` and are left out of
    the total (as psutil's own ``cpu_percent`` does); ``iowait`` is waiting, not work.
    """
    fields = times._asdict()
    total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
    idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    return total - idle, total


def utilisation(
    busy_s: float, total_s: float, cpus: Optional[int] = None, wall_s: float = 0.0
) -> Optional[float]:
    """u in [0, 1] from CPU-second deltas, or None when no CPU time was accounted yet
    (``/proc/stat`` moves in 10 ms ticks)."""
    if cpus is None:
        if total_s <= 0:
            return None
        u = busy_s / total_s
    else:
        if wall_s <= 0 or total_s <= 0:
            return None
        u = busy_s / (cpus * wall_s)
    return min(1.0, max(0.0, u))


def model_mw(idle_mw: float, busy_mw: float, u: float) -> float:
    return idle_mw + (busy_mw - idle_mw) * u


def _number(value: Any, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of mW, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{what} must be a finite number of mW, got {value!r}")
    return x


class EstimateSource(PowerSource):
    """One rail, ``EST_TOTAL`` by default: the linear CPU-load model."""

    kind = "estimate"
    name = "estimate"
    method = "model"
    tau_s = 0.0

    def __init__(
        self,
        idle_mw: float,
        busy_mw: float,
        cpus: Optional[int] = None,
        rail: str = "EST_TOTAL",
    ) -> None:
        idle = _number(idle_mw, "idle_mw")
        busy = _number(busy_mw, "busy_mw")
        if idle < 0:
            raise ValueError(f"idle_mw must be >= 0 (the board's idle power in mW), got {idle:g}")
        if busy < idle:
            raise ValueError(
                f"busy_mw ({busy:g}) must be >= idle_mw ({idle:g}): give the power with all "
                "CPUs busy as busy_mw and the idle power as idle_mw"
            )
        if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1):
            raise ValueError(
                f"cpus must be a whole number >= 1 (the CPUs busy_mw was measured with) or "
                f"None for the whole system's busy share, got {cpus!r}"
            )
        if not rail:
            raise ValueError("rail must be a non-empty rail name, e.g. 'EST_TOTAL'")
        self.idle_mw = idle
        self.busy_mw = busy
        self.cpus = cpus
        self.rails = [Rail(rail, "psutil.cpu_times", "power")]
        self._prev: Optional[Tuple[float, float, int]] = None  # busy s, total s, monotonic ns
        self._last_mw: Optional[float] = None

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d.update(
            {
                "method": "model",
                "model": "linear in CPU utilisation",
                "formula": FORMULA,
                "idle_mw": self.idle_mw,
                "busy_mw": self.busy_mw,
                "cpus": self.cpus,
                "utilisation": (
                    "busy/total CPU time since the previous read (busy = total - idle - iowait)"
                    if self.cpus is None
                    else f"busy CPU time / ({self.cpus} x wall time) since the previous read"
                ),
                "rail": self.rails[0].name,
            }
        )
        return d

    def _read_rails(self, full: bool) -> Reading:
        busy, total = busy_total(psutil.cpu_times())
        now = time.monotonic_ns()
        if self._prev is None:
            # No interval yet: like a counter's first read, no value and no error.
            self._prev = (busy, total, now)
            return Reading(0, 0, [None])
        busy0, total0, t0 = self._prev
        u = utilisation(busy - busy0, total - total0, self.cpus, (now - t0) / 1e9)
        if u is not None:
            self._prev = (busy, total, now)
            self._last_mw = model_mw(self.idle_mw, self.busy_mw, u)
        # else: read again within one /proc/stat tick: repeat the last value and keep the
        # baseline, so the next interval covers this one too.
        return Reading(0, 0, [self._last_mw])


def discover(sysfs_root: str = "/", **options: Any) -> List[PowerSource]:
    """The estimate, when the configuration gives both ``idle_mw`` and ``busy_mw`` (and
    optionally ``cpus``, ``rail``); [] when it gives neither. Other options are ignored."""
    idle, busy = options.get("idle_mw"), options.get("busy_mw")
    if idle is None and busy is None:
        return []
    if idle is None or busy is None:
        missing = "idle_mw" if idle is None else "busy_mw"
        raise ValueError(f"the power estimate needs both idle_mw and busy_mw; give {missing} too")
    kwargs: Dict[str, Any] = {}
    if options.get("cpus") is not None:
        kwargs["cpus"] = options["cpus"]
    if options.get("rail"):
        kwargs["rail"] = options["rail"]
    return [EstimateSource(idle, busy, **kwargs)]
