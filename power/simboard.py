"""Simulated boards: a faithful INA3221 sysfs tree written under a root directory, driven over time.

The power readers (:mod:`power.ina3221_iio`, :mod:`power.ina3221_hwmon`) take every path
relative to a ``sysfs_root``. Pointed at a tree written here they run unmodified, on any
machine, against values whose ground truth is known exactly.

What is laid out (reference ``power.md`` §2, §3, §3.1, §5):

* JetPack 4 boards (``tx2-jp4``, ``nano-jp4``, ``agx-xavier-jp4``): NVIDIA's ``ina3221x`` IIO
  driver, channels 0..2, ``in_powerK_input`` in mW, names in ``rail_name_K`` (mode 0600).
* JetPack 5 boards (``xavier-nx-jp5``, ``orin-nx-jp5``, ``agx-orin-jp5``) and ``rpi-ina3221``:
  the mainline ``ina3221`` hwmon driver, channels 1..3, no power file (readers compute mV x mA);
  the Pi's chip was instantiated by hand, so it has no labels and the driver's default shunt.
* the links the kernel makes (``/sys/bus/i2c/{drivers,devices}``, ``/sys/class/hwmon``,
  ``/sys/bus/iio/devices``) as relative symlinks that resolve inside the root, the device-tree
  model, and a marker file (``.halofarm-simboard.json``) that says the tree is simulated.
* with ``shuffle_seed``: device numbers in a random order with unrelated hwmon devices in
  between, so a reader that hard-codes ``hwmon0`` or ``iio:device1`` fails here as on a board.

Values are rewritten in place (same inode: ``pwrite`` then ``ftruncate``) because readers keep
the files open and ``pread`` them at offset 0, as they must on real sysfs.

Time-varying power (:class:`Constant`, :class:`Square`, :class:`FollowLoad`) is written by
:func:`drive`, normally in its own process (:class:`Driver`, or ``python -m power.simboard
drive``) so that the reader's GIL cannot shift the writer's edges. The driver logs every value
change; :func:`log_energy_mj` integrates that log and :func:`square_energy_mj` a square wave
analytically: the energy that was really in the files, for tests to compare readers against.

Python 3.8 compatible; stdlib + psutil.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from power.errors import PowerError
from power.sysfs import SIM_MARKER as MARKER

MARKER_VERSION = 1
DEFAULT_LOG = ".halofarm-simboard.log"
IIO = "ina3221x"
HWMON = "ina3221"
IIO_DIR_NAMES = ("iio:device", "iio_device")

# The real driver's reading files are 0444. The simulator owns and rewrites them, so they are
# 0644 here: still readable by anyone, writable by the simulator even when it does not run as
# root. Everything the simulator never rewrites keeps the driver's mode.
MODE_READING = 0o644
MODE_RO = 0o444
MODE_ROOT = 0o600  # IIO names, limits, running_mode: root-only in the 2018 R32 driver
MODE_RW = 0o644  # hwmon configuration files
MODE_WO = 0o200  # the driver directory's bind / unbind / uevent

# INA3221 reset value of the limit registers (0x7FF8 -> 4095 x 40 µV = 163.8 mV across the
# shunt) and of the shunt-sum limit (0x7FFE -> 16383 x 40 µV); the drivers show them in mA.
RESET_LIMIT_UV = 163_800
RESET_SUM_LIMIT_UV = 655_320
# Mainline's update_interval for 3 channels at the reset conversion times: 3 x (1.1 + 1.1) ms,
# shown as an integer number of ms (current mainline drops the samples factor, power.md §3).
UPDATE_INTERVAL_MS = 6

LOG_FLUSH_NS = 100_000_000
REFRESH_NS = 100_000_000


class SimBoardError(PowerError):
    """The simulated tree cannot do what was asked (wrong root, unknown or removed rail)."""


class DriverError(SimBoardError):
    """The driver process did not start, or exited with an error."""


# ---------------------------------------------------------------------------------------------
# Layouts


@dataclass(frozen=True)
class Chip:
    """One INA3221: where it sits, what its channels are called, and their idle operating point."""

    bus: int
    addr: int
    labels: Tuple[Optional[str], Optional[str], Optional[str]]  # None: no label in the DT
    # Bus voltage per channel in mV, on the chip's 8 mV grid (3.3 V rails read 3304 mV).
    # 0 mV = nothing connected (AGX Orin's NC inputs).
    volts: Tuple[int, int, int]
    idle_mw: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    shunt_uohm: int = 5000

    @property
    def dev_name(self) -> str:
        return f"{self.bus}-{self.addr:04x}"


@dataclass(frozen=True)
class BoardLayout:
    key: str
    model: str  # device-tree model string
    driver: str  # IIO ("ina3221x") or HWMON ("ina3221")
    chips: Tuple[Chip, ...]
    # bus -> the I2C controller's directory under /sys/devices (kernel-version specific)
    controllers: Tuple[Tuple[int, str], ...]
    adapter_name: str = "Tegra I2C adapter"

    def controller(self, bus: int) -> str:
        return dict(self.controllers)[bus]


def _chip(
    bus: int,
    addr: int,
    labels: str,
    volts: Tuple[int, int, int],
    idle_mw: Tuple[float, float, float],
    shunt_uohm: int = 5000,
) -> Chip:
    """A table row: ``labels`` are three names separated by spaces, ``-`` for no label."""
    names = tuple(None if n == "-" else n for n in labels.split())
    if len(names) != 3:
        raise ValueError(f"a chip has 3 channels: {labels!r}")
    return Chip(bus, addr, names, volts, idle_mw, shunt_uohm)  # type: ignore[arg-type]


# Rail names per power.md §5. Sub-rail voltages and idle powers are plausible values, not
# measurements (idle powers near the tegrastats samples of power.md §9 where there are some).
_TX2 = (
    _chip(0, 0x40, "VDD_SYS_GPU VDD_SYS_SOC VDD_4V0_WIFI", (19000, 19000, 4000), (150, 600, 40)),
    _chip(0, 0x41, "VDD_IN VDD_SYS_CPU VDD_SYS_DDR", (19000, 19000, 19000), (2100, 300, 500)),
    # Dev-kit carrier chips; their real bus is not verified (power.md §5), bus 0 here.
    _chip(0, 0x42, "VDD_MUX VDD_5V0_IO_SYS VDD_3V3_SYS", (19000, 5000, 3304), (1800, 700, 400)),
    _chip(0, 0x43, "VDD_3V3_IO_SLP VDD_1V8_IO VDD_3V3_SYS_M2", (3304, 1800, 3304), (150, 40, 10)),
)
_NANO = (_chip(6, 0x40, "POM_5V_IN POM_5V_GPU POM_5V_CPU", (5000, 5000, 5000), (1240, 40, 200)),)
_AGX_XAVIER = (
    _chip(1, 0x40, "GPU CPU SOC", (19000, 19000, 19000), (150, 385, 1200)),
    _chip(1, 0x41, "CV VDDRQ SYS5V", (19000, 19000, 5000), (0, 192, 1500)),
)
# The Xavier NX module is fed 5 V (its carrier converts the 19 V adapter's output).
_XAVIER_NX = (_chip(1, 0x40, "VDD_IN VDD_CPU_GPU_CV VDD_SOC", (5000,) * 3, (4824, 518, 1475)),)
_ORIN_NX = (_chip(1, 0x40, "VDD_IN VDD_CPU_GPU_CV VDD_SOC", (19000,) * 3, (5200, 600, 1500)),)
_AGX_ORIN = (
    _chip(1, 0x40, "VDD_GPU_SOC VDD_CPU_CV VIN_SYS_5V0", (19000, 19000, 5000), (2800, 800, 3000)),
    # NC inputs: nothing connected, 0 V.
    _chip(1, 0x41, "NC VDDQ_VDD2_1V8AO NC", (0, 5000, 0), (0, 600, 0)),
)
# Instantiated with new_device: no labels, the driver's default 10 mΩ shunts (power.md §3.1).
_RPI = (_chip(1, 0x40, "- - -", (5000, 5000, 5000), (2700, 0, 0), shunt_uohm=10000),)

_JP5_I2C = ((1, "platform/c240000.i2c"),)
LAYOUTS: Dict[str, BoardLayout] = {
    layout.key: layout
    for layout in (
        BoardLayout("tx2-jp4", "NVIDIA Jetson TX2 Developer Kit", IIO, _TX2, ((0, "3160000.i2c"),)),
        # Nano's bus 6 is the VI I2C controller under host1x.
        BoardLayout(
            "nano-jp4",
            "NVIDIA Jetson Nano Developer Kit",
            IIO,
            _NANO,
            ((6, "50000000.host1x/546c0000.i2c"),),
        ),
        BoardLayout("agx-xavier-jp4", "Jetson-AGX", IIO, _AGX_XAVIER, ((1, "c240000.i2c"),)),
        BoardLayout(
            "xavier-nx-jp5", "NVIDIA Jetson Xavier NX Developer Kit", HWMON, _XAVIER_NX, _JP5_I2C
        ),
        BoardLayout(
            "orin-nx-jp5",
            "NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
            HWMON,
            _ORIN_NX,
            _JP5_I2C,
        ),
        BoardLayout(
            "agx-orin-jp5", "NVIDIA Jetson AGX Orin Developer Kit", HWMON, _AGX_ORIN, _JP5_I2C
        ),
        BoardLayout(
            "rpi-ina3221",
            "Raspberry Pi 4 Model B Rev 1.4",
            HWMON,
            _RPI,
            ((1, "platform/soc/fe804000.i2c"),),
            "bcm2835 (i2c@7e804000)",
        ),
    )
}

# Unrelated hwmon devices a shuffled tree adds: (name, parent dir under /sys/devices, whether
# the hwmon device sits in a "hwmon/" glue dir and has a "device" link, extra files).
EXTRA_HWMONS: Tuple[Tuple[str, str, bool, Tuple[Tuple[str, bytes], ...]], ...] = (
    ("cpu_thermal", "virtual/thermal/thermal_zone0", False, (("temp1_input", b"45277\n"),)),
    (
        "nvme",
        "pci0000:00/0000:00:01.0/0000:01:00.0/nvme/nvme0",
        False,
        (("temp1_input", b"38850\n"), ("temp1_label", b"Composite\n")),
    ),
    ("pwmfan", "platform/pwm-fan", True, (("pwm1", b"0\n"),)),
)


def channel_id(layout: BoardLayout, chip: Chip, index: int) -> str:
    """Where a channel is, as the readers name it: ``0-0041/ch0`` (IIO, channels from 0) or
    ``1-0040/in1`` (hwmon, channels from 1)."""
    if layout.driver == IIO:
        return f"{chip.dev_name}/ch{index}"
    return f"{chip.dev_name}/in{index + 1}"


def channel_name(layout: BoardLayout, chip: Chip, index: int) -> str:
    """A channel's rail label, or its :func:`channel_id` when it has none or is ``NC``."""
    label = chip.labels[index]
    return label if label and label != "NC" else channel_id(layout, chip, index)


