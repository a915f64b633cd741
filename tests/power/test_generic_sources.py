"""Generic hwmon, powercap/RAPL and model-estimate sources against real files in a temp tree.

Values are changed in place (``os.pwrite`` + ``os.ftruncate`` on the same inode) because the
readers keep their files open, as on a board. Mean power from counters is checked against the
counter difference over the readings' own ``t_ns``, so no timing is assumed.
"""

from __future__ import annotations

import errno
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Union

import pytest

from power import estimate, hwmon_generic, rapl
from power.estimate import EstimateSource
from power.hwmon_generic import hwmon_energy_delta
from power.rapl import rapl_energy_delta, unreadable_reason, zone_key

MAX_RANGE = 262143328850  # a real package's max_energy_range_uj


def put(path: Path, value: Union[int, str]) -> None:
    """Rewrite a sysfs-like file in place: same inode, so kept-open fds see the new value."""
    before = path.stat().st_ino
    data = f"{value}\n".encode()
    fd = os.open(str(path), os.O_WRONLY)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
    assert path.stat().st_ino == before


def write_files(d: Path, files: Dict[str, Union[int, str]]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        (d / name).write_text(f"{value}\n")


def hwmon(
    root: Path, n: int, files: Dict[str, Union[int, str]], device: Optional[str] = None
) -> Path:
    """``sys/class/hwmon/hwmon<n>``; with ``device`` a symlink into ``sys/devices`` as on a
    board (the class entry is a link to ``<device>/hwmon/hwmon<n>``)."""
    cls = root / "sys/class/hwmon"
    cls.mkdir(parents=True, exist_ok=True)
    if device is None:
        write_files(cls / f"hwmon{n}", files)
        return cls / f"hwmon{n}"
    real = root / "sys/devices" / device / "hwmon" / f"hwmon{n}"
    write_files(real, files)
    (cls / f"hwmon{n}").symlink_to(os.path.relpath(real, cls))
    return real


def zone(root: Path, zone_id: str, name: str, uj: int, max_range: int = MAX_RANGE) -> Path:
    d = root / "sys/class/powercap" / zone_id
    write_files(d, {"name": name, "energy_uj": uj, "max_energy_range_uj": max_range, "enabled": 1})
    return d


def expected_mw(uj0: float, uj1: float, t0: int, t1: int) -> float:
    return (uj1 - uj0) * 1e6 / (t1 - t0)


# --------------------------------------------------------------------------------- hwmon


@pytest.fixture
def hwtree(tmp_path: Path) -> Path:
    # Numbers shuffled on purpose: discovery goes by name and real path, never by number.
    hwmon(tmp_path, 0, {"name": "acpitz", "temp1_input": 45000})  # no power: not a source
    hwmon(  # ina3221 has its own reader, even if it had a power file
        tmp_path,
        2,
        {"name": "ina3221", "in1_label": "VDD_IN", "in1_input": 5000, "power1_input": 1},
    )
    hwmon(tmp_path, 5, {"name": "ina226", "power1_input": 2_500_000, "update_interval": 35})
    hwmon(
        tmp_path,
        3,
        {
            "name": "soc_meter",
            "power1_input": 1_234_000,
            "power1_label": "VDD_SOC",
            "energy1_input": 1_000_000,
            "energy1_label": "VDD_SOC",
            "energy2_input": 7,
            "energy2_label": "VDD_CPU",
        },
    )
    # Two chips with the same name: indexed by device path (b-dev has the lower hwmon number).
    hwmon(tmp_path, 1, {"name": "ltc2945", "power1_input": 1000}, device="platform/b-dev")
    hwmon(tmp_path, 4, {"name": "ltc2945", "power1_input": 2000}, device="platform/a-dev")
    return tmp_path


def by_name(sources, name):
    return next(s for s in sources if s.name == name)


def test_hwmon_discovery_names_rails_and_skips(hwtree: Path) -> None:
    sources = hwmon_generic.discover(str(hwtree))
    names = sorted(s.name for s in sources)
    assert names == ["hwmon:ina226", "hwmon:ltc2945:0", "hwmon:ltc2945:1", "hwmon:soc_meter"]

    ina226 = by_name(sources, "hwmon:ina226")
    assert ina226.kind == "hwmon" and ina226.method == "measured"
    assert ina226.rail_names() == ["ina226_power1"]
    assert ina226.rails[0].where == "hwmon5/power1_input"
    d = ina226.describe()
    assert d["hwmon_name"] == "ina226" and d["update_interval_ms"] == 35
    assert d["path"] == os.path.realpath(hwtree / "sys/class/hwmon/hwmon5")
    assert "energy_wrap" not in d  # no counters on this chip

    soc = by_name(sources, "hwmon:soc_meter")
    # power1 and energy1 share a label: both get the file stem so the series stay apart.
    assert soc.rail_names() == ["VDD_SOC:power1", "VDD_SOC:energy1", "VDD_CPU"]
    assert [r.kind for r in soc.rails] == ["power", "energy", "energy"]
    d = soc.describe()
    assert d["rails"][2] == {
        "name": "VDD_CPU",
        "kind": "energy",
        "file": "energy2_input",
        "label": "VDD_CPU",
    }
    assert "2^32" in d["energy_wrap"] and d["update_interval_ms"] is None

    assert by_name(sources, "hwmon:ltc2945:0").path.endswith("a-dev/hwmon/hwmon4")
    assert by_name(sources, "hwmon:ltc2945:1").path.endswith("b-dev/hwmon/hwmon1")
    for s in sources:
        s.close()


def test_hwmon_power_updates_in_place(hwtree: Path) -> None:
    (src,) = [s for s in hwmon_generic.discover(str(hwtree)) if s.name == "hwmon:ina226"]
    with src:
        r = src.read()
        assert r.mw == [2500.0] and r.errors == {} and r.uj is None
        assert r.t_ns > 0 and r.span_ns >= 0
        put(hwtree / "sys/class/hwmon/hwmon5/power1_input", 3_100_500)
        assert src.read().mw == [3100.5]


def test_hwmon_energy_mean_power_and_wrap_at_2_32(hwtree: Path) -> None:
    src = by_name(hwmon_generic.discover(str(hwtree)), "hwmon:soc_meter")
    e1 = hwtree / "sys/class/hwmon/hwmon3/energy1_input"
    with src:
        r1 = src.read()
        # First read of a counter: its value, no power yet, and that is no error.
        assert r1.mw == [1234.0, None, None] and r1.errors == {}
        assert r1.uj == [None, 1_000_000, 7]

        put(e1, 1_000_900)
        r2 = src.read()
        assert r2.errors == {}
        assert r2.uj[1] == 1_000_900
        assert r2.mw[1] == pytest.approx(expected_mw(r1.uj[1], r2.uj[1], r1.t_ns, r2.t_ns))
        assert r2.mw[2] == 0.0  # unchanged counter: zero power, not missing

        # A 32-bit counter wrapping: 100 uJ before 2^32, then 400 uJ after it.
        put(e1, (1 << 32) - 100)
        r3 = src.read()
        put(e1, 400)
        r4 = src.read()
        assert r4.errors == {}
        assert r4.uj[1] - r3.uj[1] == 500
        assert r4.mw[1] == pytest.approx(expected_mw(r3.uj[1], r4.uj[1], r3.t_ns, r4.t_ns))


def test_hwmon_unexplained_decrease_is_an_error_and_restarts(hwtree: Path) -> None:
    src = by_name(hwmon_generic.discover(str(hwtree)), "hwmon:soc_meter")
    e1 = hwtree / "sys/class/hwmon/hwmon3/energy1_input"
    with src:
        put(e1, 5_000_000_000)  # above 2^32: a 64-bit counter
        r1 = src.read()
        put(e1, 1_000)  # going back: no 2^64 wrap is plausible within microseconds
        r2 = src.read()
        assert r2.mw[1] is None and r2.uj[1] is None
        assert "went back" in r2.errors["VDD_SOC:energy1"]
        assert r2.mw[0] == 1234.0  # the other rails are unaffected
        put(e1, 1_600)
        r3 = src.read()
        assert r3.errors == {}
        # Counting restarted from 1000; the total stays monotone (the lost interval is 0).
        assert r3.uj[1] == r1.uj[1] + 600
        assert r3.mw[1] == pytest.approx(expected_mw(0, 600, r2.t_ns, r3.t_ns))


def test_hwmon_energy_delta_rule() -> None:
    second = 1_000_000_000
    assert hwmon_energy_delta(10, 25, second) == (15, "")
    assert hwmon_energy_delta((1 << 32) - 5, 5, second) == (10, "")
    assert hwmon_energy_delta((1 << 64) - 5, 5, second) == (10, "")
    # A 32-bit-sized reset from 3e9 to 1000 implies ~1.3 kJ: impossible in 1 ms ...
    delta, why = hwmon_energy_delta(3_000_000_000, 1000, second // 1000)
    assert delta is None and "went back" in why
    # ... but a plausible 32-bit wrap over 1000 s (1.3 W): indistinguishable, so taken.
    assert hwmon_energy_delta(3_000_000_000, 1000, 1000 * second)[0] == (1 << 32) - 3e9 + 1000
    assert hwmon_energy_delta(5, 1, 0)[0] is None  # no interval, no plausible wrap


def test_hwmon_garbage_then_recovers(hwtree: Path) -> None:
    src = by_name(hwmon_generic.discover(str(hwtree)), "hwmon:soc_meter")
    d = hwtree / "sys/class/hwmon/hwmon3"
    with src:
        r1 = src.read()
        put(d / "power1_input", "garbage")
        put(d / "energy1_input", "")
        r2 = src.read()
        assert r2.mw[:2] == [None, None] and r2.uj[1] is None
        assert "not a number" in r2.errors["VDD_SOC:power1"]
        assert "not a number" in r2.errors["VDD_SOC:energy1"]
        put(d / "power1_input", 2_000_000)
        put(d / "energy1_input", 1_003_000)
        r3 = src.read()
        assert r3.errors == {}
        assert r3.mw[0] == 2000.0
        # The counter kept counting through the bad read: mean over the whole gap.
        assert r3.uj[1] == 1_003_000
        assert r3.mw[1] == pytest.approx(expected_mw(r1.uj[1], r3.uj[1], r1.t_ns, r3.t_ns))


def test_hwmon_file_removed_mid_run(hwtree: Path) -> None:
    src = by_name(hwmon_generic.discover(str(hwtree)), "hwmon:soc_meter")
    d = hwtree / "sys/class/hwmon/hwmon3"
    with src:
        src.read()
        (d / "power1_input").unlink()
        (d / "energy2_input").unlink()
        r = src.read()  # must not raise
        assert r.mw[0] is None and r.mw[2] is None and r.uj[2] is None
        assert set(r.errors) == {"VDD_SOC:power1", "VDD_CPU"}
        assert r.uj[1] == 1_000_000 and r.mw[1] == 0.0


def test_discover_nothing_there(tmp_path: Path) -> None:
    assert hwmon_generic.discover(str(tmp_path)) == []
    assert rapl.discover(str(tmp_path)) == []
    assert rapl.scan_zones(str(tmp_path)) == []
    assert estimate.discover(str(tmp_path)) == []


# --------------------------------------------------------------------------------- RAPL


@pytest.fixture
def raptree(tmp_path: Path) -> Path:
    write_files(tmp_path / "sys/class/powercap/intel-rapl", {"enabled": 1})  # control type
    zone(tmp_path, "intel-rapl:0", "package-0", 5_000_000)
    zone(tmp_path, "intel-rapl:0:0", "core", 2_000_000)
    zone(tmp_path, "intel-rapl:0:1", "uncore", 100)
    zone(tmp_path, "intel-rapl:1", "package-1", MAX_RANGE - 1000)
    zone(tmp_path, "intel-rapl:1:0", "core", 0)
    zone(tmp_path, "intel-rapl:2", "psys", 9_000_000)
    # Recent Intel laptops: the same package counter again through MMIO.
    zone(tmp_path, "intel-rapl-mmio:0", "package-0", 5_000_000)
    # A power-only zone (no energy counter) is not a RAPL rail.
    write_files(tmp_path / "sys/class/powercap/dtpm:0", {"name": "soc", "power_uw": 1})
    return tmp_path


def test_rapl_discovery(raptree: Path) -> None:
    (src,) = rapl.discover(str(raptree))
    with src:
        assert (src.kind, src.name, src.method, src.tau_s) == ("rapl", "rapl", "measured", 0)
        assert src.rail_names() == [
            "package-0",
            "core:intel-rapl:0:0",
            "uncore",
            "package-1",
            "core:intel-rapl:1:0",
            "psys",
        ]
        assert all(r.kind == "energy" for r in src.rails)
        assert src.rails[1].where == "intel-rapl:0:0"
        d = src.describe()
        assert d["parents"] == {
            "core:intel-rapl:0:0": "package-0",
            "uncore": "package-0",
            "core:intel-rapl:1:0": "package-1",
        }
        assert d["unreadable"] == {}
        assert d["duplicates"] == {"intel-rapl-mmio:0": "intel-rapl:0"}
        assert d["zones"][0]["max_energy_range_uj"] == MAX_RANGE
        assert "max_energy_range_uj + 1" in d["energy_wrap"]


def test_rapl_counters_and_wrap(raptree: Path) -> None:
    (src,) = rapl.discover(str(raptree))
    pc = raptree / "sys/class/powercap"
    with src:
        r1 = src.read()
        assert r1.errors == {} and r1.mw == [None] * 6
        assert r1.uj[0] == 5_000_000
        put(pc / "intel-rapl:0/energy_uj", 5_250_000)
        put(pc / "intel-rapl:1/energy_uj", 500)  # wrapped after MAX_RANGE
        r2 = src.read()
        assert r2.errors == {}
        assert r2.uj[0] == 5_250_000
        assert r2.mw[0] == pytest.approx(expected_mw(r1.uj[0], r2.uj[0], r1.t_ns, r2.t_ns))
        # (500 - (MAX - 1000)) mod (MAX + 1) = 1501
        assert r2.uj[3] - r1.uj[3] == 1501
        assert r2.mw[3] == pytest.approx(expected_mw(0, 1501, r1.t_ns, r2.t_ns))


def test_rapl_delta_rule() -> None:
    assert rapl_energy_delta(10, 30, 100) == (20, "")
    assert rapl_energy_delta(95, 4, 100) == (10, "")  # 95..100 is 5, wrap to 0 is 1, +4
    assert rapl_energy_delta(10, 30, None) == (20, "")
    delta, why = rapl_energy_delta(30, 10, None)
    assert delta is None and "unknown" in why
    assert zone_key("intel-rapl:2") < zone_key("intel-rapl:10") < zone_key("intel-rapl:10:0")


def test_rapl_bad_reads_recover(raptree: Path) -> None:
    (src,) = rapl.discover(str(raptree))
    pc = raptree / "sys/class/powercap"
    with src:
        r1 = src.read()
        put(pc / "intel-rapl:0/energy_uj", "x1")
        put(pc / "intel-rapl:2/energy_uj", MAX_RANGE + 5)  # beyond the counter's range
        (pc / "intel-rapl:0:1/energy_uj").unlink()
        r2 = src.read()
        assert set(r2.errors) == {"package-0", "psys", "uncore"}
        assert "outside" in r2.errors["psys"]
        assert r2.mw[0] is None and r2.uj[0] is None
        put(pc / "intel-rapl:0/energy_uj", 5_100_000)
        r3 = src.read()
        assert "package-0" not in r3.errors and "uncore" in r3.errors
        assert r3.mw[0] == pytest.approx(expected_mw(r1.uj[0], r3.uj[0], r1.t_ns, r3.t_ns))


def test_rapl_unreadable_zone(raptree: Path) -> None:
    # On a board a non-root agent gets EACCES from the 0400 energy_uj. The tests run as root,
    # which ignores file modes, so a chmod would prove nothing; an energy_uj that is a directory
    # gives a real OSError (EISDIR) through the same probe, and the EACCES wording is checked
    # on the classification function below with the error the kernel would give.
    pc = raptree / "sys/class/powercap"
    (pc / "intel-rapl:0:1/energy_uj").unlink()
    (pc / "intel-rapl:0:1/energy_uj").mkdir()
    (src,) = rapl.discover(str(raptree))
    with src:
        assert "uncore" not in src.rail_names() and len(src.rails) == 5
        d = src.describe()
        assert list(d["unreadable"]) == ["intel-rapl:0:1"]
        assert "directory" in d["unreadable"]["intel-rapl:0:1"]
        assert [z["rail"] for z in d["zones"] if z["zone"] == "intel-rapl:0:1"] == [None]
        assert src.read().errors == {}

    why = unreadable_reason(PermissionError(errno.EACCES, "Permission denied"), "/x/energy_uj")
    assert "root" in why and "CVE-2020-8694" in why


def test_rapl_all_unreadable_gives_no_source_but_scan_says_why(tmp_path: Path) -> None:
    d = tmp_path / "sys/class/powercap/intel-rapl:0"
    write_files(d, {"name": "package-0", "max_energy_range_uj": MAX_RANGE})
    (d / "energy_uj").mkdir()
    assert rapl.discover(str(tmp_path)) == []
    (z,) = rapl.scan_zones(str(tmp_path))
    assert z.rail == "package-0" and z.reason is not None


# --------------------------------------------------------------------------------- estimate


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"idle_mw": -1, "busy_mw": 5}, "idle_mw must be >= 0"),
        ({"idle_mw": 3000, "busy_mw": 2000}, "busy_mw (2000) must be >= idle_mw (3000)"),
        ({"idle_mw": math.nan, "busy_mw": 5}, "finite"),
        ({"idle_mw": "lots", "busy_mw": 5}, "idle_mw must be a number"),
        ({"idle_mw": 1, "busy_mw": 5, "cpus": 0}, "cpus must be a whole number >= 1"),
        ({"idle_mw": 1, "busy_mw": 5, "rail": ""}, "rail must be a non-empty"),
    ],
)
def test_estimate_validates(kwargs, message) -> None:
    with pytest.raises(ValueError) as e:
        EstimateSource(**kwargs)
    assert message in str(e.value)


