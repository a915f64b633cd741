"""What every serial power meter offers, and the bookkeeping they share.

A meter streams samples on its own clock. The driver decodes them in the transport's reader
thread as they arrive and keeps, per channel, the **cumulative energy** of everything decoded
so far -- integrated at the meter's own rate (100 kS/s for a PPK2), which no polling sampler
could match. Callers take :meth:`Meter.snapshot` (cumulative energy at the newest sample) or
:meth:`Meter.events` (the timestamp GPIO's edges, each with the cumulative energy at that
instant); energy over an interval is a difference of two cumulative values.

Meter time maps to the host's ``time.monotonic_ns`` through :class:`ClockMap`: a sample cannot
arrive before it was taken, so ``arrival - meter_time`` is an upper bound of the clock offset
and its minimum over all observations the best estimate (USB and scheduling delays only ever
add). Drift between the meter's crystal and the host (tens of ppm) is not corrected: it moves a
10 s window's edges by well under a millisecond.

After a USB unplug the transport reconnects by itself; the next :meth:`Meter.snapshot` restarts
the stream (the device lost its configuration) and the time it was gone is counted in
``gap_s`` -- energy over a gap is unknown and not invented.
"""

from __future__ import annotations

import bisect
import queue
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from firmware_bridge.errors import DeviceDisconnected, MeterError
from firmware_bridge.transcript import Transcript
from firmware_bridge.transport import PortSettings, Transport

HISTORY_MAX = 300_000
HISTORY_MIN_NS = 2_000_000  # one history point per 2 ms at most: 10 minutes of history


@dataclass
class MeterInfo:
    """Who the meter is and how it is set up (logged with every energy figure)."""

    kind: str
    url: str
    identity: str = ""
    firmware: str = ""
    channels: List[str] = field(default_factory=list)
    rate_hz: float = 0.0
    settings: Dict[str, Any] = field(default_factory=dict)
    calibration: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class MeterEvent:
    """One edge of a timestamp input (or a software mark)."""

    index: int  # the sample it fell in (meter clock, counting lost samples too)
    t_meter_s: float
    t_ns: Optional[int]  # host monotonic_ns, mapped
    source: str  # "d7", "logic0", "gpio2", "mark7"
    energy_j: List[float]  # cumulative energy per channel at this instant


@dataclass
class MeterSnapshot:
    samples: int  # decoded samples (per channel)
    dropped: int  # samples the meter took but we never got (counter/seq/timestamp gaps)
    bad: int  # frames or lines that failed their checks (garbage)
    t_meter_s: float  # meter time at the end of the newest sample
    t_ns: Optional[int]  # ... mapped to the host's monotonic_ns
    energy_j: List[float]  # cumulative per channel, since the stream started
    mv: List[Optional[float]]
    ma: List[Optional[float]]  # newest current per channel
    last_rx_ns: int  # host time of the newest data
    restarts: int
    gap_s: float  # total time the meter was gone (not in energy_j)


class ClockMap:
    """Meter seconds -> host monotonic ns (see the module docstring)."""

    def __init__(self) -> None:
        self.offset_ns: Optional[int] = None
        self.observations = 0

    def observe(self, meter_s: float, arrival_ns: int) -> None:
        offset = arrival_ns - int(round(meter_s * 1e9))
        self.observations += 1
        if self.offset_ns is None or offset < self.offset_ns:
            self.offset_ns = offset

    def to_host(self, meter_s: float) -> Optional[int]:
        if self.offset_ns is None:
            return None
        return self.offset_ns + int(round(meter_s * 1e9))

    def reset(self) -> None:
        self.offset_ns = None


class LineSplitter:
    """Bytes -> complete text lines (``\\r`` and NUL removed, Latin-1: never fails)."""

    def __init__(self) -> None:
        self.partial = bytearray()

    def feed(self, data: bytes) -> List[str]:
        self.partial += data
        if b"\n" not in data:
            return []
        *lines, rest = bytes(self.partial).split(b"\n")
        self.partial = bytearray(rest)
        return [ln.replace(b"\r", b"").replace(b"\x00", b"").decode("latin-1") for ln in lines]


