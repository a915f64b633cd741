"""System facts read from simulated sysfs/procfs trees laid out like real boards' files."""

from __future__ import annotations

import json
import stat

import pytest

from agent import sysfacts
from agent.runtime import load_runtime
from protocol.bodies import Caps


def write(root, rel: str, data) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)


@pytest.fixture
def jetson(tmp_path):
    """A Jetson Xavier NX as JetPack 5 lays it out (values from a real board's files)."""
    r = tmp_path
    write(r, "proc/device-tree/model", b"NVIDIA Jetson Xavier NX Developer Kit\x00")
    write(
        r,
        "proc/device-tree/compatible",
        b"nvidia,p3509-0000+p3668-0001\x00nvidia,jetson-xavier-nx\x00nvidia,tegra194\x00",
    )
    write(r, "sys/devices/system/cpu/present", "0-5\n")
    for policy, cpus, cur in (("policy0", "0 1 2 3", "1190400"), ("policy4", "4 5", "1420800")):
        base = f"sys/devices/system/cpu/cpufreq/{policy}/"
        write(r, base + "scaling_governor", "schedutil\n")
        write(r, base + "scaling_cur_freq", cur + "\n")
        write(r, base + "scaling_min_freq", "115200\n")
        write(r, base + "scaling_max_freq", "1907200\n")
        write(r, base + "cpuinfo_max_freq", "1907200\n")
        write(r, base + "related_cpus", cpus + "\n")
    zones = [
        (0, "CPU-therm", "41500"),
        (1, "GPU-therm", "40000"),
        (2, "AUX-therm", "39500"),
        (3, "CPU-therm", "-1000"),  # duplicate type
        (10, "thermal-fan-est", "40350"),
    ]
    for n, kind, temp in zones:
        write(r, f"sys/class/thermal/thermal_zone{n}/type", kind + "\n")
        write(r, f"sys/class/thermal/thermal_zone{n}/temp", temp + "\n")
    write(r, "sys/class/thermal/thermal_zone4/type", "PMIC-Die\n")  # no readable temp
    write(
        r,
        "proc/meminfo",
        "MemTotal:        7760052 kB\nMemFree:         5123456 kB\nMemAvailable:    6543210 kB\n",
    )
    write(r, "proc/loadavg", "0.52 0.58 0.59 1/612 12345\n")
    write(r, "proc/uptime", "12345.67 45678.90\n")
    write(r, "proc/sys/kernel/osrelease", "5.10.120-tegra\n")
    write(r, "etc/os-release", 'NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 20.04.6 LTS"\nID=ubuntu\n')
    write(r, "usr/lib/aarch64-linux-gnu/libedgetpu.so.1", b"\x7fELF")
    return str(r)


def test_board_and_soc_from_device_tree(jetson):
    assert sysfacts.board_model(jetson) == "NVIDIA Jetson Xavier NX Developer Kit"
    assert sysfacts.soc(jetson) == "nvidia,tegra194"
    assert sysfacts.cpu_count(jetson) == 6
    assert sysfacts.os_name(jetson) == "Ubuntu 20.04.6 LTS"
    assert sysfacts.kernel_release(jetson) == "5.10.120-tegra"
    assert sysfacts.meminfo(jetson)["MemTotal"] == 7760052 * 1024


def test_cpufreq_per_policy(jetson):
    freq = sysfacts.cpufreq(jetson)
    assert list(freq) == ["policy0", "policy4"]
    assert freq["policy0"] == {
        "governor": "schedutil",
        "cur_khz": 1190400,
        "min_khz": 115200,
        "max_khz": 1907200,
        "hw_max_khz": 1907200,
        "cpus": [0, 1, 2, 3],
    }
    assert freq["policy4"]["cpus"] == [4, 5] and freq["policy4"]["cur_khz"] == 1420800


def test_thermal_zones_in_celsius(jetson):
    assert sysfacts.thermal_c(jetson) == {
        "CPU-therm": 41.5,
        "GPU-therm": 40.0,
        "AUX-therm": 39.5,
        "CPU-therm:thermal_zone3": -1.0,
        "thermal-fan-est": 40.35,
    }


def test_env_snapshot(jetson):
    snap = sysfacts.env_snapshot(jetson)
    assert snap["load"] == [0.52, 0.58, 0.59]
    assert snap["uptime_s"] == 12345.67
    assert snap["mem_available_bytes"] == 6543210 * 1024
    assert snap["cpufreq"]["policy4"]["governor"] == "schedutil"
    assert snap["thermal_c"]["GPU-therm"] == 40.0
    assert snap["throttled"] is None  # no vcgencmd on a Jetson
    assert snap["time"] > 0


