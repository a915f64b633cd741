"""Board facts: device-tree model -> board key, total-power rules per rail set (power.md §5-6)."""

from __future__ import annotations

import pytest

from power.boards import board_key, rail_policy, read_model, sub_rails
from power.errors import RailPolicyError

TX2 = ["VDD_SYS_GPU", "VDD_SYS_SOC", "VDD_4V0_WIFI", "VDD_IN", "VDD_SYS_CPU", "VDD_SYS_DDR"]
TX2_KIT = TX2 + ["VDD_MUX", "VDD_5V0_IO_SYS", "VDD_3V3_SYS"]


@pytest.mark.parametrize(
    "model, key",
    [
        ("NVIDIA Jetson TX2 Developer Kit", "tx2"),
        ("NVIDIA Jetson TX2 NX Developer Kit", "tx2-nx"),
        ("NVIDIA Jetson Nano Developer Kit", "nano"),
        ("Jetson-AGX", "agx-xavier"),
        ("NVIDIA Jetson Xavier NX Developer Kit", "xavier-nx"),
        ("NVIDIA Jetson AGX Orin Developer Kit", "agx-orin"),
        ("NVIDIA Jetson Orin Nano Developer Kit", "orin-nx"),
        ("Raspberry Pi 4 Model B Rev 1.4", "rpi"),
        ("QEMU Virtual Machine", None),
        (None, None),
    ],
)
def test_board_key(model, key):
    assert board_key(model) == key


def test_read_model_strips_the_nul(tmp_path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson TX2 Developer Kit\x00")
    assert read_model(str(tmp_path)) == "NVIDIA Jetson TX2 Developer Kit"
    assert read_model(str(tmp_path / "absent")) is None


@pytest.mark.parametrize(
    "rails, total",
    [
        (TX2, ("VDD_IN",)),
        (["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"], ("POM_5V_IN",)),
        (["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"], ("VDD_IN",)),
        (
            ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"],
            ("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"),
        ),
        (
            ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"],
            ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"),
        ),
        (["1-0040/in1", "1-0040/in2"], ()),
        (["GPU", "CPU", "SOC"], ()),  # half an AGX Xavier is no total
    ],
)
def test_total_rule_per_board(rails, total):
    policy = rail_policy(rails)
    assert policy.total == total
    assert not set(sub_rails(rails, policy)) & set(total)


def test_agx_orin_reports_the_excluded_rail():
    policy = rail_policy(["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"])
    assert policy.excluded == ("VDDQ_VDD2_1V8AO",)


def test_tx2_carrier_only_when_asked():
    assert rail_policy(TX2_KIT).total == ("VDD_IN",)
    kit = rail_policy(TX2_KIT, include_carrier=True)
    assert kit.total == ("VDD_IN", "VDD_MUX") and kit.includes_carrier
    # Without a VDD_MUX rail the request cannot add anything.
    assert rail_policy(TX2, include_carrier=True).total == ("VDD_IN",)


def test_configured_total_wins_and_is_checked():
    assert rail_policy(["a", "b"], configured=["b"]).total == ("b",)
    with pytest.raises(RailPolicyError, match="does not have"):
        rail_policy(["a"], configured=["VDD_IN"])


def test_rapl_and_estimate_rules():
    assert rail_policy(["package-0", "core", "psys"], kind="rapl").total == ("psys",)
    both = rail_policy(["package-0", "package-1", "dram"], kind="rapl")
    assert both.total == ("package-0", "package-1") and "CPU" in both.rule
    assert rail_policy(["EST_TOTAL"], kind="estimate").total == ("EST_TOTAL",)