class Meter:
    """Base of the drivers. Subclasses set ``kind``/``default_baud`` and implement
    :meth:`setup`, :meth:`_start`, :meth:`_stop` and the decoding they feed to
    :meth:`_commit` / :meth:`_event`."""

    kind = "abstract"
    default_baud = 115200
    rx_trace = "lines"
    stall_s = 2.0  # no data this long while streaming: something is wrong

    def __init__(
        self,
        url: str,
        channels: List[str],
        baudrate: Optional[int] = None,
        trace: Optional[Transcript] = None,
        exclusive: bool = True,
        reconnect: bool = True,
    ) -> None:
        self.url = url
        self.channels = list(channels)
        self.transport = Transport(
            PortSettings(
                url,
                baudrate=baudrate or self.default_baud,
                exclusive=exclusive,
                reconnect=reconnect,
                tag=f"{self.kind}",
                quiet_s=0.05,
                flush_max_s=0.5,
            ),
            trace,
            rx_trace=self.rx_trace,
            on_state=self._on_state,
        )
        self.info = MeterInfo(self.kind, url, channels=list(channels))
        self.clock = ClockMap()
        self.streaming = False
        self._lock = threading.Lock()
        n = len(self.channels)
        self._energy = [0.0] * n
        self._mv: List[Optional[float]] = [None] * n
        self._ma: List[Optional[float]] = [None] * n
        self._samples = 0
        self._dropped = 0
        self._bad = 0
        self._t_meter = 0.0  # continuous across restarts
        self._t_base = 0.0  # meter time when the current stream started
        self._last_rx_ns = 0
        self._events: List[MeterEvent] = []
        self._history: Deque[Tuple[int, float, Tuple[float, ...]]] = deque(maxlen=HISTORY_MAX)
        self._restart_needed = False
        self._lost_at: Optional[float] = None
        self.restarts = 0
        self.gap_s = 0.0
        self.replies: queue.Queue[str] = queue.Queue()

    # --- lifecycle ---

    def open(self) -> Meter:
        self.transport.open()
        try:
            self.setup()
        except Exception:
            self.transport.close()
            raise
        return self

    def start(self) -> None:
        with self._lock:
            self._t_base = self._t_meter
            self.clock.reset()
        # Streaming before the start command: its first samples may arrive with the ack.
        self.streaming = True
        self._last_rx_ns = time.monotonic_ns()
        try:
            self._start()
        except BaseException:
            self.streaming = False
            raise

    def stop(self) -> None:
        if self.streaming:
            self.streaming = False
            try:
                self._stop()
            except (DeviceDisconnected, MeterError):
                pass

    def close(self) -> None:
        try:
            self.stop()
            self.release()
        except Exception:
            pass
        self.transport.close()

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- subclass hooks ---

    def setup(self) -> None:
        """Identify and configure (the port is open, stale output flushed)."""

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        """Hand the meter back (e.g. LPM01A ``hrc``) after stopping."""

    # --- reconnect ---

    def _on_state(self, state: str, detail: str) -> None:
        if state == "lost":
            self._lost_at = time.monotonic()
        elif state == "reconnected" and self.streaming:
            self._restart_needed = True

    def ensure_streaming(self) -> None:
        """Restart the stream after a reconnect (called from snapshot(), not the reader)."""
        if not self._restart_needed or not self.transport.connected:
            return
        self._restart_needed = False
        if self._lost_at is not None:
            self.gap_s += time.monotonic() - self._lost_at
            self._lost_at = None
        try:
            self.reset_decoder()
            self.setup()
            self.start()
            self.restarts += 1
        except (DeviceDisconnected, MeterError):
            self._restart_needed = True

    def reset_decoder(self) -> None:
        """Forget partial frames/lines of the previous connection."""

    # --- what decoders report (reader thread) ---

    def _commit(
        self,
        samples: int,
        t_meter_s: float,
        energy_inc: List[float],
        arrival_ns: int,
        dropped: int = 0,
        bad: int = 0,
        mv: Optional[List[Optional[float]]] = None,
        ma: Optional[List[Optional[float]]] = None,
    ) -> None:
        """``samples`` new samples ending at stream time ``t_meter_s`` (since this stream's
        start), adding ``energy_inc`` joules per channel."""
        with self._lock:
            self._samples += samples
            self._dropped += dropped
            self._bad += bad
            for k, e in enumerate(energy_inc):
                self._energy[k] += e
            if mv is not None:
                self._mv = list(mv)
            if ma is not None:
                self._ma = list(ma)
            self._t_meter = self._t_base + t_meter_s
            self._last_rx_ns = arrival_ns
            self.clock.observe(self._t_meter, arrival_ns)
            t_ns = self.clock.to_host(self._t_meter)
            if t_ns is not None and (
                not self._history or t_ns - self._history[-1][0] >= HISTORY_MIN_NS
            ):
                self._history.append((t_ns, self._t_meter, tuple(self._energy)))

    def _bad_data(self, count: int = 1) -> None:
        with self._lock:
            self._bad += count

    def _event(self, index: int, t_meter_s: float, source: str, energy_j: List[float]) -> None:
        with self._lock:
            t = self._t_base + t_meter_s
            self._events.append(MeterEvent(index, t, self.clock.to_host(t), source, energy_j))

    def energy_now(self) -> List[float]:
        """Cumulative energy so far (decoders use it to stamp events)."""
        return list(self._energy)

    # --- what callers read ---

    def snapshot(self) -> MeterSnapshot:
        self.ensure_streaming()
        with self._lock:
            return MeterSnapshot(
                samples=self._samples,
                dropped=self._dropped,
                bad=self._bad,
                t_meter_s=self._t_meter,
                t_ns=self.clock.to_host(self._t_meter) if self._samples else None,
                energy_j=list(self._energy),
                mv=list(self._mv),
                ma=list(self._ma),
                last_rx_ns=self._last_rx_ns,
                restarts=self.restarts,
                gap_s=self.gap_s,
            )

    def events(self, since_ns: Optional[int] = None) -> List[MeterEvent]:
        """Timestamp events (newest last), those mapped at or after ``since_ns`` if given."""
        self.ensure_streaming()
        with self._lock:
            events = list(self._events)
        if since_ns is None:
            return events
        return [e for e in events if e.t_ns is not None and e.t_ns >= since_ns]

    def energy_at(self, t_ns: int) -> Optional[List[float]]:
        """Cumulative energy per channel at host time ``t_ns`` (linear between history
        points), or None when ``t_ns`` is outside what was recorded."""
        with self._lock:
            hist = list(self._history)
        if not hist or t_ns < hist[0][0] or t_ns > hist[-1][0]:
            return None
        times = [h[0] for h in hist]
        i = bisect.bisect_left(times, t_ns)
        if times[i] == t_ns:
            return list(hist[i][2])
        (t0, _, e0), (t1, _, e1) = hist[i - 1], hist[i]
        w = (t_ns - t0) / (t1 - t0)
        return [a + (b - a) * w for a, b in zip(e0, e1)]

    def wait_until(self, t_ns: int, timeout_s: float) -> bool:
        """Wait until the meter has data at or after host time ``t_ns``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            snap = self.snapshot()
            if snap.t_ns is not None and snap.t_ns >= t_ns:
                return True
            time.sleep(0.01)
        return False

    def describe(self) -> Dict[str, Any]:
        snap = self.snapshot()
        d = self.info.to_dict()
        d.update(
            samples=snap.samples,
            dropped_samples=snap.dropped,
            bad_frames=snap.bad,
            restarts=snap.restarts,
            gap_s=snap.gap_s,
            clock_offset_ns=self.clock.offset_ns,
            clock_rule="host = meter + min(arrival - meter); crystal drift not corrected",
        )
        return d

    # --- text command helper for line-protocol meters ---

    def wait_reply(
        self, accept: Callable[[str], bool], timeout_s: float, what: str
    ) -> Tuple[str, List[str]]:
        """Reply lines (from :attr:`replies`) until one satisfies ``accept``; returns it and
        the lines before it. Raises :class:`MeterError` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        before: List[str] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                if not self.transport.connected:
                    raise DeviceDisconnected(f"{self.url}: disconnected while waiting for {what}")
                raise MeterError(
                    f"{self.kind} at {self.url} did not answer {what} within {timeout_s:g} s "
                    f"(got {before[-3:] or 'nothing'}); check the port, baud rate and meter kind"
                )
            try:
                line = self.replies.get(timeout=min(left, 0.1))
            except queue.Empty:
                continue
            if accept(line):
                return line, before
            before.append(line)

    def drain_replies(self) -> None:
        while True:
            try:
                self.replies.get_nowait()
            except queue.Empty:
                return
