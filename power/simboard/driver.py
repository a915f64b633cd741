"""Driving: writing waves into a board over time, and the log of what was written.

Time-varying power (:class:`Constant`, :class:`Square`, :class:`FollowLoad`) is written by
:func:`drive`, normally in its own process (:class:`Driver`, or ``python -m power.simboard
drive``) so that the reader's GIL cannot shift the writer's edges. The driver logs every value
change; :func:`log_energy_mj` integrates that log and :func:`square_energy_mj` a square wave
analytically: the energy that was really in the files, for tests to compare readers against.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

from power.simboard.board import SimBoard, _Channel, open_board
from power.simboard.errors import SimBoardError
from power.simboard.files import quantise
from power.simboard.layouts import channel_names, get_layout
from power.simboard.waves import Wave, _LoadFollower, _signal, wave_spec

DEFAULT_LOG = ".halofarm-simboard.log"

LOG_FLUSH_NS = 100_000_000
REFRESH_NS = 100_000_000


class DriverError(SimBoardError):
    """The driver process did not start, or exited with an error."""


# ---------------------------------------------------------------------------------------------
# Ground truth

# One drive-log record: monotonic ns just after the write, channel index (channel_names
# order), the power now in the files (mW).
RECORD = struct.Struct("<qId")


class Record(NamedTuple):
    t_ns: int
    rail: str
    mw: float


def parse_log(data: bytes, layout: str) -> List[Record]:
    names = channel_names(layout)
    whole = len(data) - len(data) % RECORD.size  # a torn last record (killed writer) is dropped
    return [
        Record(t, names[i] if i < len(names) else f"#{i}", mw)
        for t, i, mw in RECORD.iter_unpack(data[:whole])
    ]


def read_log(path: str, layout: str) -> List[Record]:
    with open(path, "rb") as f:
        return parse_log(f.read(), layout)


def log_energy_mj(records: Iterable[Record], rail: str, t_start_ns: int, t_end_ns: int) -> float:
    """Energy (mJ) of the piecewise-constant values logged for ``rail`` over the window; the
    last value holds after the last record (the files keep it)."""
    if t_end_ns < t_start_ns:
        raise ValueError("t_end_ns is before t_start_ns")
    points = sorted((r for r in records if r.rail == rail), key=lambda r: r.t_ns)
    if not points:
        raise ValueError(f"no records for rail {rail!r}; was it driven?")
    if t_start_ns < points[0].t_ns:
        raise ValueError(
            f"the window starts {(points[0].t_ns - t_start_ns) / 1e6:.3f} ms before the first "
            f"logged value of {rail!r}; start it at or after t={points[0].t_ns}"
        )
    total = 0.0
    for i, rec in enumerate(points):
        seg_end = points[i + 1].t_ns if i + 1 < len(points) else t_end_ns
        lo, hi = max(rec.t_ns, t_start_ns), min(seg_end, t_end_ns)
        if hi > lo:
            total += rec.mw * (hi - lo)
    return total / 1e9


# ---------------------------------------------------------------------------------------------
# Driving


def drive(
    root: str,
    layout: str,
    waves: Dict[str, Wave],
    update_s: float = 0.001,
    log_path: Optional[str] = None,
    stop_after_s: Optional[float] = None,
    stop: Optional[threading.Event] = None,
    on_ready: Optional[Callable[[int], None]] = None,
) -> None:
    """Write ``waves`` into the board under ``root`` (created if absent) until ``stop`` is set
    or ``stop_after_s`` has passed.

    Waves that need polling (:class:`FollowLoad`) are sampled every ``update_s``; square edges
    are written at their own deadline, not the next tick. Sleeps go to absolute deadlines on
    ``time.monotonic_ns``. Each change of a rail's power is appended to ``log_path`` as a
    :data:`RECORD`, flushed at least every 0.1 s. ``on_ready(t_start_ns)`` is called once the
    first values are in the files.
    """
    if not update_s > 0:
        raise ValueError(f"update_s must be > 0, got {update_s!r}")
    board = open_board(root, layout)
    log = None
    try:
        names = board.channels()
        targets = {rail: board.channel(rail) for rail in waves}
        for rail, ch in targets.items():
            if ch.removed:
                raise SimBoardError(f"rail {rail!r} has no files (removed); cannot drive it")
        period = max(1, int(round(update_s * 1e9)))
        t_start = time.monotonic_ns()
        signals = {rail: _signal(w, t_start, period) for rail, w in waves.items()}
        polled = any(isinstance(s, _LoadFollower) for s in signals.values())
        end = None if stop_after_s is None else t_start + int(stop_after_s * 1e9)
        log = open(log_path, "ab") if log_path else None
        _loop(board, names, targets, signals, polled, period, end, stop, log, on_ready)
    finally:
        if log is not None:
            log.close()
        board.close()


def _loop(
    board: SimBoard,
    names: List[str],
    targets: Dict[str, _Channel],
    signals: Dict[str, Any],
    polled: bool,
    period: int,
    end: Optional[int],
    stop: Optional[threading.Event],
    log: Any,
    on_ready: Optional[Callable[[int], None]],
) -> None:
    written: Dict[str, Tuple[float, int]] = {}
    index = {rail: names.index(ch.name) for rail, ch in targets.items()}
    now = time.monotonic_ns()
    next_tick = now
    next_flush = now + LOG_FLUSH_NS
    next_refresh = now + REFRESH_NS
    ready = False
    while True:
        now = time.monotonic_ns()
        if (stop is not None and stop.is_set()) or (end is not None and now >= end):
            return
        for rail, sig in signals.items():
            ch = targets[rail]
            q = quantise(board.driver, ch.mv, sig.value(now))
            if written.get(rail) != q:
                t_w = board._set(ch, q[0], q[1])
                previous = written.get(rail)
                written[rail] = q
                if log is not None and (previous is None or previous[0] != q[0]):
                    log.write(RECORD.pack(t_w, index[rail], q[0]))
        if not ready:
            ready = True
            if log is not None:
                log.flush()
            if on_ready is not None:
                on_ready(now)
        if now >= next_refresh:
            board.refresh()
            next_refresh = now + REFRESH_NS
        if log is not None and now >= next_flush:
            log.flush()
            next_flush = now + LOG_FLUSH_NS
        deadline = min(next_refresh, next_flush) if log is not None else next_refresh
        if polled:
            if next_tick <= now:  # skip ticks missed while descheduled
                next_tick += ((now - next_tick) // period + 1) * period
            deadline = min(deadline, next_tick)
        for sig in signals.values():
            change = sig.next_change_ns(now)
            if change is not None:
                deadline = min(deadline, change)
        if end is not None:
            deadline = min(deadline, end)
        delay = deadline - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)


def _package_parent() -> str:
    # power/simboard/driver.py -> the directory that holds the power package
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Driver:
    """:func:`drive` in a child process (``python -m power.simboard drive``), so the reader
    under test does not disturb the writer's timing. ``with Driver(...) as d:`` returns once the
    first values are written; :meth:`log` parses what was written so far.

    The log file (default ``<root>/.halofarm-simboard.log``) is emptied at start."""

    def __init__(
        self,
        root: str,
        layout: str,
        waves: Dict[str, Wave],
        update_s: float = 0.001,
        log_path: Optional[str] = None,
        stop_after_s: Optional[float] = None,
        ready_timeout_s: float = 30.0,
        python: str = sys.executable,
    ) -> None:
        get_layout(layout)
        self.root = root
        self.layout = layout
        self.waves = dict(waves)
        self.update_s = update_s
        self.log_path = log_path or os.path.join(root, DEFAULT_LOG)
        self.stop_after_s = stop_after_s
        self.ready_timeout_s = ready_timeout_s
        self.python = python
        self.t_start_ns: Optional[int] = None
        self._proc: Optional[subprocess.Popen] = None  # type: ignore[type-arg]

    def argv(self) -> List[str]:
        argv = [self.python, "-m", "power.simboard", "drive", self.root, "--layout", self.layout]
        for rail, wave in self.waves.items():
            argv += ["--wave", wave_spec(rail, wave)]
        argv += ["--log", self.log_path, "--update-s", repr(self.update_s)]
        if self.stop_after_s is not None:
            argv += ["--seconds", repr(self.stop_after_s)]
        return argv

    def start(self) -> Driver:
        if self._proc is not None:
            raise DriverError("this Driver was already started; make a new one")
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        with open(self.log_path, "wb"):
            pass
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_package_parent(), env.get("PYTHONPATH", "")) if p
        )
        self._proc = subprocess.Popen(
            self.argv(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        try:
            self.t_start_ns = self._wait_ready()
        except BaseException:
            self._kill()
            raise
        return self

    def _wait_ready(self) -> int:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + self.ready_timeout_s
        buf = b""
        # poll, not select: select() fails on descriptors above 1023, which a long test run
        # or a busy agent can reach.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DriverError(
                    f"the driver did not start within {self.ready_timeout_s:g} s: "
                    f"{self._stderr_tail()}"
                )
            if poller.poll(left * 1000.0):
                chunk = os.read(fd, 4096)
                if not chunk:
                    self._proc.wait()
                    raise DriverError(
                        f"the driver exited with {self._proc.returncode} before it was "
                        f"ready: {self._stderr_tail()}"
                    )
                buf += chunk
        word, _, t = buf.split(b"\n", 1)[0].partition(b" ")
        if word != b"ready":
            raise DriverError(f"unexpected driver output {buf[:80]!r}")
        return int(t)

    def _stderr_tail(self) -> str:
        proc = self._proc
        if proc is None or proc.stderr is None:
            return ""
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        text = proc.stderr.read().decode("utf-8", "replace").strip()
        return text[-2000:] or "(no message)"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> int:
        """Ask the driver to stop (SIGTERM), wait; returns its exit code. Raises DriverError if
        it failed."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self._close_pipes()
                raise DriverError(
                    f"the driver ignored SIGTERM for {timeout_s:g} s; killed it"
                ) from None
        err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
        self._close_pipes()
        if proc.returncode != 0:
            raise DriverError(f"the driver exited with {proc.returncode}: {err.strip()[-2000:]}")
        return proc.returncode

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        proc = self._proc
        if proc is not None:
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()

    def log(self) -> List[Record]:
        return read_log(self.log_path, self.layout)

    def __enter__(self) -> Driver:
        return self.start()

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.stop()
        else:  # do not hide the test's own failure behind a driver error
            try:
                self.stop()
            except DriverError:
                pass
