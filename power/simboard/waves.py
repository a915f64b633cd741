"""Waveforms: the time-varying power :func:`power.simboard.driver.drive` writes into a rail
(:class:`Constant`, :class:`Square`, :class:`FollowLoad`), their ``--wave`` spelling
(:func:`parse_wave`, :func:`wave_spec`) and the exact energy of a square wave
(:func:`square_energy_mj`)."""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Deque, Dict, List, Optional, Tuple, Union

# ---------------------------------------------------------------------------------------------
# Waveforms


@dataclass(frozen=True)
class Constant:
    mw: float

    def value(self, t_ns: int) -> float:
        return self.mw

    def next_change_ns(self, t_ns: int) -> Optional[int]:
        return None


@dataclass(frozen=True)
class Square:
    """``low_mw`` until the first rising edge at ``t0_ns`` (``time.monotonic_ns``; None = when
    the driver starts), then ``high_mw`` for ``duty`` of each period and ``low_mw`` for the
    rest."""

    low_mw: float
    high_mw: float
    period_s: float
    duty: float = 0.5
    t0_ns: Optional[int] = None

    def __post_init__(self) -> None:
        if not self.period_s > 0:
            raise ValueError(f"square period must be > 0 s, got {self.period_s!r}")
        if not 0 < self.duty < 1:
            raise ValueError(f"square duty must be strictly between 0 and 1, got {self.duty!r}")
        if not 0 < self.high_ns < self.period_ns:
            raise ValueError("square period too short for its duty: an edge would vanish")

    # Integer ns, shared by the driver and square_energy_mj so that both see the same edges.
    @property
    def period_ns(self) -> int:
        return int(round(self.period_s * 1e9))

    @property
    def high_ns(self) -> int:
        return int(round(self.duty * self.period_ns))

    def _t0(self) -> int:
        if self.t0_ns is None:
            raise ValueError("Square.t0_ns is not set (drive() sets it to its start time)")
        return self.t0_ns

    def value(self, t_ns: int) -> float:
        t0 = self._t0()
        if t_ns < t0:
            return self.low_mw
        phase = (t_ns - t0) % self.period_ns
        return self.high_mw if phase < self.high_ns else self.low_mw

    def next_change_ns(self, t_ns: int) -> Optional[int]:
        t0 = self._t0()
        if t_ns < t0:
            return t0
        phase = (t_ns - t0) % self.period_ns
        return t_ns - phase + (self.high_ns if phase < self.high_ns else self.period_ns)

    def edges_ns(self, t_start_ns: int, t_end_ns: int) -> List[int]:
        """Every edge (rising and falling) in [t_start_ns, t_end_ns)."""
        edges = []
        t = t_start_ns - 1
        while True:
            t = self.next_change_ns(t)  # type: ignore[assignment]
            if t >= t_end_ns:
                return edges
            edges.append(t)


@dataclass(frozen=True)
class FollowLoad:
    """``idle_mw + (busy_mw - idle_mw) x utilisation`` of process ``pid`` (and its descendants),
    utilisation in CPUs (2.0 = two cores busy), clamped to [0, os.cpu_count()].

    Utilisation is taken over the last ``window_s`` (at least one update interval): the kernel
    updates a running task's CPU time only at scheduler ticks (4 ms at HZ=250), so over a 1 ms
    interval a busy process reads 0 or 4 CPUs in turn. The window smooths that without
    changing the energy.
    """

    pid: int
    idle_mw: float
    busy_mw: float
    include_children: bool = True
    window_s: float = 0.02

    def __post_init__(self) -> None:
        if self.idle_mw < 0 or self.busy_mw < 0:
            raise ValueError("FollowLoad powers must be >= 0 mW")
        if self.window_s < 0:
            raise ValueError("FollowLoad window_s must be >= 0")


Wave = Union[Constant, Square, FollowLoad]


def _clock_ticks_ns() -> float:
    try:
        return 1e9 / os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 1e7


