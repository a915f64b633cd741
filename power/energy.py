"""Energy from power samples (power.md §10-11): pure functions over ``(t_ns, mW)`` series.

* :func:`trapezoid_mj` -- the trapezoid rule clipped to the window by linear interpolation at both
  ends, so samples just outside the window count only for the part inside;
* :func:`mean_power` -- the arithmetic mean of the samples strictly inside the window (MLPerf
  Power's rule); mean x duration is the cross-check, and a disagreement above 1 % is flagged;
* :func:`counter_mj` -- for cumulative energy counters, the counter interpolated at both ends;
* :func:`baseline` -- mean and standard deviation of idle power.

mW x s = mJ throughout.
"""

from __future__ import annotations

import bisect
import math
from typing import List, Optional, Sequence, Tuple

NS = 1e9
CHECK_TOLERANCE = 0.01


class NotEnoughSamples(ValueError):
    """The window has too few samples around it to integrate; the message says how many."""


def interpolate(t_ns: Sequence[int], values: Sequence[float], at: int) -> float:
    """The series' value at ``at`` by linear interpolation (held flat beyond its ends)."""
    i = bisect.bisect_left(t_ns, at)
    if i < len(t_ns) and t_ns[i] == at:
        return values[i]
    if i == 0:
        return values[0]
    if i == len(t_ns):
        return values[-1]
    t0, t1 = t_ns[i - 1], t_ns[i]
    return values[i - 1] + (values[i] - values[i - 1]) * (at - t0) / (t1 - t0)


def _clipped(
    t_ns: Sequence[int], values: Sequence[float], start: int, end: int
) -> Tuple[List[int], List[float]]:
    """The series restricted to [start, end], with interpolated points at both ends. The window
    must be covered: a sample at or before ``start`` and one at or after ``end``."""
    if end <= start:
        raise ValueError(f"empty window: end {end} <= start {start}")
    if len(t_ns) < 2 or t_ns[0] > start or t_ns[-1] < end:
        covered = f"{t_ns[0]}..{t_ns[-1]}" if t_ns else "nothing"
        raise NotEnoughSamples(
            f"the samples ({len(t_ns)}, covering {covered} ns) do not span the window "
            f"{start}..{end} ns"
        )
    lo = bisect.bisect_right(t_ns, start)
    hi = bisect.bisect_left(t_ns, end)
    times = [start] + list(t_ns[lo:hi]) + [end]
    vals = (
        [interpolate(t_ns, values, start)] + list(values[lo:hi]) + [interpolate(t_ns, values, end)]
    )
    return times, vals


def trapezoid_mj(t_ns: Sequence[int], mw: Sequence[float], start: int, end: int) -> float:
    """∫ P dt over [start, end] in mJ: ``Σ ½ (P_i + P_i+1)(t_i+1 − t_i)`` clipped to the window."""
    times, vals = _clipped(t_ns, mw, start, end)
    total = 0.0
    for i in range(len(times) - 1):
        total += 0.5 * (vals[i] + vals[i + 1]) * (times[i + 1] - times[i])
    return total / NS


def mean_power(
    t_ns: Sequence[int], mw: Sequence[float], start: int, end: int
) -> Tuple[Optional[float], int]:
    """(mean of the samples strictly inside the window, how many); (None, 0) if none."""
    lo = bisect.bisect_right(t_ns, start)
    hi = bisect.bisect_left(t_ns, end)
    inside = mw[lo:hi]
    return (sum(inside) / len(inside) if inside else None), len(inside)


def counter_mj(t_ns: Sequence[int], uj: Sequence[float], start: int, end: int) -> float:
    """Energy between ``start`` and ``end`` from a cumulative (wrap-corrected) µJ counter."""
    _clipped(t_ns, uj, start, end)  # the same coverage rule as the trapezoid
    return (interpolate(t_ns, uj, end) - interpolate(t_ns, uj, start)) / 1000.0


def baseline(
    t_ns: Sequence[int], mw: Sequence[float], start: int, end: int
) -> Tuple[Optional[float], Optional[float], int]:
    """(mean, sample standard deviation, count) of the samples inside the idle window."""
    lo = bisect.bisect_right(t_ns, start)
    hi = bisect.bisect_left(t_ns, end)
    inside = list(mw[lo:hi])
    if not inside:
        return None, None, 0
    mean = sum(inside) / len(inside)
    if len(inside) < 2:
        return mean, None, 1
    var = sum((x - mean) ** 2 for x in inside) / (len(inside) - 1)
    return mean, math.sqrt(var), len(inside)


def relative_difference(a: float, b: float) -> float:
    """|a − b| relative to their mean magnitude (0 when both are 0)."""
    scale = (abs(a) + abs(b)) / 2
    return abs(a - b) / scale if scale else 0.0


def cross_check(trapezoid: float, mean_mw: Optional[float], seconds: float) -> dict:
    """The trapezoid against mean x duration; ``flagged`` when they differ by more than 1 %."""
    if mean_mw is None:
        return {"mean_x_duration_mj": None, "relative_difference": None, "flagged": True}
    other = mean_mw * seconds
    diff = relative_difference(trapezoid, other)
    return {
        "mean_x_duration_mj": other,
        "relative_difference": diff,
        "flagged": diff > CHECK_TOLERANCE,
    }
