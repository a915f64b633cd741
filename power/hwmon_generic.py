"""Any hwmon device with power or energy files (but not the INA3221, which has its own reader).

Layout (kernel ``Documentation/hwmon/sysfs-interface.rst``): ``/sys/class/hwmon/hwmon<N>/``
with ``name``, ``power<K>_input`` (µW, instantaneous or driver-averaged), ``energy<K>_input``
(µJ, a cumulative counter) and optional ``power<K>_label`` / ``energy<K>_label``. Devices are
found by ``name``, never by number: hwmon numbers change between boots. Devices called
``ina3221`` are left to :mod:`power.ina3221_hwmon`.

One source per device. A power rail reads µW/1000 = mW. An energy rail reports the counter,
wrap-corrected, in ``Reading.uj`` and the mean power since the previous read of that rail in
``Reading.mw`` (ΔE/Δt between the two readings' timestamps; ``None`` on the first read, which
is no error). The wrap rule is :func:`hwmon_energy_delta`.

:class:`EnergyCounter` (running total + mean power of one cumulative counter) is shared with
:mod:`power.rapl`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from power.errors import ReadError
from power.source import PowerSource, Rail, Reading
from power.sysfs import Attr, find, read_text

CLASS_GLOB = "/sys/class/hwmon/hwmon*"
# Chips with a dedicated reader (which knows their rails and total rule).
SKIP_NAMES = ("ina3221",)
CHANNEL_FILE = re.compile(r"^(power|energy)(\d+)_input$")

# hwmon energy counters are 64-bit µJ on most drivers, 32-bit on some: the widths a decrease
# may be a wrap of, narrowest first.
WRAP_WIDTHS = (1 << 32, 1 << 64)
# A wrap is believed only if the energy it implies over the interval stays under this mean
# power. 2 kW per rail is beyond any edge board or server socket, yet turns a counter reset
# (driver reload) seen a few ms later into an error instead of a multi-kJ spike.
MAX_PLAUSIBLE_MW = 2_000_000.0
HWMON_WRAP_RULE = (
    "a decrease is a wrap at 2^32, else 2^64 (the narrowest width both values fit in whose "
    "delta new + width - old keeps the interval's mean power <= max_plausible_mw); "
    "otherwise an error, the interval is counted as 0 and accumulation restarts"
)

# (old raw, new raw, ns between the reads) -> (delta µJ, "") or (None, why it is not believed)
Unwrap = Callable[[int, int, int], Tuple[Optional[int], str]]


def mean_mw(delta_uj: int, dt_ns: int) -> Optional[float]:
    """Mean power over an interval: µJ/ns = 1e6 mW."""
    if dt_ns <= 0:
        return None
    return delta_uj * 1e6 / dt_ns


def hwmon_energy_delta(
    old: int, new: int, dt_ns: int, max_mw: float = MAX_PLAUSIBLE_MW
) -> Tuple[Optional[int], str]:
    """The energy counted between two raw values of an hwmon ``energy*_input``.

    An increase is taken as is. A decrease is a wrap at the narrowest of 2^32, 2^64 that both
    values fit in and whose delta (``new + width - old``) is plausible: mean power over
    ``dt_ns`` at most ``max_mw``. A single wrap per interval is assumed -- a 32-bit counter at
    10 W wraps every 430 s, far longer than any sampling period. A decrease nothing explains
    (a 64-bit counter going back, a driver reload) returns None and the reason.
    """
    if new >= old:
        return new - old, ""
    for width in WRAP_WIDTHS:
        if old < width and new < width:
            delta = new + width - old
            if dt_ns > 0 and delta * 1e6 <= max_mw * dt_ns:
                return delta, ""
    return None, (
        f"energy counter went back from {old} to {new} uJ, not a 32/64-bit wrap under "
        f"{max_mw:g} mW over {dt_ns / 1e6:.3f} ms; this interval is lost, counting restarts"
    )


class EnergyCounter:
    """One cumulative µJ counter: a monotone wrap-corrected total and the mean power between
    successive reads.

    The total starts at the counter's first raw value, so it mirrors the hardware counter until
    the first wrap. When ``unwrap`` cannot explain a step the read is an error, the total is
    kept (that interval counts as 0: unknown, and never a negative or huge step for the window
    integrals downstream) and the next delta is taken from the new raw value.
    """

    def __init__(self, unwrap: Unwrap) -> None:
        self._unwrap = unwrap
        self.raw: Optional[int] = None
        self.t_ns = 0
        self.total = 0

    def update(self, raw: int, t_ns: int) -> Tuple[Optional[int], Optional[float], str]:
        """(total µJ, mean mW since the previous update, error) for a new raw value."""
        if self.raw is None:
            self.raw, self.t_ns, self.total = raw, t_ns, raw
            return self.total, None, ""
        dt_ns = t_ns - self.t_ns
        delta, why = self._unwrap(self.raw, raw, dt_ns)
        self.raw, self.t_ns = raw, t_ns
        if delta is None:
            return None, None, why
        self.total += delta
        return self.total, mean_mw(delta, dt_ns), ""


class CounterReads:
    """The raw counter values of one :meth:`PowerSource._read_rails`, held until :meth:`read`
    knows the reading's timestamp: mean power is ΔE over the difference of the very ``t_ns``
    values the caller sees."""

    def __init__(self) -> None:
        self.counters: Dict[int, EnergyCounter] = {}
        self.pending: Dict[int, int] = {}

    def settle(self, reading: Reading, rails: List[Rail]) -> None:
        if reading.uj is None:
            reading.uj = [None] * len(rails)
        for k, raw in self.pending.items():
            total, mw, error = self.counters[k].update(raw, reading.t_ns)
            reading.uj[k] = total
            reading.mw[k] = mw
            if error:
                reading.errors[rails[k].name] = error
        self.pending.clear()


# ---------------------------------------------------------------------------------------------
# Discovery: pure functions over names, then thin I/O.


def channels_in(filenames: List[str]) -> List[Tuple[str, int]]:
    """``[("power", 1), ("power", 2), ("energy", 1)]``: the channel files in a directory
    listing, power before energy, by channel number (``power10`` after ``power2``)."""
    found = []
    for filename in filenames:
        m = CHANNEL_FILE.match(filename)
        if m:
            found.append((m.group(1), int(m.group(2))))
    return sorted(found, key=lambda c: (c[0] != "power", c[1]))


def rail_names(
    device: str, channels: List[Tuple[str, int]], labels: Dict[Tuple[str, int], str]
) -> List[str]:
    """The label of each channel, else ``<device>_<kind><K>``. A name given twice (``power1``
    and ``energy1`` both labelled ``VDD_IN`` is common) becomes ``<label>:<kind><K>`` on every
    occurrence, so two series never merge."""
    names = [labels.get(c) or f"{device}_{c[0]}{c[1]}" for c in channels]
    return [
        f"{name}:{kind}{k}" if names.count(name) > 1 else name
        for name, (kind, k) in zip(names, channels)
    ]


def source_names(devices: List[Tuple[str, str]]) -> List[str]:
    """``hwmon:<name>`` for each (real path, name); devices sharing a name get ``:0``, ``:1``
    ... in the order of their real paths (stable across boots, unlike hwmon numbers)."""
    by_name: Dict[str, List[str]] = {}
    for path, name in devices:
        by_name.setdefault(name, []).append(path)
    out = []
    for path, name in devices:
        paths = sorted(by_name[name])
        out.append(f"hwmon:{name}" if len(paths) == 1 else f"hwmon:{name}:{paths.index(path)}")
    return out


@dataclass
class _Channel:
    rail: Rail
    attr: Attr
    label: Optional[str]


class HwmonSource(PowerSource):
    """One hwmon device's ``power*_input`` and ``energy*_input`` files."""

    kind = "hwmon"
    method = "measured"
    # The generic reader does not know the driver's averaging; update_interval is logged.
    tau_s = 0.0

    def __init__(
        self,
        name: str,
        path: str,
        device_name: str,
        channels: List[_Channel],
        max_plausible_mw: float = MAX_PLAUSIBLE_MW,
    ) -> None:
        self.name = name
        self.path = path
        self.device_name = device_name
        self._channels = channels
        self.rails = [c.rail for c in channels]
        self.max_plausible_mw = max_plausible_mw
        self._has_energy = any(r.kind == "energy" for r in self.rails)
        self._counts = CounterReads()
        for k, rail in enumerate(self.rails):
            if rail.kind == "energy":
                self._counts.counters[k] = EnergyCounter(self._unwrap)

    def _unwrap(self, old: int, new: int, dt_ns: int) -> Tuple[Optional[int], str]:
        return hwmon_energy_delta(old, new, dt_ns, self.max_plausible_mw)

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        interval = read_text(os.path.join(self.path, "update_interval"))
        d.update(
            {
                "path": self.path,
                "hwmon_name": self.device_name,
                "rails": [
                    {
                        "name": c.rail.name,
                        "kind": c.rail.kind,
                        "file": os.path.basename(c.attr.path),
                        "label": c.label,
                    }
                    for c in self._channels
                ],
                "update_interval_ms": _int_or_text(interval),
            }
        )
        if self._has_energy:
            d["energy_wrap"] = HWMON_WRAP_RULE
            d["max_plausible_mw"] = self.max_plausible_mw
        return d

    def read(self, full: bool = False) -> Reading:
        reading = super().read(full)
        if self._has_energy:
            self._counts.settle(reading, self.rails)
        return reading

    def _read_rails(self, full: bool) -> Reading:
        mw: List[Optional[float]] = [None] * len(self._channels)
        errors: Dict[str, str] = {}
        for k, channel in enumerate(self._channels):
            try:
                value = channel.attr.read_int()
            except ReadError as e:
                errors[channel.rail.name] = str(e)
                continue
            if channel.rail.kind == "power":
                mw[k] = value / 1000.0
            elif value < 0 or value >= WRAP_WIDTHS[-1]:
                errors[channel.rail.name] = f"{channel.attr.path}: not a 64-bit counter: {value}"
            else:
                self._counts.pending[k] = value
        uj: Optional[List[Optional[float]]] = [None] * len(mw) if self._has_energy else None
        return Reading(0, 0, mw, errors, uj=uj)

    def close(self) -> None:
        for channel in self._channels:
            channel.attr.close()


