"""The INA3221 readers (JetPack 4 IIO, mainline hwmon) on every simulated board layout: discovery
by label, the total-power rail set, V·I consistency, unreadable names, missing files, a rail that
disappears mid-run, garbage content, running_mode, sensor settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from power.discover import PowerOptions, discover, open_source, policy_for
from power.sampler import ThreadSampler
from power.simboard import LAYOUTS, SimBoard, rail_names

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TOTALS = {
    "tx2-jp4": ["VDD_IN"],
    "nano-jp4": ["POM_5V_IN"],
    "agx-xavier-jp4": ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"],
    "xavier-nx-jp5": ["VDD_IN"],
    "orin-nx-jp5": ["VDD_IN"],
    "agx-orin-jp5": ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"],
    "rpi-ina3221": [],
}
KINDS = {"ina3221x": "ina3221-iio", "ina3221": "ina3221-hwmon"}


def only_source(root, **options):
    sources = discover(PowerOptions(sysfs_root=root, **options))
    assert len(sources) == 1, [s.name for s in sources]
    return sources[0]


def test_every_layout_has_a_policy_expectation():
    assert set(TOTALS) == set(LAYOUTS)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("seed", [None, 3, 11])
def test_discovery_by_label_on_every_layout(make_board, layout, seed):
    sim = make_board(layout, shuffle_seed=seed)
    with only_source(sim.root) as source:
        assert source.kind == KINDS[LAYOUTS[layout].driver]
        assert source.method == "simulated"
        assert sorted(source.rail_names()) == sorted(rail_names(layout))
        assert "NC" not in source.rail_names()
        policy = policy_for(source, PowerOptions(sysfs_root=sim.root))
        assert list(policy.total) == TOTALS[layout]
        # Readings come back as the simulator wrote them, rail by rail.
        for rail in source.rail_names():
            sim.set_power(rail, 1234.0)
        reading = source.read()
        expected = [sim.actual(r) for r in source.rail_names()]
        assert reading.mw == pytest.approx(expected)
        assert not reading.errors


def test_agx_orin_keeps_the_excluded_rail_out_of_the_total(make_board):
    sim = make_board("agx-orin-jp5")
    source, policy = open_source("auto", PowerOptions(sysfs_root=sim.root))
    with source:
        assert "VDDQ_VDD2_1V8AO" in source.rail_names()
        assert policy.excluded == ("VDDQ_VDD2_1V8AO",)


def test_sub_rails_are_never_added_to_the_parent(make_board):
    sim = make_board("tx2-jp4")
    source, policy = open_source("auto", PowerOptions(sysfs_root=sim.root))
    with source:
        assert policy.total == ("VDD_IN",)
        sampler = ThreadSampler(source, 0.005).start()
        time.sleep(0.1)
        log = sampler.stop()
    from power.report import total_series

    _, values, _ = total_series(log, policy.total)
    assert set(values) == {sim.actual("VDD_IN")}


@pytest.mark.parametrize("layout", ["tx2-jp4", "orin-nx-jp5", "rpi-ina3221"])
def test_voltage_times_current_matches_power(make_board, layout):
    sim = make_board(layout)
    with only_source(sim.root) as source:
        for rail, mw in zip(source.rail_names(), (4321.0, 987.0, 55.0)):
            sim.set_power(rail, mw)
        reading = source.read(full=True)
        for mw, mv, ma in zip(reading.mw, reading.mv, reading.ma):
            assert mv is not None and ma is not None
            # One mA of rounding at the bus voltage, plus the IIO file's own 1 mW rounding.
            assert abs(mw - mv * ma / 1000.0) <= mv / 1000.0 + 1.0


def test_hwmon_reports_sensor_settings_and_time_constant(make_board):
    sim = make_board("orin-nx-jp5")
    with only_source(sim.root) as source:
        info = source.describe()
    chip = info["chips"][0]
    assert chip["chip"] == "1-0040"
    assert chip["samples"] == 1 and chip["update_interval_ms"] == 6
    assert chip["shunt_resistor_uohm"] == {"shunt1": 5000, "shunt2": 5000, "shunt3": 5000}
    assert info["tau_s"] == pytest.approx(0.006)
    json.dumps(info)  # travels in results


def test_unlabelled_pi_channels_named_from_config(make_board):
    sim = make_board("rpi-ina3221")
    names = {"1-0040": ["5V_IN", "NC", "FAN"]}
    options = PowerOptions(sysfs_root=sim.root, rail_names=names, total_rails=["5V_IN"])
    source, policy = open_source("auto", options)
    with source:
        assert source.rail_names() == ["5V_IN", "FAN"]
        assert policy.total == ("5V_IN",) and policy.rule == "configured"
        assert source.describe()["chips"][0]["shunt_resistor_uohm"]["shunt1"] == 10000
    # Without config the channels still read, under their ids, and there is no total.
    with only_source(sim.root) as source:
        assert source.rail_names() == ["1-0040/in1", "1-0040/in2", "1-0040/in3"]
        assert not policy_for(source, PowerOptions(sysfs_root=sim.root)).total


def test_iio_dir_named_iio_device_is_found(make_board):
    sim = make_board("tx2-jp4", iio_dir_name="iio_device")
    with only_source(sim.root) as source:
        assert "VDD_IN" in source.rail_names()


def _discover_as_nobody(root):
    """Discovery in a child process without root, as an agent runs on a JetPack 4 board."""
    code = (
        "import json, os, sys\n"
        # Imports first: the interpreter's own files may sit where nobody cannot read.
        "from power.discover import PowerOptions, discover\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "[s] = discover(PowerOptions(sysfs_root=sys.argv[1]))\n"
        "print(json.dumps({'rails': s.rail_names(), 'describe': s.describe(),\n"
        "                  'mw': s.read().mw}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, root],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_unreadable_rail_names_fall_back_to_the_board_map():
    # rail_name_K is 0600 in the R32 driver: readable by root only. Root reads everything, so
    # as root the check runs in a child that gives root up (the tree must be world-readable).
    root = tempfile.mkdtemp(prefix="halofarm-sim-", dir="/tmp")
    try:
        os.chmod(root, 0o755)
        sim = SimBoard(os.path.join(root, "tx2"), "tx2-jp4").create()
        sim.close()  # only read from here on
        mode = os.stat(
            os.path.join(sim.root, "sys/bus/i2c/drivers/ina3221x/0-0041/iio:device1/rail_name_0")
        ).st_mode
        assert mode & 0o777 == 0o600
        if os.geteuid() == 0:
            got = _discover_as_nobody(sim.root)
            rails, info, mw = got["rails"], got["describe"], got["mw"]
        else:
            with only_source(sim.root) as source:
                rails, info, mw = source.rail_names(), source.describe(), source.read().mw
        assert sorted(rails) == sorted(rail_names("tx2-jp4"))
        sources = {n: s for chip in info["chips"] for n, s in chip["name_sources"].items()}
        assert sources["VDD_IN"] == "board map (tx2)"
        assert None not in mw
        # running_mode is 0600 too: unknown without root, and said so.
        assert all(chip["running_mode"] is None for chip in info["chips"])
    finally:
        subprocess.run(["rm", "-rf", root], check=False)


def test_config_rail_names_win_over_sysfs(make_board):
    sim = make_board("nano-jp4")
    names = {"6-0040": ["IN", "GPU", "CPU"]}
    with only_source(sim.root, rail_names=names) as source:
        assert source.rail_names() == ["IN", "GPU", "CPU"]


def test_missing_files_skip_the_channel(make_board):
    sim = make_board("tx2-jp4")
    gone = [p for p in sim.rail_files("VDD_SYS_DDR") if p.endswith("in_power2_input")]
    assert gone
    os.unlink(gone[0])
    with only_source(sim.root) as source:
        assert "VDD_SYS_DDR" not in source.rail_names()
        assert "VDD_IN" in source.rail_names()


def test_rail_disappearing_mid_run_is_recorded_and_the_run_goes_on(make_board):
    sim = make_board("tx2-jp4")
    source, policy = open_source("auto", PowerOptions(sysfs_root=sim.root))
    with source:
        sampler = ThreadSampler(source, 0.005).start()
        time.sleep(0.1)
        sim.remove_rail("VDD_SYS_CPU")
        time.sleep(0.1)
        log = sampler.stop()
    errors = log.errors["VDD_SYS_CPU"]
    assert errors.count >= 5 and errors.first
    names = [r.name for r in log.rails]
    cpu = log.mw[names.index("VDD_SYS_CPU")]
    assert cpu[0] is not None and cpu[-1] is None
    assert None not in log.mw[names.index("VDD_IN")]
    assert "VDD_SYS_CPU" not in log.errors or "VDD_IN" not in log.errors


def test_garbage_content_is_skipped_and_counted(make_board):
    sim = make_board("orin-nx-jp5")
    with only_source(sim.root) as source:
        sim.corrupt("VDD_SOC", b"\x00\xffnot-a-number\n")
        bad = source.read()
        k = source.rail_names().index("VDD_SOC")
        assert bad.mw[k] is None and "not a number" in bad.errors["VDD_SOC"]
        assert bad.mw[source.rail_names().index("VDD_IN")] is not None
        sim.set_power("VDD_SOC", 1500.0)
        assert source.read().mw[k] == pytest.approx(sim.actual("VDD_SOC"))


def test_running_mode_reported_and_fixed_only_when_asked(make_board):
    sim = make_board("tx2-jp4", running_mode=0)
    mode_files = [
        os.path.join(d, "running_mode")
        for d in sim.data_dirs()
        if os.path.exists(os.path.join(d, "running_mode"))
    ]
    assert mode_files
    with only_source(sim.root) as source:
        assert {c["running_mode"] for c in source.describe()["chips"]} == {0}
    assert all(open(f).read().strip() == "0" for f in mode_files)
    with only_source(sim.root, fix_running_mode=True) as source:
        chips = source.describe()["chips"]
        assert all(c["running_mode_forced"] for c in chips)
        assert all(open(f).read().strip() == "1" for f in mode_files)
    assert all(open(f).read().strip() == "0" for f in mode_files)  # restored on close


def test_no_sources_on_an_empty_root(tmp_path):
    assert discover(PowerOptions(sysfs_root=str(tmp_path))) == []