def get_layout(key: str) -> BoardLayout:
    try:
        return LAYOUTS[key]
    except KeyError:
        raise ValueError(
            f"unknown board layout {key!r}; choose one of: {', '.join(sorted(LAYOUTS))}"
        ) from None


def channel_names(layout: str) -> List[str]:
    """Every channel of a layout, chip by chip (NC ones too): the rail index of the drive log."""
    lay = get_layout(layout)
    return [channel_name(lay, chip, i) for chip in lay.chips for i in range(3)]


def rail_names(layout: str) -> List[str]:
    """The rails of a layout: labelled channels by label, unlabelled ones by channel id; ``NC``
    channels left out (they are still addressable by their id)."""
    lay = get_layout(layout)
    return [
        channel_name(lay, chip, i) for chip in lay.chips for i in range(3) if chip.labels[i] != "NC"
    ]


# ---------------------------------------------------------------------------------------------
# Pure file contents


def quantise(driver: str, mv: int, mw: float) -> Tuple[float, int]:
    """(power the files will show in mW, current in mA) for ``mw`` at bus voltage ``mv``.

    The IIO driver has an integer mW file. hwmon has no power file, so its power is what a
    reader computes, mV x mA / 1000, with the current rounded to whole mA.
    """
    if not isinstance(mw, (int, float)) or not math.isfinite(mw) or mw < 0:
        raise ValueError(f"power must be a finite number of mW >= 0, got {mw!r}")
    if mv <= 0:
        if mw != 0:
            raise ValueError(
                "this channel has no bus voltage (nothing connected): only 0 mW can be set"
            )
        return 0.0, 0
    ma = int(round(mw * 1000.0 / mv))
    if driver == IIO:
        return float(int(round(mw))), ma
    return mv * ma / 1000.0, ma


