"""Benchmark an MCU device under test: the library entry points the agent's ``mcu`` job and
``halo-agent mcu probe|bench`` call.

:func:`probe` identifies the DUT (name, firmware profile, model, timestamp mode).
:func:`run` follows the MLPerf Tiny performance rules (serial.md §1.3, §3):

1. identify; optionally load the input tensor (``db load`` + chunks);
2. calibrate: ``infer 1 0`` (the first-inference time), then a short run for a stable
   per-inference estimate; N is chosen so a window lasts at least ``min_window_s`` (10 s by
   the rules);
3. ``windows`` windows (5 by the rules) of ``infer N W``, W always explicit. Latency per window
   = (t1 - t0) / N from the DUT's own ``m-lap-us`` laps; in energy mode (no laps) from the
   meter's two timestamp events. A window shorter than ``min_window_s`` raises N for the next;
4. with a meter: energy between the **last two** timestamp events inside the window (MLPerf
   Tiny's rule), or -- when the DUT is in performance mode and its GPIO is not wired to the
   meter -- between the host times the two lap lines arrived (labelled ``host-window``);
5. medians over the successful windows.

A window that fails (device error, timeout, USB unplug) is reported failed with its reason; the
next window waits for the DUT to come back, identifies it again, reloads the input and goes on.
"""

from __future__ import annotations

import hashlib
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

from firmware_bridge.dut import DutIdentity, EembcDut, InferReply, Timeouts, infer_count
from firmware_bridge.errors import BridgeError, DeviceDisconnected
from firmware_bridge.meters.base import Meter, MeterEvent
from firmware_bridge.transcript import Transcript
from firmware_bridge.urlschemes import is_fake

RULES_WINDOWS = 5
RULES_MIN_WINDOW_S = 10.0
RUNTIME = "mlperf-tiny-dut"

# progress(phase, done, total): "init" | "warmup" | "measure"
Progress = Callable[[str, int, Optional[int]], None]


@dataclass
class WindowEnergy:
    method: str  # "meter-markers" | "host-window"
    e_total_mj: float
    e_per_inference_uj: float
    p_mean_mw: float
    seconds: float  # the interval the energy covers
    events_used: int
    dropped_samples: int

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class Window:
    index: int
    status: str  # "ok" | "failed"
    reason: Optional[str] = None
    n: int = 0
    warmups: int = 0
    t0_us: Optional[int] = None
    t1_us: Optional[int] = None
    elapsed_us: Optional[float] = None
    timing: str = ""  # "laps" (the DUT's clock) | "meter-events"
    latency_us: Optional[float] = None  # per inference
    throughput: Optional[float] = None  # inferences per second
    below_min_window: bool = False
    host_start_ns: Optional[int] = None
    host_end_ns: Optional[int] = None
    energy: Optional[WindowEnergy] = None
    results: List[float] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["energy"] = None if self.energy is None else self.energy.to_dict()
        return d


@dataclass
class McuProbe:
    url: str
    interface: bool
    identity: Optional[DutIdentity]
    error: Optional[str] = None
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {
            "url": self.url,
            "interface": self.interface,
            "identity": None if self.identity is None else self.identity.to_dict(),
            "error": self.error,
            "seconds": self.seconds,
        }


