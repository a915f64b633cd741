"""INA3221 through NVIDIA's JetPack 4 IIO driver ``ina3221x`` (TX1, TX2, Nano, Xavier on JP4).

Layout (power.md §2): ``/sys/bus/i2c/drivers/ina3221x/<bus>-00<addr>/iio:device<N>/`` (older L4T:
``iio_device``), channels K = 0, 1, 2, power straight from ``in_powerK_input`` in mW (one
coherent V·I read in the kernel), current and voltage from ``in_currentK_input`` (mA) and
``in_voltageK_input`` (mV).

``rail_name_K`` is mode 0600 in the R32 driver, so a non-root agent cannot read the names; then
the configuration's ``rail_names`` and, failing that, the board's known layout
(:data:`power.boards.IIO_RAIL_NAMES`) name the channels, and ``describe()`` says where each
name came from. ``running_mode`` 0 means triggered mode, where every read powers the chip up and
down (slow, may fail): it is reported, and with ``fix_running_mode`` (root) switched to
continuous for the source's lifetime and restored on close.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from power.boards import IIO_RAIL_NAMES
from power.errors import ReadError
from power.source import PowerSource, Rail, Reading, make_rail_names_unique
from power.sysfs import Attr, find, read_text

DRIVER_GLOBS = (
    "/sys/bus/i2c/drivers/ina3221x/*/iio:device*",
    "/sys/bus/i2c/drivers/ina3221x/*/iio_device",
)
CHANNELS = (0, 1, 2)
# Reference power.md §2: the R32 device trees average 64-512 conversions, an IIR with a time
# constant of about 0.4 s (an estimate until measured on the board with a step response).
DEFAULT_TAU_S = 0.4
CHIP_RE = re.compile(r"^(\d+)-([0-9a-fA-F]{4})$")


def chip_address(chip_id: str) -> Optional[int]:
    """``"0-0041"`` -> 0x41."""
    match = CHIP_RE.match(chip_id)
    return int(match.group(2), 16) if match else None


def name_channel(
    chip_id: str,
    channel: int,
    sysfs_name: Optional[str],
    configured: Mapping[str, Sequence[str]],
    board: Optional[str],
) -> Tuple[Optional[str], str]:
    """(rail name, where the name came from) for one channel; name None = not connected."""
    names = configured.get(chip_id)
    if names is not None and channel < len(names):
        return (None if names[channel] == "NC" else names[channel]), "config"
    if sysfs_name:
        return (None if sysfs_name == "NC" else sysfs_name), "sysfs"
    known = IIO_RAIL_NAMES.get(board or "", {}).get(chip_address(chip_id) or -1)
    if known is not None:
        return known[channel], f"board map ({board})"
    return f"{chip_id}/ch{channel}", "unnamed"


@dataclass
class _Channel:
    rail: Rail
    power: Attr
    voltage: Attr
    current: Attr
    name_source: str


@dataclass
class _Chip:
    chip_id: str
    path: str
    running_mode: Optional[int]
    restore_mode: Optional[int] = None
    channels: List[_Channel] = field(default_factory=list)


class Ina3221IioSource(PowerSource):
    kind = "ina3221-iio"
    name = "ina3221x"

    def __init__(self, chips: List[_Chip], tau_s: Optional[float] = None) -> None:
        self.chips = chips
        self._channels = [ch for chip in chips for ch in chip.channels]
        self.rails = [ch.rail for ch in self._channels]
        self.tau_s = DEFAULT_TAU_S if tau_s is None else tau_s
        self.tau_source = "estimate (power.md §2)" if tau_s is None else "config"

    def describe(self) -> Dict[str, Any]:
        info = super().describe()
        info.update(
            driver="ina3221x (IIO, JetPack 4)",
            tau_s=self.tau_s,
            tau_source=self.tau_source,
            chips=[
                {
                    "chip": chip.chip_id,
                    "path": chip.path,
                    "running_mode": chip.running_mode,
                    "running_mode_forced": chip.restore_mode is not None,
                    "channels": {ch.rail.where: ch.rail.name for ch in chip.channels},
                    "name_sources": {ch.rail.name: ch.name_source for ch in chip.channels},
                }
                for chip in self.chips
            ],
        )
        return info

    def _read_rails(self, full: bool) -> Reading:
        mw: List[Optional[float]] = []
        errors: Dict[str, str] = {}
        for ch in self._channels:
            try:
                mw.append(float(ch.power.read_int()))
            except ReadError as e:
                mw.append(None)
                errors[ch.rail.name] = str(e)
        reading = Reading(0, 0, mw, errors)
        if full:
            reading.mv = [_maybe(ch.voltage) for ch in self._channels]
            reading.ma = [_maybe(ch.current) for ch in self._channels]
        return reading

    def close(self) -> None:
        for ch in self._channels:
            for attr in (ch.power, ch.voltage, ch.current):
                attr.close()
        for chip in self.chips:
            if chip.restore_mode is not None:
                _write_mode(chip.path, chip.restore_mode)
                chip.restore_mode = None


def _maybe(attr: Attr) -> Optional[float]:
    try:
        return float(attr.read_int())
    except ReadError:
        return None


def _mode(text: Optional[str]) -> Optional[int]:
    """``running_mode``'s value; None when unreadable or not a number (``"--1"``, and ``"²"``,
    which str.isdigit() accepts and int() refuses)."""
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _write_mode(path: str, mode: int) -> bool:
    try:
        with open(os.path.join(path, "running_mode"), "w") as f:
            f.write(f"{mode}\n")
        return True
    except OSError:
        return False


def _open_chip(
    path: str,
    configured: Mapping[str, Sequence[str]],
    board: Optional[str],
    fix_running_mode: bool,
) -> _Chip:
    chip_id = os.path.basename(os.path.dirname(path))
    mode = _mode(read_text(os.path.join(path, "running_mode")))
    chip = _Chip(chip_id, path, mode)
    if fix_running_mode and mode == 0 and _write_mode(path, 1):
        chip.restore_mode = 0
    for k in CHANNELS:
        power_path = os.path.join(path, f"in_power{k}_input")
        if not os.path.exists(power_path):
            continue
        sysfs_name = read_text(os.path.join(path, f"rail_name_{k}"))
        name, source = name_channel(chip_id, k, sysfs_name, configured, board)
        if name is None:
            continue
        chip.channels.append(
            _Channel(
                Rail(name, f"{chip_id}/ch{k}", "power"),
                Attr(power_path),
                Attr(os.path.join(path, f"in_voltage{k}_input")),
                Attr(os.path.join(path, f"in_current{k}_input")),
                source,
            )
        )
    return chip


def discover(
    sysfs_root: str = "/",
    rail_names: Optional[Mapping[str, Sequence[str]]] = None,
    board: Optional[str] = None,
    fix_running_mode: bool = False,
    tau_s: Optional[float] = None,
) -> List[Ina3221IioSource]:
    """The board's ``ina3221x`` chips as one source, or [] when there are none."""
    paths = sorted({p for pattern in DRIVER_GLOBS for p in find(sysfs_root, pattern)})
    chips = [_open_chip(p, rail_names or {}, board, fix_running_mode) for p in paths]
    chips = [c for c in chips if c.channels]
    if not chips:
        return []
    make_rail_names_unique([(chip.chip_id, ch) for chip in chips for ch in chip.channels])
    return [Ina3221IioSource(chips, tau_s)]