def shunt_uv(ma: int, shunt_uohm: int) -> int:
    return int(round(ma * shunt_uohm / 1000.0))


def limit_ma(limit_uv: int, shunt_uohm: int) -> int:
    """A shunt-voltage limit as the drivers show it in mA (DIV_ROUND_CLOSEST(µV x 1000, µΩ))."""
    return (limit_uv * 1000 + shunt_uohm // 2) // shunt_uohm


def iio_reading_files(k: int, mv: int, ma: int, mw: float, continuous: bool) -> Dict[str, bytes]:
    """One IIO channel's changing files, the power file first (the one readers integrate)."""
    trig_mw, trig_ma = (int(mw), ma) if continuous else (0, 0)
    return {
        f"in_power{k}_input": b"%d\n" % int(mw),
        f"in_current{k}_input": b"%d\n" % ma,
        f"in_voltage{k}_input": b"%d\n" % mv,
        # The trigger files read 0 while the chip is in triggered (powered-down) mode.
        f"in_power{k}_trigger_input": b"%d\n" % trig_mw,
        f"in_current{k}_trigger_input": b"%d\n" % trig_ma,
        f"ui_input_{k}": b"%d %d\n" % (mv, ma),
    }


def reading_mode(name: str) -> int:
    """Mode of a file the simulator rewrites: ``ui_input_K`` stays root-only as in the driver."""
    return MODE_ROOT if name.startswith("ui_input_") else MODE_READING


def iio_static_files(
    k: int, label: Optional[str], mv: int, shunt_uohm: int
) -> Dict[str, Tuple[bytes, int]]:
    crit_ma = limit_ma(RESET_LIMIT_UV, shunt_uohm)
    files = {
        # crit_power_limit: the critical current at this bus voltage (an estimate of the
        # R32 driver's default; DTs may set their own limits).
        f"crit_power_limit_{k}": (b"%d mw\n" % (crit_ma * mv // 1000), MODE_ROOT),
        f"crit_current_limit_{k}": (b"%d ma\n" % crit_ma, MODE_ROOT),
        f"warn_current_limit_{k}": (b"%d ma\n" % crit_ma, MODE_ROOT),
        f"polling_delay_{k}": (b"0 ms\n", MODE_ROOT),
    }
    if label is not None:
        files[f"rail_name_{k}"] = (label.encode() + b"\n", MODE_ROOT)
    return files


def hwmon_reading_files(k: int, mv: int, ma: int, shunt_uohm: int) -> Dict[str, bytes]:
    """One hwmon channel's changing files (K = 1..3), the current first (voltage is constant)."""
    return {
        f"curr{k}_input": b"%d\n" % ma,
        f"in{k}_input": b"%d\n" % mv,
        f"in{k + 3}_input": b"%d\n" % shunt_uv(ma, shunt_uohm),
    }


def hwmon_sum_files(currents_ma: Sequence[int], shunt_uohm: int) -> Dict[str, bytes]:
    """The chip's shunt-sum files: in7 (µV) and curr4 (mA; present because all shunts are
    equal, power.md §3)."""
    total_uv = sum(shunt_uv(ma, shunt_uohm) for ma in currents_ma)
    return {
        "in7_input": b"%d\n" % total_uv,
        "curr4_input": b"%d\n" % int(round(total_uv * 1000.0 / shunt_uohm)),
    }


def hwmon_static_files(
    k: int, label: Optional[str], shunt_uohm: int
) -> Dict[str, Tuple[bytes, int]]:
    crit_ma = limit_ma(RESET_LIMIT_UV, shunt_uohm)
    files = {
        f"in{k}_enable": (b"1\n", MODE_RW),
        f"shunt{k}_resistor": (b"%d\n" % shunt_uohm, MODE_RW),
        f"curr{k}_max": (b"%d\n" % crit_ma, MODE_RW),
        f"curr{k}_crit": (b"%d\n" % crit_ma, MODE_RW),
        f"curr{k}_max_alarm": (b"0\n", MODE_RO),
        f"curr{k}_crit_alarm": (b"0\n", MODE_RO),
    }
    if label is not None:
        files[f"in{k}_label"] = (label.encode() + b"\n", MODE_RO)
    return files


def hwmon_chip_files(shunt_uohm: int) -> Dict[str, Tuple[bytes, int]]:
    return {
        "name": (HWMON.encode() + b"\n", MODE_RO),
        "in7_label": (b"sum of shunt voltages\n", MODE_RO),
        # Probe resets the chip to 1 sample (power.md §3).
        "samples": (b"1\n", MODE_RW),
        "update_interval": (b"%d\n" % UPDATE_INTERVAL_MS, MODE_RW),
        "curr4_crit": (b"%d\n" % limit_ma(RESET_SUM_LIMIT_UV, shunt_uohm), MODE_RW),
        "curr4_crit_alarm": (b"0\n", MODE_RO),
    }


def device_numbers(count: int, spare: int, seed: Optional[int]) -> List[int]:
    """Kernel device numbers for ``count`` devices, then ``spare`` others.

    In order without a seed. With one, a seeded permutation of ``range(count + spare)`` in
    which the first ``count`` never equal the unseeded numbering: a test that passes a seed
    must see numbers a hard-coding reader gets wrong.
    """
    total = count + spare
    if seed is None:
        return list(range(total))
    perm = random.Random(seed).sample(range(total), total)
    if total > 1 and count > 0 and perm[:count] == list(range(count)):
        perm = perm[1:] + perm[:1]
    return perm


def parse_marker(data: str) -> Dict[str, Any]:
    try:
        meta = json.loads(data)
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("version") != MARKER_VERSION:
        raise SimBoardError(
            f"{MARKER} is not a version-{MARKER_VERSION} simulated-board marker; recreate the "
            "tree with `python -m power.simboard create` in an empty directory"
        )
    if meta.get("layout") not in LAYOUTS:
        raise SimBoardError(f"{MARKER} names an unknown layout {meta.get('layout')!r}")
    return meta


# ---------------------------------------------------------------------------------------------
# The tree


def _put(path: str, data: bytes, mode: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)  # explicit, whatever the umask
    finally:
        os.close(fd)


def _read_int(path: str) -> Optional[int]:
    """The integer on a file's first line; None for garbage. OSError if the file is gone."""
    with open(path, "rb") as f:
        line = f.read(64).split(b"\n", 1)[0]
    try:
        return int(line)
    except ValueError:
        return None


def _link(link: str, target: str) -> None:
    """A relative symlink, as the kernel makes them: it resolves inside the root wherever the
    root is."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(os.path.relpath(target, os.path.dirname(link)), link)


def _check_root(root: str) -> None:
    if os.path.realpath(root) == os.path.realpath(os.sep):
        raise ValueError("refusing to write a simulated board over / ; pass a temporary directory")
    if os.path.exists(os.path.join(root, MARKER)):
        raise SimBoardError(
            f"{root} already holds a simulated board; use SimBoard.attach({root!r}) or an "
            "empty directory"
        )
    for top in ("sys", "proc"):
        if os.path.exists(os.path.join(root, top)):
            raise SimBoardError(
                f"{root} already has a {top}/ directory that is not a simulated board; "
                "pass an empty directory"
            )


@dataclass
class _ChipState:
    chip: Chip
    number: int  # iio:device / hwmon number
    dev_dir: str
    data_dir: str  # the iio or hwmon directory holding the attributes
    continuous: bool = True


@dataclass
class _Channel:
    name: str
    label: Optional[str]
    chip: int  # index into SimBoard._chips
    index: int  # 0..2
    mv: int
    shunt_uohm: int
    ma: int = 0
    mw: float = 0.0
    removed: bool = False


class SimBoard:
    """A simulated board's sysfs tree under ``root``: :meth:`create` lays it out with idle
    values, :meth:`attach` reopens one another process created, :meth:`set_power` changes a
    rail in place. Rails are named by label, or by channel id (``1-0040/in1``) where there is
    no label (the Pi) or it is ``NC``."""

    def __init__(
        self,
        root: str,
        layout: str,
        shuffle_seed: Optional[int] = None,
        iio_dir_name: str = "iio:device",
        running_mode: int = 1,
    ) -> None:
        self.layout = get_layout(layout)
        if iio_dir_name not in IIO_DIR_NAMES:
            raise ValueError(f"iio_dir_name must be one of {IIO_DIR_NAMES}, got {iio_dir_name!r}")
        if running_mode not in (0, 1):
            raise ValueError(f"running_mode must be 0 (triggered) or 1, got {running_mode!r}")
        if shuffle_seed is not None and not isinstance(shuffle_seed, int):
            raise ValueError(f"shuffle_seed must be an int or None, got {shuffle_seed!r}")
        self.root = os.path.abspath(root)
        self.shuffle_seed = shuffle_seed
        self.iio_dir_name = iio_dir_name
        self.running_mode = running_mode
        self.driver = self.layout.driver
        self._fds: Dict[str, int] = {}
        self._chips = self._place_chips()
        self._extras = self._place_extras()
        self._channels: List[_Channel] = []
        for ci, state in enumerate(self._chips):
            chip = state.chip
            for i in range(3):
                name = channel_name(self.layout, chip, i)
                mw, ma = quantise(self.driver, chip.volts[i], chip.idle_mw[i])
                self._channels.append(
                    _Channel(name, chip.labels[i], ci, i, chip.volts[i], chip.shunt_uohm, ma, mw)
                )
        self._by_name = {ch.name: ch for ch in self._channels}
        for ch in self._channels:  # ids address every channel, labelled or not
            self._by_name.setdefault(
                channel_id(self.layout, self._chips[ch.chip].chip, ch.index), ch
            )

    # -- geometry -------------------------------------------------------------------------

    def _sys(self, *parts: str) -> str:
        return os.path.join(self.root, "sys", *parts)

    def _adapter_dir(self, bus: int) -> str:
        return self._sys("devices", self.layout.controller(bus), f"i2c-{bus}")

    def _place_chips(self) -> List[_ChipState]:
        chips = self.layout.chips
        spare = 0
        if self.shuffle_seed is not None:
            # IIO: two numbers more than chips, so even a single chip moves (gaps are real:
            # devices that were unbound); hwmon: the unrelated devices take the others.
            spare = 2 if self.driver == IIO else len(EXTRA_HWMONS)
        numbers = device_numbers(len(chips), spare, self.shuffle_seed)
        states = []
        for chip, n in zip(chips, numbers):
            dev_dir = os.path.join(self._adapter_dir(chip.bus), chip.dev_name)
            if self.driver == IIO:
                leaf = "iio_device" if self.iio_dir_name == "iio_device" else f"iio:device{n}"
                data_dir = os.path.join(dev_dir, leaf)
            else:
                data_dir = os.path.join(dev_dir, "hwmon", f"hwmon{n}")
            states.append(_ChipState(chip, n, dev_dir, data_dir, self.running_mode == 1))
        return states

    def _place_extras(self) -> List[Tuple[int, int]]:
        """(index into EXTRA_HWMONS, hwmon number) of the unrelated devices."""
        if self.shuffle_seed is None:
            return []
        if self.driver == IIO:
            numbers = device_numbers(0, len(EXTRA_HWMONS), self.shuffle_seed)
        else:
            numbers = device_numbers(len(self._chips), len(EXTRA_HWMONS), self.shuffle_seed)
            numbers = numbers[len(self._chips) :]
        return list(enumerate(numbers))

    def _files(self, ch: _Channel) -> Dict[str, bytes]:
        state = self._chips[ch.chip]
        if self.driver == IIO:
            return iio_reading_files(ch.index, ch.mv, ch.ma, ch.mw, state.continuous)
        return hwmon_reading_files(ch.index + 1, ch.mv, ch.ma, ch.shunt_uohm)

    def _sum_files(self, chip_index: int) -> Dict[str, bytes]:
        if self.driver == IIO:
            return {}
        chans = [c for c in self._channels if c.chip == chip_index]
        return hwmon_sum_files([c.ma for c in chans], self._chips[chip_index].chip.shunt_uohm)

    # -- creating and attaching -----------------------------------------------------------

    def create(self) -> SimBoard:
        """Lay out the tree with idle values and the marker; returns self."""
        _check_root(self.root)
        os.makedirs(self.root, exist_ok=True)
        model = self.layout.model.encode() + b"\x00"  # the real file is NUL-terminated
        base = self._sys("firmware", "devicetree", "base")
        _put(os.path.join(base, "model"), model, MODE_RO)
        # /proc/device-tree is a link to the same directory on a board.
        _link(os.path.join(self.root, "proc", "device-tree"), base)
        drivers = self._sys("bus", "i2c", "drivers", self.driver)
        for name in ("bind", "unbind", "uevent"):
            _put(os.path.join(drivers, name), b"", MODE_WO)
        for bus in sorted({c.bus for c in self.layout.chips}):
            adapter = self._adapter_dir(bus)
            _put(os.path.join(adapter, "name"), self.layout.adapter_name.encode() + b"\n", MODE_RO)
            _link(self._sys("bus", "i2c", "devices", f"i2c-{bus}"), adapter)
        for ci, state in enumerate(self._chips):
            self._create_chip(ci, state, drivers)
        for extra, number in self._extras:
            self._create_extra(extra, number)
        for ch in self._channels:  # opens the descriptors the writer keeps
            self._write_channel(ch)
        meta = {
            "layout": self.layout.key,
            "version": MARKER_VERSION,
            "model": self.layout.model,
            "driver": self.driver,
            "shuffle_seed": self.shuffle_seed,
            "iio_dir_name": self.iio_dir_name,
            "running_mode": self.running_mode,
            "rails": self.rails(),
        }
        # Written last: a tree is attachable only once it is complete.
        _put(os.path.join(self.root, MARKER), json.dumps(meta, indent=1).encode(), MODE_RW)
        return self

    def _create_chip(self, ci: int, state: _ChipState, drivers: str) -> None:
        chip = state.chip
        _put(os.path.join(state.dev_dir, "name"), self.driver.encode() + b"\n", MODE_RO)
        _link(os.path.join(state.dev_dir, "driver"), drivers)
        _link(os.path.join(drivers, chip.dev_name), state.dev_dir)
        _link(self._sys("bus", "i2c", "devices", chip.dev_name), state.dev_dir)
        static: Dict[str, Tuple[bytes, int]] = {}
        if self.driver == IIO:
            static["name"] = (IIO.encode() + b"\n", MODE_RO)
            static["running_mode"] = (b"%d\n" % self.running_mode, MODE_ROOT)
            for i in range(3):
                static.update(iio_static_files(i, chip.labels[i], chip.volts[i], chip.shunt_uohm))
            if self.iio_dir_name == "iio:device":
                _link(
                    self._sys("bus", "iio", "devices", f"iio:device{state.number}"), state.data_dir
                )
        else:
            static.update(hwmon_chip_files(chip.shunt_uohm))
            for i in range(3):
                static.update(hwmon_static_files(i + 1, chip.labels[i], chip.shunt_uohm))
            _link(os.path.join(state.data_dir, "device"), state.dev_dir)
            _link(self._sys("class", "hwmon", f"hwmon{state.number}"), state.data_dir)
        for name, (data, mode) in static.items():
            _put(os.path.join(state.data_dir, name), data, mode)
        for ch in self._channels:
            if ch.chip == ci:
                for name, data in self._files(ch).items():
                    _put(os.path.join(state.data_dir, name), data, reading_mode(name))
        for name, data in self._sum_files(ci).items():
            _put(os.path.join(state.data_dir, name), data, MODE_READING)

    def _create_extra(self, extra: int, number: int) -> None:
        name, parent, glue, files = EXTRA_HWMONS[extra]
        parent_dir = self._sys("devices", parent)
        hw = (
            os.path.join(parent_dir, "hwmon", f"hwmon{number}")
            if glue
            else os.path.join(parent_dir, f"hwmon{number}")
        )
        _put(os.path.join(hw, "name"), name.encode() + b"\n", MODE_RO)
        for fname, data in files:
            _put(os.path.join(hw, fname), data, MODE_RO)
        if glue:
            _link(os.path.join(hw, "device"), parent_dir)
        _link(self._sys("class", "hwmon", f"hwmon{number}"), hw)

    @classmethod
    def attach(cls, root: str) -> SimBoard:
        """The board another process created under ``root``, with the values now in its files;
        channels whose files are gone count as removed."""
        try:
            with open(os.path.join(root, MARKER)) as f:
                meta = parse_marker(f.read())
        except OSError:
            raise SimBoardError(
                f"no simulated board under {root} (no {MARKER}); create one with "
                f"`python -m power.simboard create {root} --layout LAYOUT`"
            ) from None
        board = cls(
            root,
            meta["layout"],
            meta.get("shuffle_seed"),
            meta.get("iio_dir_name", "iio:device"),
            meta.get("running_mode", 1),
        )
        board._load()
        return board

    def _load(self) -> None:
        for state in self._chips:
            state.continuous = self._read_mode(state)
        for ch in self._channels:
            data_dir = self._chips[ch.chip].data_dir
            primary = next(iter(self._files(ch)))
            try:
                value = _read_int(os.path.join(data_dir, primary))
            except OSError:
                ch.removed = True
                continue
            if value is None:
                continue  # corrupted: keep the idle value until the next write replaces it
            if self.driver == IIO:
                ch.mw = float(value)
                ch.ma = quantise(IIO, ch.mv, value)[1] if ch.mv > 0 else 0
            else:
                ch.ma, ch.mw = value, ch.mv * value / 1000.0

    # -- writing --------------------------------------------------------------------------

    def _write(self, path: str, data: bytes) -> bool:
        """Rewrite one file in place. Readers keep it open, so never rename: pwrite the new
        content, then cut the old tail (a reader in between sees the new first line)."""
        fd = self._fds.get(path)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                return False  # removed, possibly by another process
            self._fds[path] = fd
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        return True

    def _write_channel(self, ch: _Channel) -> int:
        """Write a channel's files; returns monotonic ns just after its primary file changed."""
        data_dir = self._chips[ch.chip].data_dir
        t_ns = 0
        for name, data in self._files(ch).items():
            self._write(os.path.join(data_dir, name), data)
            if not t_ns:
                t_ns = time.monotonic_ns()
        for name, data in self._sum_files(ch.chip).items():
            self._write(os.path.join(data_dir, name), data)
        return t_ns

    def _read_mode(self, state: _ChipState) -> bool:
        """Whether an IIO chip is in continuous mode now (a reader may have written
        ``running_mode``); negative = automatic, taken as continuous."""
        if self.driver != IIO:
            return True
        try:
            mode = _read_int(os.path.join(state.data_dir, "running_mode"))
        except OSError:
            return True
        return mode is None or mode != 0

    def channel(self, rail: str) -> _Channel:
        ch = self._by_name.get(rail)
        if ch is None:
            raise SimBoardError(
                f"{self.layout.key} has no rail {rail!r}; rails: {', '.join(self.rails())} "
                f"(or a channel id such as {channel_id(self.layout, self.layout.chips[0], 0)})"
            )
        return ch

    def _set(self, ch: _Channel, mw: float, ma: int) -> int:
        ch.mw, ch.ma = mw, ma
        return self._write_channel(ch)

    # -- public ---------------------------------------------------------------------------

    def rails(self) -> List[str]:
        """Rail names (labels; channel ids where unlabelled), NC channels left out."""
        return [ch.name for ch in self._channels if ch.label != "NC"]

    def channels(self) -> List[str]:
        """Every channel name, NC ones too, in the drive log's rail-index order."""
        return [ch.name for ch in self._channels]

    def quantise(self, rail: str, mw: float) -> float:
        """The power ``set_power(rail, mw)`` would leave in the files."""
        ch = self.channel(rail)
        return quantise(self.driver, ch.mv, mw)[0]

    def actual(self, rail: str) -> float:
        """The power now in the rail's files (as this process last wrote it)."""
        return self.channel(rail).mw

    def set_power(self, rail: str, mw: float) -> float:
        """Set a rail to ``mw``; returns the quantised power actually written."""
        ch = self.channel(rail)
        if ch.removed:
            raise SimBoardError(f"rail {rail!r} was removed; call restore_rail({rail!r}) first")
        actual, ma = quantise(self.driver, ch.mv, mw)
        self._set(ch, actual, ma)
        return actual

    def rail_files(self, rail: str) -> List[str]:
        """Paths of the rail's changing files (the power or current file first)."""
        ch = self.channel(rail)
        data_dir = self._chips[ch.chip].data_dir
        return [os.path.join(data_dir, name) for name in self._files(ch)]

    def data_dirs(self) -> List[str]:
        """Each chip's iio or hwmon directory (its real path, not a link)."""
        return [state.data_dir for state in self._chips]

    def remove_rail(self, rail: str) -> None:
        """Delete the rail's reading files, as when a rail disappears mid-run. Its label stays.
        Readers holding the files open see the link count drop to 0."""
        ch = self.channel(rail)
        for path in self.rail_files(rail):
            fd = self._fds.pop(path, None)
            if fd is not None:
                os.close(fd)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        ch.removed = True

    def restore_rail(self, rail: str) -> None:
        """Bring a removed rail's files back (new inodes) with its last values."""
        ch = self.channel(rail)
        for path in self.rail_files(rail):
            if not os.path.exists(path):
                _put(path, b"", reading_mode(os.path.basename(path)))
        ch.removed = False
        self._write_channel(ch)

    def corrupt(self, rail: str, content: bytes) -> None:
        """Write ``content`` into every reading file of the rail, in place, until the next
        :meth:`set_power` puts a number back."""
        if not isinstance(content, bytes):
            raise ValueError("corrupt() takes bytes, e.g. b'garbage\\n'")
        ch = self.channel(rail)
        if ch.removed:
            raise SimBoardError(f"rail {rail!r} was removed; call restore_rail({rail!r}) first")
        for path in self.rail_files(rail):
            self._write(path, content)

    def refresh(self) -> None:
        """Catch up with changes made from outside: IIO ``running_mode`` writes (the trigger
        files follow them) and files another process removed or restored."""
        for path, fd in list(self._fds.items()):
            try:
                gone = os.fstat(fd).st_nlink == 0
            except OSError:
                gone = True
            if gone:  # next write reopens the path if it exists again
                os.close(fd)
                del self._fds[path]
        for ci, state in enumerate(self._chips):
            mode = self._read_mode(state)
            if mode != state.continuous:
                state.continuous = mode
                for ch in self._channels:
                    if ch.chip == ci and not ch.removed:
                        self._write_channel(ch)

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()

    def __enter__(self) -> SimBoard:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_board(root: str, layout: str, **options: Any) -> SimBoard:
    """The board under ``root`` (which must be a ``layout`` board), created if there is none."""
    if os.path.exists(os.path.join(root, MARKER)):
        board = SimBoard.attach(root)
        if board.layout.key != layout:
            board.close()
            raise SimBoardError(
                f"{root} holds a board of layout {board.layout.key}, not {layout}; pass --layout "
                f"{board.layout.key} or use an empty directory"
            )
        return board
    return SimBoard(root, layout, **options).create()


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
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


# ---------------------------------------------------------------------------------------------
# Command line


def _cmd_create(args: argparse.Namespace) -> int:
    board = SimBoard(
        args.root, args.layout, args.seed, args.iio_dir_name, args.running_mode
    ).create()
    board.close()
    print(f"{args.layout} board under {board.root}; rails: {', '.join(board.rails())}")
    return 0


def _cmd_drive(args: argparse.Namespace) -> int:
    waves = dict(parse_wave(spec) for spec in args.wave)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def ready(t_ns: int) -> None:
        print(f"ready {t_ns}", flush=True)

    drive(args.root, args.layout, waves, args.update_s, args.log, args.seconds, stop, ready)
    return 0


def _cmd_layouts(args: argparse.Namespace) -> int:
    for key in sorted(LAYOUTS):
        lay = LAYOUTS[key]
        print(f"{key:15} {lay.driver:9} {lay.model}: {', '.join(rail_names(key))}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m power.simboard", description="Simulated INA3221 sysfs trees."
    )
    sub = parser.add_subparsers(dest="command")
    sub.required = True
    p = sub.add_parser("create", help="lay out a board's tree under ROOT (an empty directory)")
    p.add_argument("root")
    p.add_argument("--layout", required=True, choices=sorted(LAYOUTS))
    p.add_argument("--seed", type=int, default=None, help="shuffle device numbers")
    p.add_argument("--iio-dir-name", default="iio:device", choices=IIO_DIR_NAMES)
    p.add_argument("--running-mode", type=int, default=1, choices=(0, 1))
    p.set_defaults(func=_cmd_create)
    p = sub.add_parser("drive", help="write time-varying power until SIGTERM / --seconds")
    p.add_argument("root")
    p.add_argument("--layout", required=True, choices=sorted(LAYOUTS))
    p.add_argument("--wave", action="append", default=[], help=WAVE_GRAMMAR)
    p.add_argument("--log", default=None, help="append binary change records here")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--update-s", type=float, default=0.001)
    p.set_defaults(func=_cmd_drive)
    p = sub.add_parser("layouts", help="list the layouts and their rails")
    p.set_defaults(func=_cmd_layouts)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (PowerError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