@dataclass
class McuBenchResult:
    """Everything one MCU benchmark produced; :meth:`bench_fields` maps it onto the agent's
    result schema."""

    status: str  # "ok" (at least one window) | "failed"
    reason: Optional[str]
    port_url: str
    interface: bool
    identity: Optional[DutIdentity]
    meter_url: Optional[str]
    meter: Optional[Dict[str, Any]]  # the meter's describe(): kind, identity, calibration ...
    input_bytes: Optional[int]
    input_sha256: Optional[str]
    n: int  # inferences per window
    warmups: int
    min_window_s: float
    windows_requested: int
    windows: List[Window]
    first_inference_us: Optional[float]  # the calibration's `infer 1 0`
    latency_us_median: Optional[float]
    throughput_median: Optional[float]
    energy_per_inference_uj_median: Optional[float]
    power_mw_median: Optional[float]
    results: List[float]
    rules_ok: bool  # exactly 5 windows, all ok, all >= 10 s
    rules_notes: List[str]
    simulated: bool  # a fake DUT or meter: numbers are not measurements
    started_at: float
    finished_at: float
    trace_path: Optional[str] = None

    @property
    def ok_windows(self) -> List[Window]:
        return [w for w in self.windows if w.status == "ok"]

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["identity"] = None if self.identity is None else self.identity.to_dict()
        d["windows"] = [w.to_dict() for w in self.windows]
        return d

    def raw_ns(self) -> List[int]:
        """Per-window latency per inference in ns (one 'run' per window)."""
        return [int(round(w.latency_us * 1000)) for w in self.ok_windows if w.latency_us]

    def bench_fields(self) -> Dict[str, Any]:
        """The fields of ``protocol.bodies.BenchResult`` this run determines (the agent adds
        ids, spec, stats from :meth:`raw_ns` and the env snapshots)."""
        ok = self.ok_windows
        energy: Optional[Dict[str, Any]] = None
        with_energy = [w for w in ok if w.energy is not None]
        if self.meter_url is not None:
            if with_energy:
                e_med = statistics.median(w.energy.e_total_mj for w in with_energy)  # type: ignore[union-attr]
                energy = {
                    "status": "ok",
                    "method": "simulated" if self.simulated else "measured",
                    "source": self.meter,
                    "integration": with_energy[-1].energy.method,  # type: ignore[union-attr]
                    "e_total_mj": e_med,
                    "e_per_inference_mj": (self.energy_per_inference_uj_median or 0.0) / 1000.0,
                    "p_mean_mw": self.power_mw_median,
                    "window": {"inferences": self.n, "windows": len(with_energy)},
                    "windows": [w.energy.to_dict() for w in with_energy],  # type: ignore[union-attr]
                }
            else:
                energy = {"status": "failed", "reason": "no window produced an energy figure"}
        return {
            "status": self.status,
            "reason": self.reason,
            "runtime": RUNTIME,
            "runtime_version": self.identity.profile if self.identity else "unknown",
            "model_bytes": self.input_bytes,
            "init_ns": None,
            "first_ns": None
            if self.first_inference_us is None
            else int(self.first_inference_us * 1000),
            "warmup_count": self.warmups * len(ok),
            "warmup_mean_ns": None,
            "raw_ns": self.raw_ns(),
            "ops": {},
            "delegated": False,
            "peak_rss_bytes": None,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "energy": energy,
            "mcu": {
                k: v
                for k, v in self.to_dict().items()
                if k not in ("status", "reason", "started_at", "finished_at")
            },
        }


def identity_sha256(identity: DutIdentity) -> str:
    """A stable 'model' hash for a DUT whose model is baked into its firmware."""
    text = f"{identity.name}\n{identity.profile}\n{identity.model}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _transcript(trace: Union[None, str, Transcript]) -> tuple:
    if trace is None or isinstance(trace, Transcript):
        return trace, False
    return Transcript(trace), True


def probe(
    port_url: str,
    interface: bool = False,
    baudrate: Optional[int] = None,
    trace: Union[None, str, Transcript] = None,
    timeouts: Optional[Timeouts] = None,
    settle_s: float = 0.0,
) -> McuProbe:
    """Identify the DUT at ``port_url``; never raises for a device problem (see ``error``)."""
    started = time.monotonic()
    transcript, owned = _transcript(trace)
    dut = None
    try:
        dut = EembcDut.open(
            port_url, baudrate, interface, transcript, timeouts, settle_s=settle_s, reconnect=False
        )
        identity = dut.identify()
        return McuProbe(port_url, interface, identity, None, time.monotonic() - started)
    except BridgeError as exc:
        return McuProbe(port_url, interface, None, str(exc), time.monotonic() - started)
    finally:
        if dut is not None:
            dut.close()
        if owned and transcript is not None:
            transcript.close()


class _Run:
    """The state of one benchmark while it runs."""

    def __init__(self, dut: EembcDut, meter: Optional[Meter], data: Optional[bytes]) -> None:
        self.dut = dut
        self.meter = meter
        self.data = data
        self.generation = dut.transport.generation

    def ready(self) -> None:
        """Make sure the DUT we talk to is the one we set up (after an unplug: wait, identify
        again, reload the input)."""
        t = self.dut.transport
        if t.connected and t.generation == self.generation:
            return
        if not self.dut.wait_back():
            raise DeviceDisconnected(
                f"{self.dut.url} did not come back within {self.dut.timeouts.reconnect_s:g} s"
            )
        self.dut.identify()
        if self.data:
            self.dut.load(self.data)
        self.generation = t.generation

    def infer(self, n: int, warmups: int, per_s: Optional[float]) -> InferReply:
        self.ready()
        expected = None if per_s is None else per_s * (n + warmups)
        return self.dut.infer(n, warmups, expected_s=expected)

    def marker_events(self, reply: InferReply) -> List[MeterEvent]:
        """The meter's timestamp events inside this infer command, once the meter's data
        covers its end."""
        if self.meter is None:
            return []
        self.meter.wait_until(reply.host_end_ns, 2.0)
        return [
            e
            for e in self.meter.events()
            if e.t_ns is not None and reply.host_start_ns - 5_000_000 <= e.t_ns <= reply.host_end_ns
        ]