def _int_or_text(text: Optional[str]) -> Any:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def _open_device(path: str, name: str, source_name: str, max_mw: float) -> HwmonSource:
    try:
        listing = os.listdir(path)
    except OSError:
        listing = []
    chans = channels_in(listing)
    labels: Dict[Tuple[str, int], str] = {}
    for kind, k in chans:
        label = read_text(os.path.join(path, f"{kind}{k}_label"))
        if label:
            labels[(kind, k)] = label
    names = rail_names(name, chans, labels)
    channels = [
        _Channel(
            Rail(rail, f"{os.path.basename(path)}/{kind}{k}_input", kind),
            Attr(os.path.join(path, f"{kind}{k}_input")),
            labels.get((kind, k)),
        )
        for rail, (kind, k) in zip(names, chans)
    ]
    return HwmonSource(source_name, path, name, channels, max_mw)


def discover(sysfs_root: str = "/", **options: Any) -> List[PowerSource]:
    """One source per hwmon device with power or energy files (not ``ina3221``), or [].

    Option ``max_plausible_mw`` bounds the mean power a counter wrap may imply; other options
    are for other backends and ignored.
    """
    max_mw = float(options.get("max_plausible_mw") or MAX_PLAUSIBLE_MW)
    devices: List[Tuple[str, str]] = []  # (real path, name)
    for entry in find(sysfs_root, CLASS_GLOB):
        name = read_text(os.path.join(entry, "name"))
        if not name or name in SKIP_NAMES:
            continue
        try:
            listing = os.listdir(entry)
        except OSError:
            continue
        if channels_in(listing):
            devices.append((os.path.realpath(entry), name))
    devices.sort()
    names = source_names(devices)
    return [_open_device(path, name, sname, max_mw) for (path, name), sname in zip(devices, names)]
