"""The simulated boards of power.simboard: trees as the kernel lays them out, values rewritten in
place, exact ground truth, and a driver process whose edges land where the analytic wave says.

Real files under tmp_path, real child processes; timing checks have wide margins."""

from __future__ import annotations

import glob
import json
import os
import stat
import subprocess
import sys
import time
from typing import Dict, List, Optional

import pytest

from power.errors import PowerError, ReadError
from power.simboard import (
    EXTRA_HWMONS,
    HWMON,
    IIO,
    LAYOUTS,
    MARKER,
    Constant,
    Driver,
    DriverError,
    FollowLoad,
    Record,
    SimBoard,
    SimBoardError,
    Square,
    TreeCpu,
    channel_names,
    device_numbers,
    drive,
    log_energy_mj,
    main,
    parse_wave,
    quantise,
    rail_names,
    read_log,
    square_energy_mj,
    wave_spec,
)
from power.sysfs import Attr

MS = 1_000_000
S = 1_000_000_000


def text(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode()


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def sysfs(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def data_dirs(root: str, driver: str) -> Dict[str, str]:
    """chip ("0-0041") -> its iio/hwmon directory, found through the driver links."""
    pattern = "*/iio*" if driver == IIO else "*/hwmon/hwmon*"
    found = glob.glob(sysfs(root, f"/sys/bus/i2c/drivers/{driver}/{pattern}"))
    return {p.split(os.sep)[-2 if driver == IIO else -3]: p for p in found}


def numbers(root: str, driver: str) -> Dict[str, int]:
    """chip -> its iio:device / hwmon number."""
    dirs = data_dirs(root, driver)
    return {
        c: int("".join(ch for ch in os.path.basename(p) if ch.isdigit())) for c, p in dirs.items()
    }


@pytest.fixture
def root(tmp_path) -> str:
    return str(tmp_path / "board")


# ---------------------------------------------------------------------------------------------
# Trees


def iio_names(k: int, labelled: bool) -> List[str]:
    names = [
        f"in_power{k}_input",
        f"in_current{k}_input",
        f"in_voltage{k}_input",
        f"in_power{k}_trigger_input",
        f"in_current{k}_trigger_input",
        f"ui_input_{k}",
        f"crit_power_limit_{k}",
        f"crit_current_limit_{k}",
        f"warn_current_limit_{k}",
        f"polling_delay_{k}",
    ]
    return names + ([f"rail_name_{k}"] if labelled else [])


def hwmon_names(k: int, labelled: bool) -> List[str]:
    names = [
        f"in{k}_input",
        f"in{k + 3}_input",
        f"curr{k}_input",
        f"curr{k}_max",
        f"curr{k}_crit",
        f"curr{k}_max_alarm",
        f"curr{k}_crit_alarm",
        f"in{k}_enable",
        f"shunt{k}_resistor",
    ]
    return names + ([f"in{k}_label"] if labelled else [])


def check_links_inside(root: str) -> int:
    real_root = os.path.realpath(root) + os.sep
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                count += 1
                assert not os.path.isabs(os.readlink(path)), path
                target = os.path.realpath(path)
                assert target.startswith(real_root), (path, target)
                assert os.path.exists(target), path
    return count


@pytest.mark.parametrize("key", sorted(LAYOUTS))
def test_every_layout_lays_out_the_documented_tree(root, key):
    layout = LAYOUTS[key]
    board = SimBoard(root, key).create()
    board.close()

    meta = json.loads(text(os.path.join(root, MARKER)))
    assert meta["layout"] == key and meta["version"] == 1
    model = layout.model.encode() + b"\x00"
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        with open(sysfs(root, path), "rb") as f:
            assert f.read() == model
    assert check_links_inside(root) > 0

    dirs = data_dirs(root, layout.driver)
    assert sorted(dirs) == sorted(c.dev_name for c in layout.chips)
    for chip in layout.chips:
        dev = sysfs(root, f"/sys/bus/i2c/devices/{chip.dev_name}")
        assert os.path.realpath(dev) == os.path.realpath(
            sysfs(root, f"/sys/bus/i2c/drivers/{layout.driver}/{chip.dev_name}")
        )
        assert text(os.path.join(dev, "name")) == layout.driver + "\n"
        data = dirs[chip.dev_name]
        present = set(os.listdir(data))
        if layout.driver == IIO:
            expected = {"name", "running_mode"}
            for k in range(3):
                expected.update(iio_names(k, chip.labels[k] is not None))
            assert present == expected
            assert text(os.path.join(data, "name")) == "ina3221x\n"
            assert text(os.path.join(data, "running_mode")) == "1\n"
            assert mode(os.path.join(data, "running_mode")) == 0o600
            for k in range(3):
                assert text(os.path.join(data, f"rail_name_{k}")) == f"{chip.labels[k]}\n"
                for name in ("rail_name", "ui_input", "crit_power_limit", "polling_delay"):
                    assert mode(os.path.join(data, f"{name}_{k}")) == 0o600
                for name in ("in_power", "in_current", "in_voltage"):
                    assert mode(os.path.join(data, f"{name}{k}_input")) == 0o644
                mv = chip.volts[k]
                mw, ma = quantise(IIO, mv, chip.idle_mw[k])
                assert text(os.path.join(data, f"in_power{k}_input")) == f"{int(mw)}\n"
                assert text(os.path.join(data, f"in_voltage{k}_input")) == f"{mv}\n"
                assert text(os.path.join(data, f"ui_input_{k}")) == f"{mv} {ma}\n"
                assert text(os.path.join(data, f"polling_delay_{k}")) == "0 ms\n"
                assert text(os.path.join(data, f"crit_power_limit_{k}")).endswith(" mw\n")
                assert text(os.path.join(data, f"warn_current_limit_{k}")).endswith(" ma\n")
        else:
            expected = {"name", "device", "samples", "update_interval", "in7_input", "in7_label"}
            expected |= {"curr4_input", "curr4_crit", "curr4_crit_alarm"}
            for k in (1, 2, 3):
                expected.update(hwmon_names(k, chip.labels[k - 1] is not None))
            assert present == expected
            assert not [n for n in present if n.startswith("power")]
            number = os.path.basename(data)
            class_link = sysfs(root, f"/sys/class/hwmon/{number}")
            assert os.path.realpath(class_link) == os.path.realpath(data)
            assert text(os.path.join(class_link, "name")) == "ina3221\n"
            assert os.path.realpath(os.path.join(data, "device")) == os.path.realpath(dev)
            assert text(os.path.join(data, "samples")) == "1\n"
            assert text(os.path.join(data, "update_interval")) == "6\n"
            assert text(os.path.join(data, "in7_label")) == "sum of shunt voltages\n"
            for k in (1, 2, 3):
                label = chip.labels[k - 1]
                if label is not None:
                    assert text(os.path.join(data, f"in{k}_label")) == label + "\n"
                    assert mode(os.path.join(data, f"in{k}_label")) == 0o444
                assert text(os.path.join(data, f"shunt{k}_resistor")) == f"{chip.shunt_uohm}\n"
                assert text(os.path.join(data, f"in{k}_enable")) == "1\n"
                for name in (f"in{k}_input", f"curr{k}_input", f"in{k + 3}_input"):
                    assert mode(os.path.join(data, name)) == 0o644
                mv = chip.volts[k - 1]
                _, ma = quantise(HWMON, mv, chip.idle_mw[k - 1])
                assert text(os.path.join(data, f"in{k}_input")) == f"{mv}\n"
                assert text(os.path.join(data, f"curr{k}_input")) == f"{ma}\n"
                shunt = ma * chip.shunt_uohm // 1000
                assert text(os.path.join(data, f"in{k + 3}_input")) == f"{shunt}\n"


def test_tx2_paths_are_the_ones_on_the_board(root):
    SimBoard(root, "tx2-jp4").create().close()
    dev = "/sys/devices/3160000.i2c/i2c-0/0-0041"
    assert text(sysfs(root, dev + "/iio:device1/rail_name_0")) == "VDD_IN\n"
    assert text(sysfs(root, "/sys/bus/i2c/drivers/ina3221x/0-0041/iio:device1/in_power0_input"))
    assert text(sysfs(root, "/sys/bus/i2c/devices/0-0041/name")) == "ina3221x\n"
    assert os.path.realpath(sysfs(root, "/sys/bus/iio/devices/iio:device0")) == os.path.realpath(
        sysfs(root, "/sys/devices/3160000.i2c/i2c-0/0-0040/iio:device0")
    )
    # The driver directory also holds bind/unbind, which are not devices.
    assert {"bind", "unbind"} <= set(os.listdir(sysfs(root, "/sys/bus/i2c/drivers/ina3221x")))
    assert text(sysfs(root, "/sys/bus/i2c/devices/i2c-0/name")) == "Tegra I2C adapter\n"


def test_old_iio_directory_name(root):
    board = SimBoard(root, "tx2-jp4", iio_dir_name="iio_device").create()
    assert text(sysfs(root, "/sys/devices/3160000.i2c/i2c-0/0-0041/iio_device/rail_name_0")) == (
        "VDD_IN\n"
    )
    assert not glob.glob(sysfs(root, "/sys/bus/i2c/drivers/ina3221x/*/iio:device*"))
    assert board.set_power("VDD_IN", 4000) == 4000.0
    board.close()
    assert SimBoard.attach(root).actual("VDD_IN") == 4000.0


def test_rpi_has_no_labels_and_the_default_shunt(root):
    board = SimBoard(root, "rpi-ina3221").create()
    (data,) = data_dirs(root, HWMON).values()
    assert not [n for n in os.listdir(data) if n.endswith("_label") and n != "in7_label"]
    assert text(os.path.join(data, "shunt1_resistor")) == "10000\n"
    assert board.rails() == ["1-0040/in1", "1-0040/in2", "1-0040/in3"]
    assert board.set_power("1-0040/in2", 1000) == 1000.0  # 5 V, 200 mA
    assert text(os.path.join(data, "curr2_input")) == "200\n"
    assert text(os.path.join(data, "in5_input")) == "2000\n"  # 200 mA x 10 mΩ
    assert text(sysfs(root, "/sys/bus/i2c/devices/i2c-1/name")) == "bcm2835 (i2c@7e804000)\n"
    board.close()


def test_agx_orin_not_connected_channels(root):
    board = SimBoard(root, "agx-orin-jp5").create()
    data = data_dirs(root, HWMON)["1-0041"]
    assert text(os.path.join(data, "in1_label")) == "NC\n"
    assert text(os.path.join(data, "in3_label")) == "NC\n"
    assert text(os.path.join(data, "in2_label")) == "VDDQ_VDD2_1V8AO\n"
    assert "NC" not in board.rails() and "VDDQ_VDD2_1V8AO" in board.rails()
    assert board.channels()[3:] == ["1-0041/in1", "VDDQ_VDD2_1V8AO", "1-0041/in3"]
    assert board.set_power("1-0041/in1", 0) == 0.0
    with pytest.raises(ValueError, match="no bus voltage"):
        board.set_power("1-0041/in1", 10)
    board.close()


def test_names_of_channels_and_rails():
    assert rail_names("agx-xavier-jp4") == ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"]
    assert channel_names("nano-jp4") == ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]
    with pytest.raises(ValueError, match="tx2-jp4"):
        rail_names("tx3")


@pytest.mark.parametrize("key", sorted(LAYOUTS))
def test_shuffled_numbers_keep_labels_and_add_unrelated_devices(tmp_path, key):
    driver = LAYOUTS[key].driver
    plain = str(tmp_path / "plain")
    SimBoard(plain, key).create().close()
    base = numbers(plain, driver)
    assert sorted(base.values()) == list(range(len(base)))

    for seed in (1, 2, 3):
        shuffled = str(tmp_path / f"seed{seed}")
        SimBoard(shuffled, key, shuffle_seed=seed).create().close()
        got = numbers(shuffled, driver)
        assert got != base and sorted(got) == sorted(base)
        for chip, path in data_dirs(shuffled, driver).items():
            other = data_dirs(plain, driver)[chip]
            labels = sorted(n for n in os.listdir(path) if "label" in n or "rail_name" in n)
            for name in labels:
                assert text(os.path.join(path, name)) == text(os.path.join(other, name))
        names = [text(p).strip() for p in glob.glob(sysfs(shuffled, "/sys/class/hwmon/*/name"))]
        assert {e[0] for e in EXTRA_HWMONS} <= set(names)
        hwmons = glob.glob(sysfs(shuffled, "/sys/class/hwmon/hwmon*"))
        assert len(hwmons) == len(set(hwmons)) == len(names)
        assert check_links_inside(shuffled) > 0

    again = str(tmp_path / "again")
    SimBoard(again, key, shuffle_seed=1).create().close()
    assert numbers(again, driver) == numbers(str(tmp_path / "seed1"), driver)


def test_device_numbers():
    assert device_numbers(3, 2, None) == [0, 1, 2, 3, 4]
    for seed in range(50):
        got = device_numbers(1, 2, seed)
        assert sorted(got) == [0, 1, 2] and got[0] != 0
        assert device_numbers(1, 2, seed) == got


# ---------------------------------------------------------------------------------------------
# Values


def test_hwmon_power_is_quantised_to_whole_milliamps(root):
    board = SimBoard(root, "orin-nx-jp5").create()
    data = data_dirs(root, HWMON)["1-0040"]
    actual = board.set_power("VDD_IN", 5297.3)
    assert text(os.path.join(data, "curr1_input")) == "279\n"  # 5297.3 mW / 19 V = 278.8 mA
    assert actual == 19000 * 279 / 1000 == board.actual("VDD_IN")
    assert text(os.path.join(data, "in4_input")) == "1395\n"  # 279 mA x 5 mΩ in µV
    for mw in (0, 1, 9.4, 9.6, 123.4, 1000, 5000.5, 15000, 33333.3):
        actual = board.set_power("VDD_SOC", mw)
        mv = int(text(os.path.join(data, "in3_input")))
        ma = int(text(os.path.join(data, "curr3_input")))
        assert actual == mv * ma / 1000 == board.quantise("VDD_SOC", mw)
        assert abs(actual - mw) <= mv / 2000  # within half a mA
    currents = [int(text(os.path.join(data, f"curr{k}_input"))) for k in (1, 2, 3)]
    shunts = [int(text(os.path.join(data, f"in{k}_input"))) for k in (4, 5, 6)]
    assert int(text(os.path.join(data, "in7_input"))) == sum(shunts)
    assert int(text(os.path.join(data, "curr4_input"))) == sum(currents)
    board.close()


def test_iio_power_is_whole_milliwatts_and_ui_input_matches(root):
    board = SimBoard(root, "tx2-jp4").create()
    data = data_dirs(root, IIO)["0-0041"]
    assert board.set_power("VDD_IN", 5297.4) == 5297.0
    assert text(os.path.join(data, "in_power0_input")) == "5297\n"
    assert text(os.path.join(data, "in_current0_input")) == "279\n"
    assert text(os.path.join(data, "in_voltage0_input")) == "19000\n"
    assert text(os.path.join(data, "ui_input_0")) == "19000 279\n"
    assert text(os.path.join(data, "in_power0_trigger_input")) == "5297\n"
    assert text(os.path.join(data, "in_current0_trigger_input")) == "279\n"
    with pytest.raises(ValueError, match=">= 0"):
        board.set_power("VDD_IN", -1)
    with pytest.raises(ValueError, match="finite"):
        board.set_power("VDD_IN", float("nan"))
    board.close()


def test_triggered_mode_zeroes_the_trigger_files_until_continuous(root):
    board = SimBoard(root, "nano-jp4", running_mode=0).create()
    data = data_dirs(root, IIO)["6-0040"]
    assert text(os.path.join(data, "running_mode")) == "0\n"
    board.set_power("POM_5V_IN", 2500)
    assert text(os.path.join(data, "in_power0_input")) == "2500\n"
    assert text(os.path.join(data, "in_power0_trigger_input")) == "0\n"
    with open(os.path.join(data, "running_mode"), "w") as f:  # what a root reader does
        f.write("1\n")
    board.refresh()
    assert text(os.path.join(data, "in_power0_trigger_input")) == "2500\n"
    assert text(os.path.join(data, "in_current0_trigger_input")) == "500\n"
    board.close()


@pytest.mark.parametrize("key,rail", [("tx2-jp4", "VDD_IN"), ("orin-nx-jp5", "VDD_IN")])
def test_values_change_in_place_under_an_open_descriptor(root, key, rail):
    board = SimBoard(root, key).create()
    path = board.rail_files(rail)[0]
    fd = os.open(path, os.O_RDONLY)
    try:
        inode = os.fstat(fd).st_ino
        board.set_power(rail, 60000)
        long = os.pread(fd, 64, 0)
        board.set_power(rail, 19)  # shorter content: the old tail must be cut
        short = os.pread(fd, 64, 0)
        assert os.stat(path).st_ino == inode
        assert os.fstat(fd).st_nlink == 1
    finally:
        os.close(fd)
    assert long in (b"60000\n", b"3158\n")  # IIO mW / hwmon mA
    assert short in (b"19\n", b"1\n")
    board.close()


def test_remove_and_restore_a_rail(root):
    board = SimBoard(root, "orin-nx-jp5").create()
    data = data_dirs(root, HWMON)["1-0040"]
    current = Attr(os.path.join(data, "curr2_input"))
    assert current.read_int() == 32  # 600 mW at 19 V
    board.remove_rail("VDD_CPU_GPU_CV")
    with pytest.raises(ReadError, match="removed"):
        current.read_int()
    for name in ("curr2_input", "in2_input", "in5_input"):
        assert not os.path.exists(os.path.join(data, name))
    assert text(os.path.join(data, "in2_label")) == "VDD_CPU_GPU_CV\n"
    assert Attr(os.path.join(data, "in1_input")).read_int() == 19000  # other rails unaffected
    with pytest.raises(SimBoardError, match="restore_rail"):
        board.set_power("VDD_CPU_GPU_CV", 100)
    board.restore_rail("VDD_CPU_GPU_CV")
    assert Attr(os.path.join(data, "curr2_input")).read_int() == 32
    assert board.set_power("VDD_CPU_GPU_CV", 1900) == 1900.0
    assert text(os.path.join(data, "curr2_input")) == "100\n"
    board.close()


def test_corrupt_until_the_next_value(root):
    board = SimBoard(root, "tx2-jp4").create()
    attr = Attr(board.rail_files("VDD_SYS_GPU")[0])
    board.corrupt("VDD_SYS_GPU", b"garbage\n")
    for path in board.rail_files("VDD_SYS_GPU"):
        assert text(path) == "garbage\n"
    with pytest.raises(ReadError, match="not a number"):
        attr.read_int()
    board.set_power("VDD_SYS_GPU", 777)
    assert attr.read_int() == 777
    with pytest.raises(ValueError, match="bytes"):
        board.corrupt("VDD_SYS_GPU", "text")  # type: ignore[arg-type]
    attr.close()
    board.close()


def test_attach_sees_the_values_another_board_wrote(root):
    first = SimBoard(root, "agx-xavier-jp4", shuffle_seed=7).create()
    first.set_power("SYS5V", 4321)
    first.remove_rail("CV")
    first.close()
    again = SimBoard.attach(root)
    assert again.layout.key == "agx-xavier-jp4"
    assert again.data_dirs() == first.data_dirs()
    assert again.actual("SYS5V") == 4321.0
    with pytest.raises(SimBoardError, match="removed"):
        again.set_power("CV", 1)
    again.close()


def test_misuse_is_refused_with_a_way_out(tmp_path, root):
    with pytest.raises(ValueError, match="choose one of"):
        SimBoard(root, "tx2")
    with pytest.raises(ValueError, match="iio_dir_name"):
        SimBoard(root, "tx2-jp4", iio_dir_name="iio")
    with pytest.raises(ValueError, match="refusing"):
        SimBoard("/", "tx2-jp4").create()
    board = SimBoard(root, "nano-jp4").create()
    with pytest.raises(SimBoardError, match="no rail 'VDD_IN'.*POM_5V_IN"):
        board.set_power("VDD_IN", 1)
    board.close()
    with pytest.raises(SimBoardError, match="attach"):
        SimBoard(root, "nano-jp4").create()
    os.makedirs(str(tmp_path / "real" / "sys"))
    with pytest.raises(SimBoardError, match="empty directory"):
        SimBoard(str(tmp_path / "real"), "nano-jp4").create()
    with pytest.raises(SimBoardError, match="python -m power.simboard create"):
        SimBoard.attach(str(tmp_path / "nothing"))
    assert issubclass(SimBoardError, PowerError)


# ---------------------------------------------------------------------------------------------
# Waves and ground truth


def test_square_wave_levels_and_edges():
    wave = Square(100.0, 300.0, 0.01, duty=0.25, t0_ns=1000 * MS)
    assert wave.value(999 * MS) == 100.0  # low before the first rising edge
    assert wave.next_change_ns(500 * MS) == 1000 * MS
    assert wave.value(1000 * MS) == 300.0
    assert wave.value(1002 * MS) == 300.0
    assert wave.value(1002 * MS + MS // 2) == 100.0
    assert wave.next_change_ns(1001 * MS) == 1002 * MS + MS // 2
    assert wave.next_change_ns(1003 * MS) == 1010 * MS
    assert wave.edges_ns(995 * MS, 1020 * MS) == [
        1000 * MS,
        1002 * MS + MS // 2,
        1010 * MS,
        1012 * MS + MS // 2,
    ]
    with pytest.raises(ValueError, match="duty"):
        Square(0, 1, 0.1, duty=1.0)
    with pytest.raises(ValueError, match="period"):
        Square(0, 1, 0.0)


def test_square_energy_by_hand():
    # 1 s period, high 0.25 s from t0 = 10 s. Window 10.1 s .. 12.5 s (starts mid-pulse):
    # high 10.1-10.25, 11-11.25, 12-12.25 = 0.65 s of 2.4 s -> 1000 x 2.4 + 2000 x 0.65 mJ.
    args = (1000.0, 3000.0, 1.0, 0.25, 10 * S)
    assert square_energy_mj(*args, 10 * S + S // 10, 12 * S + S // 2) == 3700.0
    # Across t0: low before the first rising edge, then 0.1 s high.
    assert square_energy_mj(*args, 9 * S + 9 * S // 10, 10 * S + S // 10) == 400.0
    # A window inside one low stretch.
    assert square_energy_mj(*args, 10 * S + S // 2, 10 * S + 3 * S // 4) == 250.0
    assert square_energy_mj(*args, 5 * S, 5 * S) == 0.0
    with pytest.raises(ValueError):
        square_energy_mj(*args, 2, 1)


def test_log_energy_by_hand():
    records = [
        Record(1 * S, "VDD_IN", 1000.0),
        Record(2 * S, "VDD_SOC", 50.0),
        Record(3 * S, "VDD_IN", 4000.0),
        Record(3 * S + S // 2, "VDD_IN", 2000.0),
    ]
    # 1000 x 1.5 s + 4000 x 0.5 s + 2000 x 1.5 s (the last value holds)
    assert log_energy_mj(records, "VDD_IN", 1 * S + S // 2, 5 * S) == 6500.0
    assert log_energy_mj(records, "VDD_IN", 3 * S + S // 4, 3 * S + S // 4) == 0.0
    assert log_energy_mj(records, "VDD_SOC", 2 * S, 4 * S) == 100.0
    with pytest.raises(ValueError, match="before the first logged value"):
        log_energy_mj(records, "VDD_IN", 0, 2 * S)
    with pytest.raises(ValueError, match="no records"):
        log_energy_mj(records, "VDD_GPU", 2 * S, 3 * S)


def test_wave_specs_round_trip():
    waves = [
        Constant(1234.5),
        Square(100.0, 2000.0, 0.05, 0.3, 123456789),
        Square(1.0, 2.0, 1.0),
        FollowLoad(4242, 500.0, 2500.0, False, 0.01),
    ]
    for wave in waves:
        assert parse_wave(wave_spec("VDD_IN", wave)) == ("VDD_IN", wave)
    assert parse_wave("1-0040/in1=square:1:2:0.5") == ("1-0040/in1", Square(1.0, 2.0, 0.5))
    assert parse_wave("GPU=follow:1:0:10") == ("GPU", FollowLoad(1, 0.0, 10.0))
    for bad in ("VDD_IN", "VDD_IN=const", "VDD_IN=sine:1", "VDD_IN=square:1:2", "=const:1"):
        with pytest.raises(ValueError, match="expected"):
            parse_wave(bad)
    with pytest.raises(ValueError, match="duty"):
        parse_wave("VDD_IN=square:1:2:0.1:1.5")


def test_tree_cpu_counts_this_process():
    meter = TreeCpu(os.getpid(), include_children=False)
    before = meter.sample()
    start = time.thread_time()
    while time.thread_time() - start < 0.05:  # 50 ms of CPU, however long that takes
        pass
    after = meter.sample()
    # The kernel updates a running task's time at ticks (4-10 ms); allow for that.
    assert 0.03 * S <= after - before <= 5 * S


# ---------------------------------------------------------------------------------------------
# Driving


def test_drive_in_process_writes_and_logs(root, tmp_path):
    log = str(tmp_path / "drive.log")
    drive(root, "nano-jp4", {"POM_5V_CPU": Constant(3333.3)}, log_path=log, stop_after_s=0.05)
    assert text(os.path.join(data_dirs(root, IIO)["6-0040"], "in_power2_input")) == "3333\n"
    records = read_log(log, "nano-jp4")
    assert [(r.rail, r.mw) for r in records] == [("POM_5V_CPU", 3333.0)]
    # A second run on the same tree attaches to it; the layout must match.
    with pytest.raises(SimBoardError, match="nano-jp4"):
        drive(root, "tx2-jp4", {}, stop_after_s=0.01)


def read_power(board: SimBoard, rail: str, fds: List[int]) -> Optional[float]:
    """What a reader computes from the open files: mW (IIO) or mV x mA / 1000 (hwmon)."""
    values = [os.pread(fd, 64, 0).split(b"\n", 1)[0] for fd in fds]
    if board.driver == IIO:
        return float(values[0])
    return int(values[1]) * int(values[0]) / 1000.0


@pytest.mark.parametrize("key", ["tx2-jp4", "orin-nx-jp5"])
def test_driver_writes_square_edges_on_time(root, key):
    board = SimBoard(root, key).create()
    rail = "VDD_IN"
    idle = board.actual(rail)
    low, high = board.quantise(rail, 2000), board.quantise(rail, 6000)
    files = board.rail_files(rail)[:2]  # IIO: power, current; hwmon: current, voltage
    wave = Square(2000.0, 6000.0, 0.05, 0.5, time.monotonic_ns())
    fds = [os.open(p, os.O_RDONLY) for p in files]
    seen = set()
    try:
        with Driver(root, key, {rail: wave}) as driver:
            until = time.monotonic_ns() + 400 * MS
            while time.monotonic_ns() < until:
                seen.add(read_power(board, rail, fds))
                time.sleep(0.001)
            t_stop = time.monotonic_ns()
        records = [r for r in driver.log() if r.rail == rail]
    finally:
        for fd in fds:
            os.close(fd)
        board.close()

    assert seen <= {idle, low, high} and {low, high} <= seen
    assert len(records) >= 6
    assert {r.mw for r in records} == {low, high}
    assert all(a.mw != b.mw for a, b in zip(records, records[1:]))
    # A record is written only when the level changes, so each one after the first shows the
    # level of the last analytic edge before it. A stalled writer is late, never wrong.
    history = [(r.t_ns - wave.t0_ns, r.mw) for r in records]
    edges = wave.edges_ns(records[0].t_ns - wave.period_ns, t_stop)
    for rec in records[1:]:
        edge = max(e for e in edges if e <= rec.t_ns)
        assert rec.mw == (high if wave.value(edge) == wave.high_mw else low), history
    # Most analytic edges after the driver's start were written within 5 ms.
    expected = [e for e in edges if records[0].t_ns < e < t_stop - 5 * MS]
    written = [r.t_ns for r in records[1:]]
    on_time = [e for e in expected if any(e <= t <= e + 5 * MS for t in written)]
    assert len(on_time) >= 0.8 * len(expected) >= 4, history
    a, b = records[0].t_ns, records[-1].t_ns
    logged = log_energy_mj(records, rail, a, b)
    exact = square_energy_mj(low, high, wave.period_s, wave.duty, wave.t0_ns, a, b)
    # Each edge written d late moves (high - low) x d of energy; allow 5 ms per edge.
    assert abs(logged - exact) <= (high - low) * 0.005 * len(expected), history


SPINNER = """
import sys, time
sys.stdin.readline()
t0 = time.monotonic_ns()
while time.monotonic_ns() - t0 < 300_000_000:
    pass
print(t0, time.monotonic_ns(), flush=True)
time.sleep(0.3)
"""


def test_driver_follows_a_process_load(root):
    rail = "VDD_CPU_GPU_CV"
    idle, busy = 500.0, 2500.0
    child = subprocess.Popen(
        [sys.executable, "-c", SPINNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        wave = FollowLoad(child.pid, idle, busy)
        with Driver(root, "orin-nx-jp5", {rail: wave}, update_s=0.002) as driver:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(b"go\n")
            child.stdin.flush()
            spin_start, spin_end = (int(t) for t in child.stdout.readline().split())
            child.wait(timeout=10)
        records = [r for r in driver.log() if r.rail == rail]
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()

    def mean(t0: int, t1: int) -> float:
        return log_energy_mj(records, rail, t0, t1) / ((t1 - t0) / S)

    spinning = mean(spin_start + 60 * MS, spin_end - 10 * MS)
    after = mean(spin_end + 60 * MS, spin_end + 250 * MS)
    assert idle + 0.5 * (busy - idle) <= spinning <= busy + 0.5 * (busy - idle), spinning
    assert after <= idle + 0.15 * (busy - idle), after


def test_driver_reports_a_failed_start(root):
    SimBoard(root, "nano-jp4").create().close()
    driver = Driver(root, "nano-jp4", {"VDD_IN": Constant(1.0)})
    with pytest.raises(DriverError, match="no rail 'VDD_IN'"):
        driver.start()
    assert not driver.running


def test_cli_create_and_layouts(root, capsys):
    assert main(["create", root, "--layout", "xavier-nx-jp5", "--seed", "4"]) == 0
    meta = json.loads(text(os.path.join(root, MARKER)))
    assert meta["layout"] == "xavier-nx-jp5" and meta["shuffle_seed"] == 4
    assert "VDD_CPU_GPU_CV" in capsys.readouterr().out
    assert main(["create", root, "--layout", "xavier-nx-jp5"]) == 2
    assert "already holds" in capsys.readouterr().err
    assert main(["layouts"]) == 0
    assert "rpi-ina3221" in capsys.readouterr().out
