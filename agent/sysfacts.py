"""Facts about the board, read from procfs/sysfs under ``root`` so tests can use a fake tree.

Every reader returns None (or leaves a key out) when its file is missing or unreadable: a board
lacking a sensor is normal, never an error. Sources (reference tflite.md §8.1):

* board: ``/proc/device-tree/model`` (Raspberry Pi, Jetson; NUL-terminated), else DMI
  ``/sys/class/dmi/id/sys_vendor`` + ``product_name`` (x86);
* SoC: the last entry of ``/proc/device-tree/compatible`` (most generic, e.g. ``nvidia,tegra194``);
* cpufreq: ``/sys/devices/system/cpu/cpufreq/policy*/`` (kHz);
* thermal: ``/sys/class/thermal/thermal_zone*/{type,temp}`` (m°C);
* throttling: ``vcgencmd get_throttled`` on a Raspberry Pi, only if the binary exists.

:func:`env_snapshot` is the ``env_pre``/``env_post`` block of a benchmark result; :func:`caps`
gives the fields of the ``caps`` message.
"""

from __future__ import annotations

import glob
import math
import os
import platform
import re
import subprocess
import time
from importlib import metadata
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from agent.bench.probe import xnnpack_by_default
from agent.runtime import RuntimeNotFound, load_runtime
from power.discover import PowerOptions
from power.discover import discover as discover_power

# vcgencmd get_throttled bits (Raspberry Pi firmware): 0-3 now, 16-19 "has occurred since boot".
THROTTLE_BITS = {
    0: "under_voltage",
    1: "freq_capped",
    2: "throttled",
    3: "soft_temp_limit",
}
OCCURRED_SHIFT = 16
MAX_CPU_ID = 8191  # the kernel's largest NR_CPUS
VCGENCMD_DIRS = ("usr/bin", "opt/vc/bin")  # Pi OS bookworm, older firmware packages
VCGENCMD_TIMEOUT_S = 2.0
# External TFLite delegates that load_delegate() can open, by library name pattern.
DELEGATE_LIBRARIES = (
    "libedgetpu.so*",  # Coral Edge TPU
    "libarmnnDelegate.so*",  # Arm NN
    "libvx_delegate.so*",  # NXP i.MX NPU (TIM-VX)
    "libQnnTFLiteDelegate.so*",  # Qualcomm QNN
)
LIBRARY_DIRS = ("lib", "usr/lib", "usr/local/lib", "lib/*-linux-gnu*", "usr/lib/*-linux-gnu*")


def _path(root: str, rel: str) -> str:
    return os.path.join(root, rel.lstrip("/"))


def read_text(root: str, rel: str) -> Optional[str]:
    """The file's text stripped of whitespace and NUL bytes; None if missing or unreadable."""
    try:
        with open(_path(root, rel), "rb") as fh:
            data = fh.read(65536)
    except OSError:
        return None
    return data.decode("utf-8", "replace").strip("\x00 \t\r\n")


def read_int(root: str, rel: str) -> Optional[int]:
    text = read_text(root, rel)
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def board_model(root: str = "/") -> Optional[str]:
    model = read_text(root, "/proc/device-tree/model")
    if model:
        return model
    vendor = read_text(root, "/sys/class/dmi/id/sys_vendor")
    product = read_text(root, "/sys/class/dmi/id/product_name")
    if vendor and product and not product.startswith(vendor):
        return f"{vendor} {product}"
    return product or vendor or None


def soc(root: str = "/") -> Optional[str]:
    text = read_text(root, "/proc/device-tree/compatible")
    entries = [e for e in (text or "").split("\x00") if e]
    return entries[-1] if entries else None


def parse_cpu_list(text: str) -> List[int]:
    """'0-3,6' -> [0, 1, 2, 3, 6]; also accepts the space-separated form of related_cpus."""
    cpus: List[int] = []
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        # A garbled file must not make us build a list of billions of CPUs.
        if not 0 <= first <= MAX_CPU_ID or not 0 <= last <= MAX_CPU_ID:
            raise ValueError(f"CPU number out of range 0..{MAX_CPU_ID} in {part!r}")
        cpus.extend(range(first, last + 1))
    return cpus