def _per_inference_s(run: _Run, reply: InferReply) -> Optional[float]:
    if reply.elapsed_us is not None:
        return reply.elapsed_us / 1e6 / reply.n
    events = run.marker_events(reply)
    if len(events) >= 2:
        return (events[-1].t_meter_s - events[-2].t_meter_s) / reply.n
    return None


def _window_energy(run: _Run, reply: InferReply, window: Window) -> Optional[WindowEnergy]:
    meter = run.meter
    if meter is None:
        return None
    before = meter.snapshot().dropped
    events = run.marker_events(reply)
    if len(events) >= 2:
        a, b = events[-2], events[-1]  # the last two: earlier spurious edges happen
        seconds = b.t_meter_s - a.t_meter_s
        e_j = sum(b.energy_j) - sum(a.energy_j)
        method, used = "meter-markers", 2
    elif reply.host_t0_ns is not None and reply.host_t1_ns is not None:
        meter.wait_until(reply.host_t1_ns, 2.0)
        e0, e1 = meter.energy_at(reply.host_t0_ns), meter.energy_at(reply.host_t1_ns)
        if e0 is None or e1 is None:
            return None
        seconds = (reply.host_t1_ns - reply.host_t0_ns) / 1e9
        e_j = sum(e1) - sum(e0)
        method, used = "host-window", 0
    else:
        return None
    if seconds <= 0:
        return None
    return WindowEnergy(
        method=method,
        e_total_mj=e_j * 1e3,
        e_per_inference_uj=e_j * 1e6 / reply.n,
        p_mean_mw=e_j * 1e3 / seconds,
        seconds=seconds,
        events_used=used,
        dropped_samples=meter.snapshot().dropped - before,
    )


