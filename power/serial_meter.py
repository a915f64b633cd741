"""Serial power meters as power sources: an STM32 LPM01A, a Nordic PPK2 or a halofarm DIY
INA219/INA3221 meter on a USB port, through :mod:`firmware_bridge.meters` -- how a Raspberry Pi
(no rails of its own) or an MCU on the bench gets measured.

One source per configured meter (``[[power.meters]]`` in the agent config, see
:func:`meter_config`), one rail per meter channel, of kind ``energy``: the driver integrates
the meter's own sample stream (100 kS/s for a PPK2, 1 ms energy bins for an LPM01A) into a
cumulative energy per channel, and each :meth:`SerialMeterSource.read` reports it as
``Reading.uj`` with the mean power since the previous read as ``Reading.mw`` -- the energy of a
window is a counter difference, exact at the meter's rate, not a trapezoid over 10 ms polls.
The reading's ``t_ns`` is the host time of the newest sample the meter delivered (its clock
mapped onto ``monotonic_ns``), not the time of the read.

:func:`discover` does not open any port (``caps`` and ``power probe`` list meters cheaply, and
a sampler process can open the port itself); the first :meth:`read` opens the meter and starts
its stream. A meter that cannot be opened, or stops sending, gives per-rail errors saying why;
after a USB unplug the driver reconnects and restarts the stream by itself.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from power.source import PowerSource, Rail, Reading

KIND = "serial-meter"
METER_KINDS = ("lpm01a", "ppk2", "inameter")
DEFAULT_RAILS = {"lpm01a": ("VOUT",), "ppk2": ("VOUT",), "inameter": ("CH1",)}
STALL_S = 2.0  # no new samples this long: the meter is gone or stuck
FIRST_DATA_S = 2.0  # how long the first read waits for the stream to begin
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,63}")  # what BenchSpec.power accepts


@dataclass(frozen=True)
class MeterConfig:
    """One ``[[power.meters]]`` entry."""

    name: str  # the source name (--power NAME, Caps.power_sources)
    kind: str  # lpm01a | ppk2 | inameter
    url: str  # any pyserial URL: /dev/serial/by-id/..., hwgrep://1915:c00a, rfc2217://...
    rails: Tuple[str, ...] = ()  # one name per channel; default VOUT (lpm01a/ppk2), CH1
    voltage_mv: Optional[int] = None  # LPM01A/PPK2 supply; PPK2 ampere mode: the external one
    mode: Optional[str] = None  # PPK2: "source" (default) or "ampere"
    marker_pin: Optional[int] = None  # PPK2 logic input of the DUT's timestamp GPIO
    freq: Optional[str] = None  # LPM01A bin rate: "1k" (default) ... "1"
    rate_hz: Optional[int] = None  # DIY meter sample rate (default 100)
    baudrate: Optional[int] = None
    exclusive: bool = True
    extra: Dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def rail_names(self) -> Tuple[str, ...]:
        return self.rails or DEFAULT_RAILS[self.kind]

    def driver_options(self) -> Dict[str, Any]:
        """Keyword arguments of the firmware_bridge driver."""
        opts: Dict[str, Any] = {"exclusive": self.exclusive}
        if self.baudrate is not None:
            opts["baudrate"] = self.baudrate
        if self.kind == "inameter":
            opts["rails"] = list(self.rail_names)
            if self.rate_hz is not None:
                opts["rate_hz"] = self.rate_hz
        else:
            opts["rail"] = self.rail_names[0]
            if self.voltage_mv is not None:
                opts["voltage_mv"] = self.voltage_mv
        if self.kind == "ppk2":
            if self.mode is not None:
                opts["mode"] = self.mode
            if self.marker_pin is not None:
                opts["marker_pin"] = self.marker_pin
        if self.kind == "lpm01a" and self.freq is not None:
            opts["freq"] = self.freq
        opts.update(self.extra)
        return opts


_KEYS = {
    "name": str,
    "kind": str,
    "url": str,
    "rails": list,
    "voltage_mv": int,
    "mode": str,
    "marker_pin": int,
    "freq": str,
    "rate_hz": int,
    "baudrate": int,
    "exclusive": bool,
}


def meter_config(values: Mapping[str, Any], where: str = "power.meters") -> MeterConfig:
    """A :class:`MeterConfig` from one ``[[power.meters]]`` table; ValueError names the key
    (``where``) and what is wrong with it."""
    unknown = sorted(set(values) - set(_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_KEYS)}")
    for key in ("name", "kind", "url"):
        if not values.get(key):
            raise ValueError(f"{where}: '{key}' is required (e.g. name = \"dut\", kind = \"ppk2\", "
                             "url = \"/dev/serial/by-id/usb-Nordic...-if01\")")  # fmt: skip
    for key, kind in _KEYS.items():
        if key in values:
            value = values[key]
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
            if not ok:
                raise ValueError(f"{where}.{key}: must be a {kind.__name__}, got {value!r}")
    if not NAME_RE.fullmatch(values["name"]):
        raise ValueError(
            f"{where}.name: {values['name']!r} must start with a letter or digit and hold only "
            "letters, digits and _.:@/- (at most 64): it is the source name --power takes"
        )
    if values["kind"] not in METER_KINDS:
        raise ValueError(
            f"{where}.kind: must be one of {', '.join(METER_KINDS)}, got {values['kind']!r}"
        )
    rails = tuple(values.get("rails") or ())
    if any(not isinstance(r, str) or not r for r in rails):
        raise ValueError(f"{where}.rails: must be a list of non-empty rail names")
    if values["kind"] != "inameter" and len(rails) > 1:
        raise ValueError(f"{where}.rails: a {values['kind']} has one channel; give one name")
    if values.get("mode") not in (None, "source", "ampere"):
        raise ValueError(f"{where}.mode: must be 'source' or 'ampere'")
    return MeterConfig(
        name=values["name"],
        kind=values["kind"],
        url=values["url"],
        rails=rails,
        voltage_mv=values.get("voltage_mv"),
        mode=values.get("mode"),
        marker_pin=values.get("marker_pin"),
        freq=values.get("freq"),
        rate_hz=values.get("rate_hz"),
        baudrate=values.get("baudrate"),
        exclusive=values.get("exclusive", True),
    )


class SerialMeterSource(PowerSource):
    """One configured meter; its port opens on the first read."""

    kind = KIND
    method = "measured"
    tau_s = 0.0  # meters report what they measured, unsmoothed

    def __init__(self, config: MeterConfig, stall_s: float = STALL_S) -> None:
        from firmware_bridge.urlschemes import is_fake

        self.config = config
        self.stall_s = stall_s
        self.name = config.name
        self.method = "simulated" if is_fake(config.url) else "measured"
        self.rails = [
            Rail(name, f"{config.kind} {config.url} ch{k + 1}", "energy")
            for k, name in enumerate(config.rail_names)
        ]
        self._meter: Any = None
        self._open_error: Optional[str] = None
        self._prev: Optional[Tuple[int, List[float]]] = None  # (t_ns, uj) of the last value
        self._samples = 0
        self._t_ns: Optional[int] = None

    # --- the meter ---

    def _open(self) -> None:
        from firmware_bridge.meters.factory import make_meter

        meter = make_meter(self.config.url, self.config.kind, **self.config.driver_options())
        meter.open()
        try:
            meter.start()
        except Exception:
            meter.close()
            raise
        self._meter = meter
        deadline = time.monotonic() + FIRST_DATA_S
        while time.monotonic() < deadline and meter.snapshot().t_ns is None:
            time.sleep(0.01)
        start = meter.clock.to_host(0.0)  # the first stream starts at meter time 0
        if start is not None:
            self._prev = (start, [0.0] * len(self.rails))  # the stream began at zero energy

    def read(self, full: bool = False) -> Reading:
        reading = super().read(full)
        if self._t_ns is not None:
            reading.t_ns = self._t_ns  # the newest sample's time, not the time of the read
        return reading

    def _read_rails(self, full: bool) -> Reading:
        n = len(self.rails)
        none: List[Optional[float]] = [None] * n
        self._t_ns = None
        if self._meter is None:
            from firmware_bridge.errors import BridgeError

            try:
                self._open()
            except (BridgeError, ValueError, OSError) as exc:
                self._open_error = str(exc)
                why = f"cannot open the {self.config.kind} at {self.config.url}: {exc}"
                return Reading(0, 0, list(none), {r.name: why for r in self.rails}, uj=list(none))
        snap = self._meter.snapshot()
        if snap.t_ns is None or snap.samples == self._samples:
            errors: Dict[str, str] = {}
            silent_s = (time.monotonic_ns() - snap.last_rx_ns) / 1e9
            if silent_s > self.stall_s:
                state = (
                    "disconnected, waiting for it"
                    if not self._meter.transport.connected
                    else "stream stopped"
                )
                why = (
                    f"no samples from the {self.config.kind} at {self.config.url} for "
                    f"{silent_s:.1f} s ({state})"
                )
                errors = {r.name: why for r in self.rails}
            return Reading(0, 0, list(none), errors, uj=list(none))
        self._samples = snap.samples
        uj = [e * 1e6 for e in snap.energy_j]
        mw: List[Optional[float]] = list(none)
        if self._prev is not None and snap.t_ns > self._prev[0]:
            dt = snap.t_ns - self._prev[0]
            mw = [(u - p) * 1e6 / dt for u, p in zip(uj, self._prev[1])]
        self._prev = (snap.t_ns, uj)
        self._t_ns = snap.t_ns
        return Reading(
            0,
            0,
            mw,
            uj=list(uj),
            mv=list(snap.mv) if full else None,
            ma=list(snap.ma) if full else None,
        )

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d.update(
            meter=self.config.kind,
            url=self.config.url,
            rails=list(self.config.rail_names),
            integration=(
                "cumulative energy integrated by the driver at the meter's own sample rate; "
                "reads report it as a counter (uJ) and the mean power since the previous read"
            ),
        )
        if self._meter is not None:
            d["device"] = self._meter.describe()
        elif self._open_error is not None:
            d["error"] = self._open_error
        return d

    def close(self) -> None:
        meter, self._meter = self._meter, None
        if meter is not None:
            meter.close()


def discover(meters: Sequence[MeterConfig] = ()) -> List[PowerSource]:
    """A source per configured meter (no port is opened here)."""
    return [SerialMeterSource(m) for m in meters]
