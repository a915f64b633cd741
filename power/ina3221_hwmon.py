"""INA3221 through the mainline hwmon driver ``ina3221`` (JetPack 5/6 on Xavier and Orin; a
Raspberry Pi with a breakout).

Layout (power.md §3): ``/sys/bus/i2c/drivers/ina3221/<bus>-00<addr>/hwmon/hwmon<N>/`` and
``/sys/class/hwmon/hwmon<N>`` whose ``name`` is ``ina3221``; channels K = 1, 2, 3 with
``inK_label``, bus voltage ``inK_input`` (mV) and ``currK_input`` (mA). There is no power file:
P = mV·mA/1000 from two register reads. Labels ``NC`` are not connected; ``in7`` (the shunt
sum) is never a rail. A channel without a label (a Pi whose chip was instantiated by hand) is
named by the configuration's ``rail_names``, else ``<chip>/in<K>``.

The driver's ``samples``, ``update_interval`` and ``shuntK_resistor`` are read and reported with
every figure: they decide how smooth and how lagged the readings are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from power.errors import ReadError
from power.source import PowerSource, Rail, Reading, make_rail_names_unique
from power.sysfs import Attr, find, read_text

DRIVER_GLOB = "/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*"
CLASS_GLOB = "/sys/class/hwmon/hwmon*"
CHANNELS = (1, 2, 3)
# After probe the driver leaves the chip at 1 sample and 1.1 ms conversions: a fresh value every
# 6.6 ms for three channels (power.md §3).
FALLBACK_INTERVAL_MS = 6.6


def _int_or_none(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def time_constant_s(samples: Optional[int], update_interval_ms: Optional[int]) -> float:
    """A conservative sensor time constant.

    The chip averages as a running IIR over ``samples`` conversion cycles. What
    ``update_interval`` reports depends on the kernel: one cycle on current mainline and the Pi,
    ``samples`` cycles on older kernels (L4T R35). Multiplying by ``samples`` is right for the
    first and an over-estimate for the second -- the safe side, since energy windows are made
    20 time constants long.
    """
    interval = update_interval_ms if update_interval_ms else FALLBACK_INTERVAL_MS
    return max(samples or 1, 1) * interval / 1000.0


@dataclass
class _Channel:
    rail: Rail
    voltage: Attr
    current: Attr
    name_source: str


@dataclass
class _Chip:
    chip_id: str
    path: str
    samples: Optional[int]
    update_interval_ms: Optional[int]
    shunt_uohm: Dict[str, Optional[int]]
    unlabelled: List[int] = field(default_factory=list)
    channels: List[_Channel] = field(default_factory=list)


class Ina3221HwmonSource(PowerSource):
    kind = "ina3221-hwmon"
    name = "ina3221"

    def __init__(self, chips: List[_Chip], tau_s: Optional[float] = None) -> None:
        self.chips = chips
        self._channels = [ch for chip in chips for ch in chip.channels]
        self.rails = [ch.rail for ch in self._channels]
        if tau_s is None:
            tau_s = max(time_constant_s(c.samples, c.update_interval_ms) for c in chips)
            self.tau_source = "samples x update_interval"
        else:
            self.tau_source = "config"
        self.tau_s = tau_s

    def describe(self) -> Dict[str, Any]:
        info = super().describe()
        info.update(
            driver="ina3221 (hwmon)",
            tau_s=self.tau_s,
            tau_source=self.tau_source,
            chips=[
                {
                    "chip": chip.chip_id,
                    "path": chip.path,
                    "samples": chip.samples,
                    "update_interval_ms": chip.update_interval_ms,
                    "shunt_resistor_uohm": chip.shunt_uohm,
                    "channels": {ch.rail.where: ch.rail.name for ch in chip.channels},
                    "name_sources": {ch.rail.name: ch.name_source for ch in chip.channels},
                    "unlabelled_channels": chip.unlabelled,
                }
                for chip in self.chips
            ],
        )
        return info

    def _read_rails(self, full: bool) -> Reading:
        mw: List[Optional[float]] = []
        mv: List[Optional[float]] = []
        ma: List[Optional[float]] = []
        errors: Dict[str, str] = {}
        for ch in self._channels:
            try:
                volts = ch.voltage.read_int()
                amps = ch.current.read_int()
            except ReadError as e:
                mw.append(None)
                mv.append(None)
                ma.append(None)
                errors[ch.rail.name] = str(e)
                continue
            mw.append(volts * amps / 1000.0)
            mv.append(float(volts))
            ma.append(float(amps))
        return Reading(0, 0, mw, errors, mv, ma)

    def close(self) -> None:
        for ch in self._channels:
            ch.voltage.close()
            ch.current.close()


def _chip_id(hwmon_dir: str) -> str:
    """``.../1-0040/hwmon/hwmon3`` -> ``1-0040`` (the I2C client the hwmon device hangs off)."""
    real = os.path.realpath(hwmon_dir)
    return os.path.basename(os.path.dirname(os.path.dirname(real)))


def _open_chip(path: str, configured: Mapping[str, Sequence[str]]) -> _Chip:
    chip_id = _chip_id(path)
    chip = _Chip(
        chip_id,
        os.path.realpath(path),
        _int_or_none(read_text(os.path.join(path, "samples"))),
        _int_or_none(read_text(os.path.join(path, "update_interval"))),
        {
            f"shunt{k}": _int_or_none(read_text(os.path.join(path, f"shunt{k}_resistor")))
            for k in CHANNELS
        },
    )
    names = configured.get(chip_id)
    for k in CHANNELS:
        if not os.path.exists(os.path.join(path, f"in{k}_input")):
            continue
        if read_text(os.path.join(path, f"in{k}_enable")) == "0":
            continue
        label = read_text(os.path.join(path, f"in{k}_label"))
        if names is not None and k - 1 < len(names):
            name, source = names[k - 1], "config"
        elif label:
            name, source = label, "sysfs"
        else:
            name, source = f"{chip_id}/in{k}", "unnamed"
            chip.unlabelled.append(k)
        if name == "NC":
            continue
        chip.channels.append(
            _Channel(
                Rail(name, f"{chip_id}/in{k}", "vi"),
                Attr(os.path.join(path, f"in{k}_input")),
                Attr(os.path.join(path, f"curr{k}_input")),
                source,
            )
        )
    return chip


def hwmon_dirs(sysfs_root: str) -> List[str]:
    """Every ina3221 hwmon directory, found through the driver and through the hwmon class,
    each once (by its real path)."""
    found: Dict[str, str] = {}
    for path in find(sysfs_root, DRIVER_GLOB):
        found.setdefault(os.path.realpath(path), path)
    for path in find(sysfs_root, CLASS_GLOB):
        if read_text(os.path.join(path, "name")) == "ina3221":
            found.setdefault(os.path.realpath(path), path)
    return [found[real] for real in sorted(found, key=lambda r: _chip_id(r))]


def discover(
    sysfs_root: str = "/",
    rail_names: Optional[Mapping[str, Sequence[str]]] = None,
    tau_s: Optional[float] = None,
) -> List[Ina3221HwmonSource]:
    """The board's ``ina3221`` hwmon chips as one source, or [] when there are none."""
    chips = [_open_chip(p, rail_names or {}) for p in hwmon_dirs(sysfs_root)]
    chips = [c for c in chips if c.channels]
    if not chips:
        return []
    make_rail_names_unique([(chip.chip_id, ch) for chip in chips for ch in chip.channels])
    return [Ina3221HwmonSource(chips, tau_s)]