def cpu_count(root: str = "/") -> Optional[int]:
    text = read_text(root, "/sys/devices/system/cpu/present")
    try:
        return len(parse_cpu_list(text)) if text else None
    except ValueError:
        return None


def meminfo(root: str = "/") -> Dict[str, int]:
    """/proc/meminfo in bytes, e.g. {"MemTotal": ..., "MemAvailable": ...}."""
    out: Dict[str, int] = {}
    for line in (read_text(root, "/proc/meminfo") or "").splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        # isdigit() alone would let "²" through to int().
        if fields and fields[0].isascii() and fields[0].isdigit():
            out[name.strip()] = int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    return out


def os_name(root: str = "/") -> Optional[str]:
    for line in (read_text(root, "/etc/os-release") or "").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "PRETTY_NAME":
            return value.strip().strip("\"'") or None
    return None


def kernel_release(root: str = "/") -> Optional[str]:
    return read_text(root, "/proc/sys/kernel/osrelease")


def load_average(root: str = "/") -> Optional[List[float]]:
    fields = (read_text(root, "/proc/loadavg") or "").split()
    try:
        load = [float(v) for v in fields[:3]] if len(fields) >= 3 else None
    except ValueError:
        return None
    # "nan" parses as a float, but no protocol message could carry it.
    return load if load is not None and all(math.isfinite(v) for v in load) else None


def uptime_s(root: str = "/") -> Optional[float]:
    fields = (read_text(root, "/proc/uptime") or "").split()
    try:
        up = float(fields[0]) if fields else None
    except ValueError:
        return None
    return up if up is not None and math.isfinite(up) else None


def _numbered(paths: Sequence[str]) -> List[str]:
    """Sort policy10 after policy9."""
    return sorted(paths, key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0))


def cpufreq(root: str = "/") -> Dict[str, Dict[str, Any]]:
    """Per cpufreq policy: governor, current/min/max scaling kHz, hardware limits, CPUs."""
    out: Dict[str, Dict[str, Any]] = {}
    base = _path(root, "/sys/devices/system/cpu/cpufreq")
    for path in _numbered(glob.glob(os.path.join(base, "policy[0-9]*"))):
        rel = os.path.relpath(path, root)
        policy: Dict[str, Any] = {}
        governor = read_text(root, rel + "/scaling_governor")
        if governor:
            policy["governor"] = governor
        for key, name in (
            ("cur_khz", "scaling_cur_freq"),
            ("min_khz", "scaling_min_freq"),
            ("max_khz", "scaling_max_freq"),
            ("hw_min_khz", "cpuinfo_min_freq"),
            ("hw_max_khz", "cpuinfo_max_freq"),
        ):
            value = read_int(root, rel + "/" + name)
            if value is not None:
                policy[key] = value
        cpus = read_text(root, rel + "/related_cpus")
        if cpus:
            try:
                policy["cpus"] = parse_cpu_list(cpus)
            except ValueError:
                pass
        out[os.path.basename(path)] = policy
    return out


def thermal_c(root: str = "/") -> Dict[str, float]:
    """{zone type: °C}; a type shared by several zones gets the zone name appended."""
    out: Dict[str, float] = {}
    base = _path(root, "/sys/class/thermal")
    for path in _numbered(glob.glob(os.path.join(base, "thermal_zone[0-9]*"))):
        rel = os.path.relpath(path, root)
        milli = read_int(root, rel + "/temp")  # unreadable while a sensor is off: skipped
        # Beyond -273.15..1000 °C it is garbage (and past ~1e308 not even a float).
        if milli is None or not -273150 <= milli <= 1000000:
            continue
        zone = os.path.basename(path)
        name = read_text(root, rel + "/type") or zone
        if name in out:
            name = f"{name}:{zone}"
        out[name] = milli / 1000.0
    return out


