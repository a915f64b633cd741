"""What a fake meter measures: a supply current over time, known exactly.

Every profile gives the **charge** drawn since its time zero, ``charge(t)`` in ampere-seconds,
vectorised over numpy arrays. A meter fake turns it into what its hardware would report: the
mean current of each sample bin (``(Q(t1) - Q(t0)) / (t1 - t0)``, what an averaging ADC sees) or
the energy of each bin (LPM01A energy mode). Tests compare a driver's integral with
``V * (Q(t1) - Q(t0))``: the truth, with no sampling in it.

:class:`Board` is the profile of a fake DUT: the DUT fake marks when it computes (more current)
and pulses its timestamp GPIO (energy mode), and every meter fake attached to the same board
name sees both. Boards are shared by name within the process (``?board=b1`` on the URLs).
"""

from __future__ import annotations

import bisect
import threading
import time
from typing import Dict, List, Optional

import numpy as np

PULSE_S = 0.001  # timestamp pulse width: EEMBC asks >= 1 us; a few ms are common in practice
# Meter fakes render samples this far behind real time, so that a DUT fake descheduled between
# reading the clock and marking the board still lands its edge before any meter renders that
# instant (a real meter's USB latency is of this order too).
RENDER_LAG_S = 0.05


class Profile:
    """Base: constant ``ma`` milliamperes; GPIO always high (idle)."""

    def __init__(self, ma: float = 5.0) -> None:
        self.ma = float(ma)

    def charge(self, t: np.ndarray) -> np.ndarray:
        return np.asarray(t, dtype=np.float64) * (self.ma / 1000.0)

    def gpio(self, t: np.ndarray) -> np.ndarray:
        """Timestamp line level (1 = high/idle, 0 = pulse) at times ``t``."""
        return np.ones(np.shape(t), dtype=np.uint8)

    def edges(self, t0: float, t1: float) -> List[float]:
        """Falling edges of the timestamp line in [t0, t1)."""
        return []

    def describe(self) -> str:
        return f"constant {self.ma:g} mA"


