"""The tree: :class:`SimBoard` writes a board's sysfs tree under a root directory and changes
its values.

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
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from power.simboard.errors import SimBoardError
from power.simboard.files import (
    MARKER_VERSION,
    MODE_READING,
    MODE_RO,
    MODE_ROOT,
    MODE_RW,
    MODE_WO,
    device_numbers,
    hwmon_chip_files,
    hwmon_reading_files,
    hwmon_static_files,
    hwmon_sum_files,
    iio_reading_files,
    iio_static_files,
    parse_marker,
    quantise,
    reading_mode,
)
from power.simboard.layouts import (
    EXTRA_HWMONS,
    IIO,
    Chip,
    channel_id,
    channel_name,
    get_layout,
)
from power.sysfs import SIM_MARKER as MARKER

IIO_DIR_NAMES = ("iio:device", "iio_device")


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