def _vcgencmd(root: str) -> Optional[str]:
    for d in VCGENCMD_DIRS:
        path = _path(root, os.path.join(d, "vcgencmd"))
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def parse_throttled(value: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {"raw": f"0x{value:x}"}
    for bit, name in THROTTLE_BITS.items():
        out[name] = bool(value >> bit & 1)
        out[name + "_occurred"] = bool(value >> (bit + OCCURRED_SHIFT) & 1)
    out["active"] = any(out[name] for name in THROTTLE_BITS.values())
    return out


def throttling(root: str = "/") -> Optional[Dict[str, Any]]:
    """Decoded ``vcgencmd get_throttled`` on a Raspberry Pi; None elsewhere or on failure."""
    binary = _vcgencmd(root)
    if binary is None:
        return None
    try:
        proc = subprocess.run(
            [binary, "get_throttled"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=VCGENCMD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"throttled=(0x[0-9a-fA-F]+)", proc.stdout.decode("ascii", "replace"))
    return parse_throttled(int(match.group(1), 16)) if proc.returncode == 0 and match else None


def env_snapshot(root: str = "/") -> Dict[str, Any]:
    """Clocks, temperatures, throttling and load: taken before and after every benchmark."""
    snap: Dict[str, Any] = {"time": time.time()}
    load = load_average(root)
    if load is not None:
        snap["load"] = load
    up = uptime_s(root)
    if up is not None:
        snap["uptime_s"] = up
    available = meminfo(root).get("MemAvailable")
    if available is not None:
        snap["mem_available_bytes"] = available
    snap["cpufreq"] = cpufreq(root)
    snap["thermal_c"] = thermal_c(root)
    snap["throttled"] = throttling(root)
    return snap


def delegate_libraries(root: str = "/") -> List[str]:
    """File names of external delegate libraries found in the usual library directories."""
    found = set()
    for d in LIBRARY_DIRS:
        for pattern in DELEGATE_LIBRARIES:
            for path in glob.glob(os.path.join(_path(root, d), pattern)):
                found.add(os.path.basename(path))
    return sorted(found)


def agent_version() -> str:
    try:
        return metadata.version("halofarm")
    except metadata.PackageNotFoundError:
        return "unknown"


def power_source_names(options: PowerOptions) -> List[str]:
    sources = discover_power(options)
    for source in sources:
        source.close()
    return [s.name for s in sources][:64]


def caps(
    tags: Sequence[str] = (),
    root: str = "/",
    runtime_prefer: Optional[str] = None,
    power: Optional[PowerOptions] = None,
    mcu_duts: Sequence[str] = (),
) -> Dict[str, Any]:
    """The fields of the ``caps`` message (``protocol.bodies.Caps(**caps())``).

    Loads the TFLite runtime in this process and runs the XNNPACK probe
    (:mod:`agent.bench.probe`) on a tiny embedded model. Facts missing under ``root`` fall back
    to this host's (``platform``, ``os.cpu_count()``) or to "unknown"/0. ``power_sources`` are
    the names :func:`power.discover.discover` finds with ``power`` (what ``--power`` accepts).
    """
    try:
        runtime = load_runtime(runtime_prefer)
    except RuntimeNotFound:
        runtime = None
    return {
        "agent_version": agent_version(),
        "board": board_model(root) or "unknown",
        "soc": soc(root),
        "machine": platform.machine(),
        "cores": cpu_count(root) or os.cpu_count() or 1,
        "ram_bytes": meminfo(root).get("MemTotal", 0),
        "os": os_name(root) or platform.platform(),
        "kernel": kernel_release(root) or platform.release(),
        "python": platform.python_version(),
        "runtime": None if runtime is None else runtime.name,
        "runtime_version": None if runtime is None else runtime.version,
        "numpy": np.__version__,
        "xnnpack": False if runtime is None else xnnpack_by_default(runtime),
        "delegates": delegate_libraries(root),
        "power_sources": power_source_names(power or PowerOptions()),
        "tags": list(tags),
        "mcu_duts": list(mcu_duts),
    }
