"""Pure file contents: what each file of a simulated board holds (bytes and mode), computed
from a channel's operating point; nothing here touches the filesystem."""

from __future__ import annotations

import json
import math
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple

from power.simboard.errors import SimBoardError
from power.simboard.layouts import HWMON, IIO, LAYOUTS
from power.sysfs import SIM_MARKER as MARKER

MARKER_VERSION = 1

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