def test_caps_over_the_fake_tree(jetson):
    caps = sysfacts.caps(tags=["shelf-a"], root=jetson)
    Caps(**caps).validate()
    runtime = load_runtime()
    assert caps["board"] == "NVIDIA Jetson Xavier NX Developer Kit"
    assert caps["soc"] == "nvidia,tegra194"
    assert (caps["cores"], caps["ram_bytes"]) == (6, 7760052 * 1024)
    assert (caps["os"], caps["kernel"]) == ("Ubuntu 20.04.6 LTS", "5.10.120-tegra")
    assert (caps["runtime"], caps["runtime_version"]) == (runtime.name, runtime.version)
    # Both runtimes apply XNNPACK to float models by default on x86-64 and aarch64.
    assert caps["xnnpack"] is True
    assert caps["delegates"] == ["libedgetpu.so.1"]
    assert caps["power_sources"] == [] and caps["tags"] == ["shelf-a"]


def test_dmi_board_on_x86(tmp_path):
    write(tmp_path, "sys/class/dmi/id/sys_vendor", "LENOVO\n")
    write(tmp_path, "sys/class/dmi/id/product_name", "20XW0055GE\n")
    assert sysfacts.board_model(str(tmp_path)) == "LENOVO 20XW0055GE"
    write(tmp_path, "sys/class/dmi/id/product_name", "LENOVO ThinkCentre\n")
    assert sysfacts.board_model(str(tmp_path)) == "LENOVO ThinkCentre"


def test_empty_tree_gives_nothing_and_never_raises(tmp_path):
    root = str(tmp_path)
    assert sysfacts.board_model(root) is None and sysfacts.soc(root) is None
    assert sysfacts.cpu_count(root) is None and sysfacts.meminfo(root) == {}
    assert sysfacts.load_average(root) is None and sysfacts.uptime_s(root) is None
    assert sysfacts.cpufreq(root) == {} and sysfacts.thermal_c(root) == {}
    assert sysfacts.throttling(root) is None and sysfacts.delegate_libraries(root) == []
    snap = sysfacts.env_snapshot(root)
    assert set(snap) == {"time", "cpufreq", "thermal_c", "throttled"}
    Caps(**sysfacts.caps(root=root)).validate()  # falls back to this host's facts


def test_garbled_files_are_ignored(tmp_path):
    write(tmp_path, "proc/loadavg", "garbage\n")
    write(tmp_path, "proc/uptime", "x y\n")
    write(tmp_path, "sys/devices/system/cpu/present", "zero\n")
    write(tmp_path, "sys/class/thermal/thermal_zone0/temp", "n/a\n")
    write(tmp_path, "sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq", "fast\n")
    root = str(tmp_path)
    assert sysfacts.load_average(root) is None and sysfacts.uptime_s(root) is None
    assert sysfacts.cpu_count(root) is None and sysfacts.thermal_c(root) == {}
    assert sysfacts.cpufreq(root) == {"policy0": {}}


def fake_vcgencmd(root, output: str, code: int = 0) -> None:
    """A stand-in for the Pi firmware tool, printing what `vcgencmd get_throttled` prints."""
    path = root / "usr/bin/vcgencmd"
    write(
        root,
        "usr/bin/vcgencmd",
        f'#!/bin/sh\n[ "$1" = get_throttled ] || exit 1\necho "{output}"\nexit {code}\n',
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_raspberry_pi_throttling_bits(tmp_path):
    write(tmp_path, "proc/device-tree/model", b"Raspberry Pi 4 Model B Rev 1.5\x00")
    fake_vcgencmd(tmp_path, "throttled=0x50005")
    info = sysfacts.throttling(str(tmp_path))
    assert info == {
        "raw": "0x50005",
        "under_voltage": True,
        "under_voltage_occurred": True,
        "freq_capped": False,
        "freq_capped_occurred": False,
        "throttled": True,
        "throttled_occurred": True,
        "soft_temp_limit": False,
        "soft_temp_limit_occurred": False,
        "active": True,
    }
    assert sysfacts.env_snapshot(str(tmp_path))["throttled"]["raw"] == "0x50005"


def test_throttling_history_only_is_not_active():
    info = sysfacts.parse_throttled(0x80000)
    assert info["soft_temp_limit_occurred"] and not info["active"]
    assert sysfacts.parse_throttled(0)["active"] is False


@pytest.mark.parametrize(
    "output, code", [('error=1 error_msg="no vchiq"', 0), ("throttled=0x0", 255)]
)
def test_vcgencmd_failure_gives_none(tmp_path, output, code):
    fake_vcgencmd(tmp_path, output, code)
    assert sysfacts.throttling(str(tmp_path)) is None


def test_parse_cpu_list():
    assert sysfacts.parse_cpu_list("0-3,6") == [0, 1, 2, 3, 6]
    assert sysfacts.parse_cpu_list("4 5\n") == [4, 5]
    with pytest.raises(ValueError):
        sysfacts.parse_cpu_list("a-b")


def test_real_host_snapshot_is_json_ready():
    snap = sysfacts.env_snapshot()
    json.dumps(snap)
    assert len(snap["load"]) == 3  # every Linux has /proc/loadavg