def _task_ns(task_dir: str, tick_ns: float) -> Optional[int]:
    """CPU ns of one task: schedstat's first field, else utime + stime from stat (kernels
    without schedstats print ``0 0 0`` or have no file)."""
    try:
        with open(os.path.join(task_dir, "schedstat"), "rb") as f:
            ns = int(f.read(128).split()[0])
        if ns:
            return ns
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(os.path.join(task_dir, "stat"), "rb") as f:
            fields = f.read(1024).rsplit(b")", 1)[1].split()
        return int((int(fields[11]) + int(fields[12])) * tick_ns)
    except (OSError, ValueError, IndexError):
        return None


class TreeCpu:
    """Cumulative CPU time (ns) of a process and optionally its descendants, from per-task
    ``/proc/<pid>/task/<tid>/schedstat``. Tasks that vanish keep what they had contributed;
    tasks that appear contribute everything they ran (they started since the last sample)."""

    def __init__(
        self,
        pid: int,
        include_children: bool = True,
        proc: str = "/proc",
        exclude: Optional[int] = None,
    ) -> None:
        self.pid = pid
        self.exclude = exclude
        self.include_children = include_children
        self.proc = proc
        self._last: Dict[int, int] = {}
        self._total = 0
        self._primed = False
        self._tick_ns = _clock_ticks_ns()
        me = os.getpid()
        self._children_files = os.path.exists(
            os.path.join(proc, str(me), "task", str(me), "children")
        )
        self._psutil_kids: List[int] = []
        self._psutil_at = 0

    def _descendants(self) -> List[int]:
        if not self._children_files:
            return self._descendants_psutil()
        found: List[int] = []
        stack = [self.pid]
        while stack:
            pid = stack.pop()
            try:
                tids = os.listdir(os.path.join(self.proc, str(pid), "task"))
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(os.path.join(self.proc, str(pid), "task", tid, "children")) as f:
                        kids = [int(k) for k in f.read().split()]
                except (OSError, ValueError):
                    continue
                found.extend(kids)
                stack.extend(kids)
        return found

    def _descendants_psutil(self) -> List[int]:
        # Kernels without /proc/.../children: psutil scans every process, too slow for each
        # millisecond, so the list is refreshed every 50 ms.
        now = time.monotonic_ns()
        if now - self._psutil_at >= 50_000_000:
            import psutil

            self._psutil_at = now
            try:
                kids = psutil.Process(self.pid).children(recursive=True)
                self._psutil_kids = [k.pid for k in kids]
            except psutil.Error:
                self._psutil_kids = []
        return self._psutil_kids

    def sample(self) -> int:
        pids = [self.pid] + (self._descendants() if self.include_children else [])
        current: Dict[int, int] = {}
        for pid in pids:
            if pid == self.exclude:
                continue
            task_root = os.path.join(self.proc, str(pid), "task")
            try:
                tids = os.listdir(task_root)
            except OSError:
                continue  # gone
            for tid in tids:
                ns = _task_ns(os.path.join(task_root, tid), self._tick_ns)
                if ns is not None and tid.isdigit():
                    current[int(tid)] = ns
        for tid, ns in current.items():
            prev = self._last.get(tid)
            if prev is None:
                if self._primed:
                    self._total += ns
            elif ns > prev:
                self._total += ns - prev
        self._last = current
        self._primed = True
        return self._total


class _LoadFollower:
    """A :class:`FollowLoad` being driven: utilisation over a trailing window."""

    def __init__(self, wave: FollowLoad, update_ns: int) -> None:
        self.wave = wave
        self.window_ns = max(int(wave.window_s * 1e9), update_ns)
        # The driver is often a child of the process it follows (a test or the demo starts it):
        # its own polling is the simulator's cost, not the board's load.
        self.meter = TreeCpu(wave.pid, wave.include_children, exclude=os.getpid())
        self.cpus = float(os.cpu_count() or 1)
        self.history: Deque[Tuple[int, int]] = deque()

    def value(self, t_ns: int) -> float:
        cpu = self.meter.sample()
        self.history.append((t_ns, cpu))
        # Keep as base the newest sample at least one window old.
        while len(self.history) > 2 and self.history[1][0] <= t_ns - self.window_ns:
            self.history.popleft()
        t0, cpu0 = self.history[0]
        util = (cpu - cpu0) / (t_ns - t0) if t_ns > t0 else 0.0
        util = min(max(util, 0.0), self.cpus)
        w = self.wave
        return max(0.0, w.idle_mw + (w.busy_mw - w.idle_mw) * util)

    def next_change_ns(self, t_ns: int) -> Optional[int]:
        return None


