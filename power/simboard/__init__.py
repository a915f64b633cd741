"""Simulated boards: a faithful INA3221 sysfs tree written under a root directory, driven over time.

The power readers (:mod:`power.ina3221_iio`, :mod:`power.ina3221_hwmon`) take every path
relative to a ``sysfs_root``. Pointed at a tree written here they run unmodified, on any
machine, against values whose ground truth is known exactly.

The submodules:

* :mod:`power.simboard.layouts`: the boards (:data:`LAYOUTS`: chips, rail labels, bus
  voltages, idle powers) and how their channels are named (:func:`rail_names`).
* :mod:`power.simboard.files`: the pure contents of the files a driver shows
  (:func:`quantise`, the ``*_files`` tables, :func:`device_numbers`, the marker).
* :mod:`power.simboard.board`: :class:`SimBoard`, which writes a board's tree and rewrites
  its values in place (:meth:`SimBoard.set_power`, ``remove_rail``, ``corrupt``, ...).
* :mod:`power.simboard.waves`: time-varying power (:class:`Constant`, :class:`Square`,
  :class:`FollowLoad`), their ``--wave`` spelling and a square wave's exact energy.
* :mod:`power.simboard.driver`: :func:`drive` writes waves into a board, :class:`Driver` runs
  it in a child process; the drive log and its energy (:func:`log_energy_mj`).
* :mod:`power.simboard.__main__`: ``python -m power.simboard create|drive|layouts``.

Python 3.8 compatible; stdlib + psutil.
"""

from __future__ import annotations

from typing import Any

from power.simboard.board import IIO_DIR_NAMES, MARKER, SimBoard, open_board
from power.simboard.driver import (
    DEFAULT_LOG,
    LOG_FLUSH_NS,
    RECORD,
    REFRESH_NS,
    Driver,
    DriverError,
    Record,
    drive,
    log_energy_mj,
    parse_log,
    read_log,
)
from power.simboard.errors import SimBoardError
from power.simboard.files import (
    MARKER_VERSION,
    MODE_READING,
    MODE_RO,
    MODE_ROOT,
    MODE_RW,
    MODE_WO,
    RESET_LIMIT_UV,
    RESET_SUM_LIMIT_UV,
    UPDATE_INTERVAL_MS,
    device_numbers,
    hwmon_chip_files,
    hwmon_reading_files,
    hwmon_static_files,
    hwmon_sum_files,
    iio_reading_files,
    iio_static_files,
    limit_ma,
    parse_marker,
    quantise,
    reading_mode,
    shunt_uv,
)
from power.simboard.layouts import (
    EXTRA_HWMONS,
    HWMON,
    IIO,
    LAYOUTS,
    BoardLayout,
    Chip,
    channel_id,
    channel_name,
    channel_names,
    get_layout,
    rail_names,
)
from power.simboard.waves import (
    WAVE_GRAMMAR,
    Constant,
    FollowLoad,
    Square,
    TreeCpu,
    Wave,
    parse_wave,
    square_energy_mj,
    wave_spec,
)

__all__ = [
    "DEFAULT_LOG",
    "EXTRA_HWMONS",
    "HWMON",
    "IIO",
    "IIO_DIR_NAMES",
    "LAYOUTS",
    "LOG_FLUSH_NS",
    "MARKER",
    "MARKER_VERSION",
    "MODE_READING",
    "MODE_RO",
    "MODE_ROOT",
    "MODE_RW",
    "MODE_WO",
    "RECORD",
    "REFRESH_NS",
    "RESET_LIMIT_UV",
    "RESET_SUM_LIMIT_UV",
    "UPDATE_INTERVAL_MS",
    "WAVE_GRAMMAR",
    "BoardLayout",
    "Chip",
    "Constant",
    "Driver",
    "DriverError",
    "FollowLoad",
    "Record",
    "SimBoard",
    "SimBoardError",
    "Square",
    "TreeCpu",
    "Wave",
    "channel_id",
    "channel_name",
    "channel_names",
    "device_numbers",
    "drive",
    "get_layout",
    "hwmon_chip_files",
    "hwmon_reading_files",
    "hwmon_static_files",
    "hwmon_sum_files",
    "iio_reading_files",
    "iio_static_files",
    "limit_ma",
    "log_energy_mj",
    "main",
    "open_board",
    "parse_log",
    "parse_marker",
    "parse_wave",
    "quantise",
    "rail_names",
    "read_log",
    "reading_mode",
    "shunt_uv",
    "square_energy_mj",
    "wave_spec",
]


def __getattr__(name: str) -> Any:
    # main() lives in __main__.py and is imported on first use: importing it here would put
    # power.simboard.__main__ in sys.modules before `python -m power.simboard` runs it, which
    # makes runpy warn on every command (and Driver starts one per drive).
    if name == "main":
        from power.simboard.__main__ import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
