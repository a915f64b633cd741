"""The sampler: reads one power source at a fixed period beside a running benchmark.

Each tick reads every rail once (kept-open files, ``pread``), stamps the reading at the midpoint
of the read on ``time.monotonic_ns`` and keeps how long the read took, so a driver that blocks
until its next conversion shows up as long spans. Ticks are scheduled on absolute deadlines; a
tick that comes too late skips the periods it missed and counts them as dropped rather than
bunching samples together.

Two hosts for the same loop: :class:`ThreadSampler` (a thread in the calling process) and
:class:`ProcessSampler` (its own process, which opens the source itself). ``benchmarks/
power_sampler.py`` measures which disturbs a benchmark less.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from power.source import PowerSource, Rail, Reading

DEFAULT_PERIOD_S = 0.010
# SampleLog.errors key for whole reads that raised.
SOURCE_ERRORS = "(source)"


@dataclass
class RailErrors:
    count: int = 0
    first: str = ""
    last: str = ""


@dataclass
class SampleLog:
    """Everything a sampler saw, column-wise: ``mw[k][i]`` is rail k at sample i."""

    rails: List[Rail]
    period_ns: int
    t_ns: List[int] = field(default_factory=list)
    span_ns: List[int] = field(default_factory=list)
    mw: List[List[Optional[float]]] = field(default_factory=list)
    uj: List[List[Optional[float]]] = field(default_factory=list)
    errors: Dict[str, RailErrors] = field(default_factory=dict)
    dropped: int = 0
    cpus: Optional[List[int]] = None  # where the sampler ran, when it moved off the benchmark's

    def __post_init__(self) -> None:
        if not self.mw:
            self.mw = [[] for _ in self.rails]
            self.uj = [[] for _ in self.rails]

    def add(self, reading: Reading) -> None:
        self.t_ns.append(reading.t_ns)
        self.span_ns.append(reading.span_ns)
        for k, value in enumerate(reading.mw):
            self.mw[k].append(value)
            self.uj[k].append(reading.uj[k] if reading.uj is not None else None)
        for rail, reason in reading.errors.items():
            errors = self.errors.setdefault(rail, RailErrors())
            errors.count += 1
            errors.first = errors.first or reason
            errors.last = reason

    def series(self, rail: str) -> Tuple[List[int], List[float]]:
        """(times, mW) of one rail, leaving out the samples where it had no value."""
        k = [r.name for r in self.rails].index(rail)
        pairs = [(t, v) for t, v in zip(self.t_ns, self.mw[k]) if v is not None]
        return [t for t, _ in pairs], [v for _, v in pairs]

    def counter(self, rail: str) -> Tuple[List[int], List[float]]:
        """(times, cumulative µJ) of a counter rail."""
        k = [r.name for r in self.rails].index(rail)
        pairs = [(t, v) for t, v in zip(self.t_ns, self.uj[k]) if v is not None]
        return [t for t, _ in pairs], [v for _, v in pairs]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "rails": [(r.name, r.where, r.kind) for r in self.rails],
            "period_ns": self.period_ns,
            "t_ns": self.t_ns,
            "span_ns": self.span_ns,
            "mw": self.mw,
            "uj": self.uj,
            "errors": {k: (e.count, e.first, e.last) for k, e in self.errors.items()},
            "dropped": self.dropped,
            "cpus": self.cpus,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> SampleLog:
        log = cls(
            [Rail(*r) for r in data["rails"]],
            data["period_ns"],
            data["t_ns"],
            data["span_ns"],
            data["mw"],
            data["uj"],
            {k: RailErrors(*v) for k, v in data["errors"].items()},
            data["dropped"],
            data["cpus"],
        )
        return log


def move_off(avoid: Optional[Iterable[int]]) -> Optional[List[int]]:
    """Pin the calling thread (Linux: per thread) to the allowed CPUs outside ``avoid`` -- the
    benchmark's -- so sampling does not preempt it (power.md §7). None if nothing changed."""
    if not avoid:
        return None
    allowed = os.sched_getaffinity(0) - set(avoid)
    if not allowed:
        return None
    os.sched_setaffinity(0, allowed)
    return sorted(allowed)