def test_estimate_discover() -> None:
    assert estimate.discover("/", other_backend_option=1) == []
    (src,) = estimate.discover("/", idle_mw=1500, busy_mw=4500)
    assert isinstance(src, EstimateSource) and src.rail_names() == ["EST_TOTAL"]
    with pytest.raises(ValueError, match="give busy_mw too"):
        estimate.discover("/", idle_mw=1500)


def spin_child(seconds: float) -> None:
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_estimate_rises_with_cpu_load() -> None:
    idle, busy = 1000.0, 5000.0
    system = EstimateSource(idle, busy)
    one_cpu = EstimateSource(idle, busy, cpus=1, rail="EST_1CPU")
    assert system.kind == "estimate" and system.method == "model"
    d = system.describe()
    assert d["method"] == "model" and d["formula"].startswith("P = idle_mw")
    assert (d["idle_mw"], d["busy_mw"], d["cpus"]) == (idle, busy, None)

    first = system.read()
    one_cpu.read()
    assert first.mw == [None] and first.errors == {}  # no interval yet: no value, no error
    spin_child(0.5)
    r = system.read()
    r1 = one_cpu.read()
    assert r.errors == {} and r.mw[0] is not None
    # At least one CPU of the system was busy for the whole 0.5 s.
    assert idle < r.mw[0] <= busy
    # Normalised to one CPU: that CPU was busy for most of the interval.
    assert r1.mw[0] > idle + 0.5 * (busy - idle)