class SquareProfile(Profile):
    """``hi_ma`` for ``duty`` of every ``period_s``, ``lo_ma`` for the rest (starting high)."""

    def __init__(
        self, lo_ma: float = 1.0, hi_ma: float = 10.0, period_s: float = 0.02, duty: float = 0.5
    ) -> None:
        super().__init__(lo_ma)
        if not 0 < duty < 1 or period_s <= 0:
            raise ValueError("square profile needs 0 < duty < 1 and period_s > 0")
        self.lo = lo_ma / 1000.0
        self.hi = hi_ma / 1000.0
        self.period = float(period_s)
        self.duty = float(duty)

    def charge(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        whole = np.floor(t / self.period)
        phase = t - whole * self.period
        high = self.duty * self.period
        per_period = self.hi * high + self.lo * (self.period - high)
        part = self.hi * np.minimum(phase, high) + self.lo * np.maximum(phase - high, 0.0)
        return whole * per_period + part

    def describe(self) -> str:
        return (
            f"square {self.lo * 1e3:g}/{self.hi * 1e3:g} mA, period {self.period * 1e3:g} ms, "
            f"duty {self.duty:g}"
        )


class Board(Profile):
    """A fake DUT's supply: ``idle_ma`` plus ``active_ma - idle_ma`` while it computes, and its
    timestamp GPIO. Times are ``time.monotonic()`` seconds relative to the board's creation."""

    def __init__(self, idle_ma: float = 2.0, active_ma: float = 12.0) -> None:
        super().__init__(idle_ma)
        self.idle = idle_ma / 1000.0
        self.extra = (active_ma - idle_ma) / 1000.0
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self._starts: List[float] = []
        self._ends: List[float] = []
        self._busy_before: List[float] = [0.0]  # cumulative busy seconds before interval i
        self._pulses: List[float] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def busy(self, start: float, end: float) -> None:
        """The DUT computes during [start, end] (board seconds); intervals come in order."""
        with self._lock:
            if self._ends and start < self._ends[-1]:
                start = self._ends[-1]
            if end <= start:
                return
            self._starts.append(start)
            self._ends.append(end)
            self._busy_before.append(self._busy_before[-1] + end - start)

    def cut(self, at: float) -> None:
        """The DUT stopped computing at ``at`` (reset, unplug): shorten the last interval and
        forget pulses it had planned after ``at``."""
        with self._lock:
            while self._pulses and self._pulses[-1] > at:
                self._pulses.pop()
            if self._ends and self._ends[-1] > at:
                start = self._starts[-1]
                end = max(start, at)
                self._busy_before[-1] = self._busy_before[-2] + end - start
                self._ends[-1] = end

    def pulse(self, at: float) -> None:
        with self._lock:
            bisect.insort(self._pulses, at)

    def busy_seconds(self, t: np.ndarray) -> np.ndarray:
        """Seconds spent computing in [0, t]."""
        t = np.asarray(t, dtype=np.float64)
        with self._lock:
            starts = np.asarray(self._starts)
            ends = np.asarray(self._ends)
            before = np.asarray(self._busy_before)
        if starts.size == 0:
            return np.zeros_like(t)
        i = np.searchsorted(starts, t, side="right")  # intervals started by t
        prev = np.maximum(i - 1, 0)
        inside = np.clip(t - starts[prev], 0.0, ends[prev] - starts[prev])
        return np.where(i > 0, before[prev] + inside, 0.0)

    def charge(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return self.idle * t + self.extra * self.busy_seconds(t)

    def gpio(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        with self._lock:
            pulses = np.asarray(self._pulses)
        if pulses.size == 0:
            return np.ones(t.shape, dtype=np.uint8)
        i = np.searchsorted(pulses, t, side="right") - 1
        low = (i >= 0) & (t - pulses[np.maximum(i, 0)] < PULSE_S)
        return np.where(low, 0, 1).astype(np.uint8)

    def edges(self, t0: float, t1: float) -> List[float]:
        with self._lock:
            lo = bisect.bisect_left(self._pulses, t0)
            hi = bisect.bisect_left(self._pulses, t1)
            return list(self._pulses[lo:hi])

    def describe(self) -> str:
        busy = (self.idle + self.extra) * 1e3
        return f"fake DUT board: idle {self.idle * 1e3:g} mA, computing {busy:g} mA"


class Shifted(Profile):
    """``profile`` seen from a meter whose time zero is ``offset`` s into the profile."""

    def __init__(self, profile: Profile, offset: float) -> None:
        super().__init__(0.0)
        self.inner = profile
        self.offset = offset

    def charge(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64) + self.offset
        return self.inner.charge(t) - self.inner.charge(np.asarray(self.offset))

    def gpio(self, t: np.ndarray) -> np.ndarray:
        return self.inner.gpio(np.asarray(t, dtype=np.float64) + self.offset)

    def edges(self, t0: float, t1: float) -> List[float]:
        return [e - self.offset for e in self.inner.edges(t0 + self.offset, t1 + self.offset)]

    def describe(self) -> str:
        return self.inner.describe()


_boards: Dict[str, Board] = {}
_boards_lock = threading.Lock()


def board(name: str, idle_ma: float = 2.0, active_ma: float = 12.0) -> Board:
    """The board called ``name`` in this process, created on first use."""
    with _boards_lock:
        b = _boards.get(name)
        if b is None:
            b = _boards[name] = Board(idle_ma, active_ma)
        return b


def forget_board(name: str) -> None:
    with _boards_lock:
        _boards.pop(name, None)


def from_params(params: Dict[str, str]) -> Profile:
    """A profile from URL parameters: ``board=NAME`` (a fake DUT's), ``profile=square``
    (``lo_ma``, ``hi_ma``, ``period_ms``, ``duty``) or ``profile=const`` (``ma``)."""
    name: Optional[str] = params.pop("board", None)
    kind = params.pop("profile", "board" if name else "const")
    if kind == "board" or name:
        return board(name or "default")
    if kind == "square":
        return SquareProfile(
            float(params.pop("lo_ma", 1.0)),
            float(params.pop("hi_ma", 10.0)),
            float(params.pop("period_ms", 20.0)) / 1000.0,
            float(params.pop("duty", 0.5)),
        )
    if kind == "const":
        return Profile(float(params.pop("ma", 5.0)))
    raise ValueError(f"unknown profile {kind!r}: use const, square or board=NAME")