def _median(values: List[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def run(
    port_url: str,
    meter_url: Optional[str] = None,
    windows: int = RULES_WINDOWS,
    min_window_s: float = RULES_MIN_WINDOW_S,
    warmups: int = 1,
    input_data: Optional[bytes] = None,
    interface: bool = False,
    baudrate: Optional[int] = None,
    meter_kind: Optional[str] = None,
    meter_options: Optional[Dict[str, Any]] = None,
    trace: Union[None, str, Transcript] = None,
    timeouts: Optional[Timeouts] = None,
    settle_s: float = 0.0,
    progress: Optional[Progress] = None,
    cancel: Optional[threading.Event] = None,
) -> McuBenchResult:
    """Benchmark the DUT at ``port_url`` (see the module docstring). Never raises for a
    device problem: the result says what failed."""
    if windows < 1:
        raise ValueError("windows must be >= 1")
    if min_window_s <= 0:
        raise ValueError("min_window_s must be > 0")
    started_at = time.time()
    transcript, owned = _transcript(trace)
    timeouts = timeouts or Timeouts()
    result = McuBenchResult(
        status="failed",
        reason=None,
        port_url=port_url,
        interface=interface,
        identity=None,
        meter_url=meter_url,
        meter=None,
        input_bytes=len(input_data) if input_data else None,
        input_sha256=hashlib.sha256(input_data).hexdigest() if input_data else None,
        n=0,
        warmups=warmups,
        min_window_s=min_window_s,
        windows_requested=windows,
        windows=[],
        first_inference_us=None,
        latency_us_median=None,
        throughput_median=None,
        energy_per_inference_uj_median=None,
        power_mw_median=None,
        results=[],
        rules_ok=False,
        rules_notes=[],
        simulated=is_fake(port_url) or (meter_url is not None and is_fake(meter_url)),
        started_at=started_at,
        finished_at=started_at,
        trace_path=getattr(transcript, "path", None),
    )

    def tell(phase: str, done: int, total: Optional[int]) -> None:
        if progress is not None:
            progress(phase, done, total)

    dut: Optional[EembcDut] = None
    meter: Optional[Meter] = None
    try:
        tell("init", 0, None)
        try:
            if meter_url is not None:
                from firmware_bridge.meters.factory import open_meter

                meter = open_meter(meter_url, meter_kind, transcript, **(meter_options or {}))
                meter.start()
            dut = EembcDut.open(
                port_url, baudrate, interface, transcript, timeouts, settle_s=settle_s
            )
            result.identity = dut.identify()
            if input_data:
                dut.load(input_data)
        except (BridgeError, ValueError) as exc:
            result.reason = f"setup failed: {exc}"
            return result
        state = _Run(dut, meter, input_data)

        # Calibration: infer 1 0, then enough inferences for ~1/10 of a window.
        tell("warmup", 0, None)
        try:
            first = state.infer(1, 0, None)
            per_s = _per_inference_s(state, first)
            result.first_inference_us = None if per_s is None else per_s * 1e6
            if per_s is None:
                raise BridgeError(
                    "the DUT printed no m-lap-us and no meter timestamp events arrived: an "
                    "energy-mode DUT needs a meter with its timestamp GPIO wired (--meter)"
                )
            probe_n = infer_count(per_s, min(1.0, min_window_s / 10.0), 1.0)
            if probe_n > 1:
                second = state.infer(probe_n, 0, per_s)
                per_s = _per_inference_s(state, second) or per_s
        except BridgeError as exc:
            result.reason = f"calibration failed: {exc}"
            return result
        n = infer_count(per_s, min_window_s)
        result.n = n

        for i in range(windows):
            if cancel is not None and cancel.is_set():
                result.reason = "cancelled"
                break
            tell("measure", i, windows)
            window = Window(index=i, status="failed", n=n, warmups=warmups)
            result.windows.append(window)
            try:
                reply = state.infer(n, warmups, per_s)
            except BridgeError as exc:
                window.reason = f"{type(exc).__name__}: {exc}"
                if not dut.transport.connected and not dut.wait_back():
                    result.reason = f"the DUT did not come back: {exc}"
                    break  # every further window would wait out the reconnect timeout
                continue
            window.host_start_ns, window.host_end_ns = reply.host_start_ns, reply.host_end_ns
            window.t0_us, window.t1_us = reply.t0_us, reply.t1_us
            window.results = reply.results
            if reply.elapsed_us is not None:
                elapsed_s = reply.elapsed_us / 1e6
                window.timing = "laps"
            else:
                events = state.marker_events(reply)
                if len(events) < 2:
                    window.reason = "no lap lines and fewer than two meter timestamp events"
                    continue
                elapsed_s = events[-1].t_meter_s - events[-2].t_meter_s
                window.timing = "meter-events"
            window.elapsed_us = elapsed_s * 1e6
            window.latency_us = elapsed_s * 1e6 / n
            window.throughput = n / elapsed_s if elapsed_s > 0 else None
            window.below_min_window = elapsed_s < min_window_s
            window.energy = _window_energy(state, reply, window)
            window.status = "ok"
            per_s = elapsed_s / n
            if window.below_min_window:  # lengthen the next windows
                n = infer_count(per_s, min_window_s, 1.10)
        tell("measure", windows, windows)

        ok = result.ok_windows
        result.latency_us_median = _median([w.latency_us for w in ok if w.latency_us])
        result.throughput_median = _median([w.throughput for w in ok if w.throughput])
        energies = [w.energy for w in ok if w.energy is not None]
        result.energy_per_inference_uj_median = _median([e.e_per_inference_uj for e in energies])
        result.power_mw_median = _median([e.p_mean_mw for e in energies])
        result.results = ok[-1].results if ok else []
        notes = []
        if windows != RULES_WINDOWS:
            notes.append(f"{windows} windows (the rules ask for exactly {RULES_WINDOWS})")
        if min_window_s < RULES_MIN_WINDOW_S:
            notes.append(f"min window {min_window_s:g} s (the rules ask for >= 10 s)")
        failed = [w for w in result.windows if w.status != "ok"]
        if failed:
            notes.append(f"{len(failed)} window(s) failed")
        short = [w for w in ok if w.below_min_window]
        if short:
            notes.append(f"{len(short)} window(s) shorter than {min_window_s:g} s")
        result.rules_notes = notes
        result.rules_ok = not notes
        if ok:
            result.status = "ok"
            if failed and result.reason is None:
                result.reason = "; ".join(f"window {w.index}: {w.reason}" for w in failed)
        elif result.reason is None:
            result.reason = "every window failed: " + "; ".join(
                f"window {w.index}: {w.reason}" for w in failed
            )
        return result
    finally:
        if meter is not None:
            try:
                result.meter = meter.describe()
            except Exception as exc:  # describe is informational; never lose the result
                result.meter = {"kind": meter.kind, "url": meter.url, "error": str(exc)}
            meter.close()
        if dut is not None:
            dut.close()
        if owned and transcript is not None:
            transcript.close()
        result.finished_at = time.time()
