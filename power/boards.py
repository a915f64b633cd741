"""What is known about boards without asking them: the device-tree model, the rail names NVIDIA's
device trees give each INA3221 channel (for the JetPack 4 driver whose ``rail_name_K`` files only
root may read), and which rails make "total board power" (reference power.md §5-6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from power.errors import RailPolicyError
from power.sysfs import read_text, under

MODEL_FILES = ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model")

# (substring of the device-tree model, board key); the first match wins, so the specific
# names come before the ones they contain ("TX2 NX" before "TX2", "Orin Nano" before "Nano").
_MODEL_KEYS: Tuple[Tuple[str, str], ...] = (
    ("TX2 NX", "tx2-nx"),
    ("TX2", "tx2"),
    ("quill", "tx2"),
    ("TX1", "tx1"),
    ("Xavier NX", "xavier-nx"),
    ("AGX Xavier", "agx-xavier"),
    ("Jetson-AGX", "agx-xavier"),
    ("AGX Orin", "agx-orin"),
    ("Orin NX", "orin-nx"),
    ("Orin Nano", "orin-nx"),
    ("Nano", "nano"),
    ("Raspberry Pi", "rpi"),
)

# Board key -> I2C address -> channel 0..2 rail names, for the JetPack 4 IIO driver.
IIO_RAIL_NAMES: Dict[str, Dict[int, Sequence[str]]] = {
    "tx2": {
        0x40: ("VDD_SYS_GPU", "VDD_SYS_SOC", "VDD_4V0_WIFI"),
        0x41: ("VDD_IN", "VDD_SYS_CPU", "VDD_SYS_DDR"),
        0x42: ("VDD_MUX", "VDD_5V0_IO_SYS", "VDD_3V3_SYS"),
        0x43: ("VDD_3V3_IO_SLP", "VDD_1V8_IO", "VDD_3V3_SYS_M2"),
    },
    "nano": {0x40: ("POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU")},
    "tx1": {0x40: ("VDD_IN", "VDD_GPU", "VDD_CPU")},
    "tx2-nx": {0x40: ("VDD_IN", "VDD_CPU_GPU", "VDD_SOC")},
    "xavier-nx": {0x40: ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC")},
    "agx-xavier": {0x40: ("GPU", "CPU", "SOC"), 0x41: ("CV", "VDDRQ", "SYS5V")},
}

AGX_XAVIER_RAILS = ("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V")
AGX_ORIN_TOTAL = ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0")
PARENT_RAILS = ("VDD_IN", "POM_5V_IN")


def read_model(sysfs_root: str = "/") -> Optional[str]:
    """The device-tree model string (``NVIDIA Jetson TX2 Developer Kit``), or None (x86, DMI)."""
    for path in MODEL_FILES:
        text = read_text(under(sysfs_root, path))
        if text:
            return text.replace("\x00", "").strip() or None
    return None


def board_key(model: Optional[str]) -> Optional[str]:
    if not model:
        return None
    for needle, key in _MODEL_KEYS:
        if needle in model:
            return key
    return None


@dataclass(frozen=True)
class RailPolicy:
    """Which rails add up to total board power, and why."""

    total: Tuple[str, ...]  # empty: this board has no known total
    rule: str
    includes_carrier: bool = False
    excluded: Tuple[str, ...] = ()  # rails deliberately kept out of the total

    def as_dict(self) -> Dict[str, object]:
        return {
            "rails": list(self.total),
            "rule": self.rule,
            "includes_carrier": self.includes_carrier,
            "excluded": list(self.excluded),
        }


def rail_policy(
    rails: Sequence[str],
    configured: Optional[Sequence[str]] = None,
    include_carrier: bool = False,
    kind: str = "",
) -> RailPolicy:
    """The total-power rule for a board with these rails (power.md §6).

    A parent rail (``VDD_IN``, ``POM_5V_IN``) is the total on its own: its sub-rails are already
    inside it. AGX Xavier has parallel rails and no parent, so all six add up; AGX Orin's total
    leaves out ``VDDQ_VDD2_1V8AO``, which ``VIN_SYS_5V0`` feeds. Anything else has no total
    unless the configuration names one. RAPL's total is the platform domain (``psys``) when
    there is one, else the CPU packages (which leave out the rest of the machine); a model
    estimate has one rail, its total; so does a serial meter (the sum of its channels, each a
    supply wired through it).
    """
    present = set(rails)
    if configured:
        missing = [r for r in configured if r not in present]
        if missing:
            raise RailPolicyError(
                f"power.total_rails names {', '.join(missing)}, which this board does not have "
                f"(rails: {', '.join(rails) or 'none'})"
            )
        return RailPolicy(tuple(configured), "configured")
    for parent in PARENT_RAILS:
        if parent in present:
            carrier = include_carrier and "VDD_MUX" in present
            total = (parent, "VDD_MUX") if carrier else (parent,)
            rule = f"parent rail {parent}" + (" + carrier VDD_MUX" if carrier else "")
            return RailPolicy(total, rule, includes_carrier=carrier)
    if present.issuperset(AGX_XAVIER_RAILS):
        return RailPolicy(AGX_XAVIER_RAILS, "AGX Xavier: parallel rails, sum of all six")
    if present.issuperset(AGX_ORIN_TOTAL):
        excluded = ("VDDQ_VDD2_1V8AO",) if "VDDQ_VDD2_1V8AO" in present else ()
        return RailPolicy(
            AGX_ORIN_TOTAL,
            "AGX Orin: VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 "
            "(VDDQ_VDD2_1V8AO is inside VIN_SYS_5V0)",
            excluded=excluded,
        )
    if kind == "rapl":
        if "psys" in present:
            return RailPolicy(("psys",), "RAPL psys (platform)")
        packages = tuple(r for r in rails if r.startswith("package-"))
        if packages:
            return RailPolicy(packages, "RAPL packages (CPU sockets only, not the whole system)")
    if kind == "estimate" and len(rails) == 1:
        return RailPolicy(tuple(rails), "model estimate")
    if kind == "serial-meter" and rails:
        # Each channel of a meter is a supply the user wired through it: they add up.
        rule = (
            "serial meter: its supply" if len(rails) == 1 else "serial meter: sum of its channels"
        )
        return RailPolicy(tuple(rails), rule)
    return RailPolicy((), "none: unknown rail set; name the total with power.total_rails")


def sub_rails(rails: Sequence[str], policy: RailPolicy) -> List[str]:
    return [r for r in rails if r not in policy.total]