def run_loop(
    source: PowerSource, period_ns: int, log: SampleLog, stop: Callable[[float], bool]
) -> None:
    """Sample until ``stop(timeout_s)`` -- which waits up to timeout_s -- returns True.

    A source that raises (a bug, not a rail problem: those are per-rail errors) costs that
    sample, counted under :data:`SOURCE_ERRORS`; the loop goes on."""
    deadline = time.monotonic_ns()
    while True:
        try:
            log.add(source.read())
        except Exception as exc:
            errors = log.errors.setdefault(SOURCE_ERRORS, RailErrors())
            errors.count += 1
            errors.first = errors.first or f"{type(exc).__name__}: {exc}"
            errors.last = f"{type(exc).__name__}: {exc}"
        deadline += period_ns
        now = time.monotonic_ns()
        if now >= deadline:
            missed = (now - deadline) // period_ns + 1
            log.dropped += missed
            deadline += missed * period_ns
        if stop((deadline - now) / 1e9):
            return


class ThreadSampler:
    """Samples ``source`` in a daemon thread of this process between start() and stop()."""

    def __init__(
        self,
        source: PowerSource,
        period_s: float = DEFAULT_PERIOD_S,
        avoid_cpus: Optional[Iterable[int]] = None,
    ) -> None:
        if not 0.0005 <= period_s <= 10.0:
            raise ValueError(f"sampling period must be 0.5 ms .. 10 s, got {period_s * 1e3:g} ms")
        self.source = source
        self.log = SampleLog(list(source.rails), int(period_s * 1e9))
        self._avoid = list(avoid_cpus or [])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="halo-power", daemon=True)

    def _run(self) -> None:
        self.log.cpus = move_off(self._avoid)
        run_loop(self.source, self.log.period_ns, self.log, self._stop.wait)

    def start(self) -> ThreadSampler:
        self._thread.start()
        return self

    def stop(self) -> SampleLog:
        self._stop.set()
        self._thread.join()
        return self.log


def _child(
    conn: Any,
    opener: Callable[..., PowerSource],
    args: tuple,
    period_ns: int,
    avoid: List[int],
) -> None:
    cpus = move_off(avoid)
    try:
        source = opener(*args)
    except Exception as exc:  # the parent reports it; a sampler never takes a job down
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    with source:
        log = SampleLog(list(source.rails), period_ns, cpus=cpus)
        conn.send(("started", None))
        run_loop(source, period_ns, log, conn.poll)
        conn.send(("log", log.to_dict()))


class ProcessSampler:
    """The same loop in its own (spawned) process, which opens its own source by calling
    ``opener(*args)`` -- open file descriptors do not travel between processes."""

    def __init__(
        self,
        opener: Callable[..., PowerSource],
        args: tuple,
        period_s: float = DEFAULT_PERIOD_S,
        avoid_cpus: Optional[Iterable[int]] = None,
    ) -> None:
        self.period_ns = int(period_s * 1e9)
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child,
            args=(child_conn, opener, args, self.period_ns, list(avoid_cpus or [])),
            name="halo-power",
            daemon=True,
        )
        self._child_conn = child_conn

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid

    def start(self, timeout_s: float = 30.0) -> ProcessSampler:
        self._proc.start()
        self._child_conn.close()
        if not self._conn.poll(timeout_s):
            self._proc.kill()
            raise RuntimeError("power sampler process did not start")
        kind, detail = self._conn.recv()
        if kind != "started":
            self._proc.join()
            raise RuntimeError(f"power sampler process failed: {detail}")
        return self

    def stop(self, timeout_s: float = 30.0) -> SampleLog:
        self._conn.send("stop")
        try:
            if not self._conn.poll(timeout_s):
                raise RuntimeError("power sampler process did not answer")
            kind, data = self._conn.recv()
            return SampleLog.from_dict(data)
        finally:
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
            self._conn.close()