def _signal(wave: Wave, t_start_ns: int, update_ns: int) -> Any:
    if isinstance(wave, Square) and wave.t0_ns is None:
        return replace(wave, t0_ns=t_start_ns)
    if isinstance(wave, FollowLoad):
        return _LoadFollower(wave, update_ns)
    if isinstance(wave, (Constant, Square)):
        return wave
    raise ValueError(f"not a waveform: {wave!r} (use Constant, Square or FollowLoad)")


WAVE_GRAMMAR = (
    "RAIL=const:MW | RAIL=square:LOW:HIGH:PERIOD_S[:DUTY[:T0_NS]] | "
    "RAIL=follow:PID:IDLE:BUSY[:CHILDREN(1|0)[:WINDOW_S]]"
)


def parse_wave(spec: str) -> Tuple[str, Wave]:
    """``"VDD_IN=square:2000:5000:0.1"`` -> ("VDD_IN", Square(2000.0, 5000.0, 0.1))."""
    rail, sep, rest = spec.partition("=")
    parts = rest.split(":")
    try:
        if not sep or not rail:
            raise ValueError("no RAIL=")
        kind, args = parts[0], parts[1:]
        if kind == "const" and len(args) == 1:
            return rail, Constant(float(args[0]))
        if kind == "square" and 3 <= len(args) <= 5:
            duty = float(args[3]) if len(args) > 3 else 0.5
            t0 = int(args[4]) if len(args) > 4 else None
            return rail, Square(float(args[0]), float(args[1]), float(args[2]), duty, t0)
        if kind == "follow" and 3 <= len(args) <= 5:
            children = args[3] != "0" if len(args) > 3 else True
            window = float(args[4]) if len(args) > 4 else 0.02
            return rail, FollowLoad(int(args[0]), float(args[1]), float(args[2]), children, window)
    except ValueError as e:
        raise ValueError(f"bad wave {spec!r} ({e}); expected {WAVE_GRAMMAR}") from None
    raise ValueError(f"bad wave {spec!r}; expected {WAVE_GRAMMAR}")


def wave_spec(rail: str, wave: Wave) -> str:
    """The inverse of :func:`parse_wave`."""
    if isinstance(wave, Constant):
        return f"{rail}=const:{wave.mw!r}"
    if isinstance(wave, Square):
        spec = f"{rail}=square:{wave.low_mw!r}:{wave.high_mw!r}:{wave.period_s!r}:{wave.duty!r}"
        return spec if wave.t0_ns is None else f"{spec}:{wave.t0_ns}"
    if isinstance(wave, FollowLoad):
        return (
            f"{rail}=follow:{wave.pid}:{wave.idle_mw!r}:{wave.busy_mw!r}:"
            f"{int(wave.include_children)}:{wave.window_s!r}"
        )
    raise ValueError(f"not a waveform: {wave!r}")


# ---------------------------------------------------------------------------------------------
# Ground truth


def _high_ns(t_ns: int, t0_ns: int, period_ns: int, high_ns: int) -> int:
    """Time spent high between t0 and t (the wave is low before its first rising edge)."""
    if t_ns <= t0_ns:
        return 0
    cycles, phase = divmod(t_ns - t0_ns, period_ns)
    return cycles * high_ns + min(phase, high_ns)


def square_energy_mj(
    low: float,
    high: float,
    period_s: float,
    duty: float,
    t0_ns: int,
    t_start_ns: int,
    t_end_ns: int,
) -> float:
    """Exact energy (mJ = mW x s) of a square wave over [t_start_ns, t_end_ns]. Pass the
    quantised levels (:meth:`SimBoard.quantise`) to get what the files held."""
    if t_end_ns < t_start_ns:
        raise ValueError("t_end_ns is before t_start_ns")
    wave = Square(low, high, period_s, duty, t0_ns)
    p, h = wave.period_ns, wave.high_ns
    high_time = _high_ns(t_end_ns, t0_ns, p, h) - _high_ns(t_start_ns, t0_ns, p, h)
    return (low * (t_end_ns - t_start_ns) + (high - low) * high_time) / 1e9
