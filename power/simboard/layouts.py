"""Board layouts: which INA3221 chips a board has, where they sit, what their channels are
called (``power.md`` §5), and the rail names the simulated boards answer to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

IIO = "ina3221x"
HWMON = "ina3221"


# ---------------------------------------------------------------------------------------------
# Layouts


@dataclass(frozen=True)
class Chip:
    """One INA3221: where it sits, what its channels are called, and their idle operating point."""

    bus: int
    addr: int
    labels: Tuple[Optional[str], Optional[str], Optional[str]]  # None: no label in the DT
    # Bus voltage per channel in mV, on the chip's 8 mV grid (3.3 V rails read 3304 mV).
    # 0 mV = nothing connected (AGX Orin's NC inputs).
    volts: Tuple[int, int, int]
    idle_mw: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    shunt_uohm: int = 5000

    @property
    def dev_name(self) -> str:
        return f"{self.bus}-{self.addr:04x}"


@dataclass(frozen=True)
class BoardLayout:
    key: str
    model: str  # device-tree model string
    driver: str  # IIO ("ina3221x") or HWMON ("ina3221")
    chips: Tuple[Chip, ...]
    # bus -> the I2C controller's directory under /sys/devices (kernel-version specific)
    controllers: Tuple[Tuple[int, str], ...]
    adapter_name: str = "Tegra I2C adapter"

    def controller(self, bus: int) -> str:
        return dict(self.controllers)[bus]


def _chip(
    bus: int,
    addr: int,
    labels: str,
    volts: Tuple[int, int, int],
    idle_mw: Tuple[float, float, float],
    shunt_uohm: int = 5000,
) -> Chip:
    """A table row: ``labels`` are three names separated by spaces, ``-`` for no label."""
    names = tuple(None if n == "-" else n for n in labels.split())
    if len(names) != 3:
        raise ValueError(f"a chip has 3 channels: {labels!r}")
    return Chip(bus, addr, names, volts, idle_mw, shunt_uohm)  # type: ignore[arg-type]


# Rail names per power.md §5. Sub-rail voltages and idle powers are plausible values, not
# measurements (idle powers near the tegrastats samples of power.md §9 where there are some).
_TX2 = (
    _chip(0, 0x40, "VDD_SYS_GPU VDD_SYS_SOC VDD_4V0_WIFI", (19000, 19000, 4000), (150, 600, 40)),
    _chip(0, 0x41, "VDD_IN VDD_SYS_CPU VDD_SYS_DDR", (19000, 19000, 19000), (2100, 300, 500)),
    # Dev-kit carrier chips; their real bus is not verified (power.md §5), bus 0 here.
    _chip(0, 0x42, "VDD_MUX VDD_5V0_IO_SYS VDD_3V3_SYS", (19000, 5000, 3304), (1800, 700, 400)),
    _chip(0, 0x43, "VDD_3V3_IO_SLP VDD_1V8_IO VDD_3V3_SYS_M2", (3304, 1800, 3304), (150, 40, 10)),
)
_NANO = (_chip(6, 0x40, "POM_5V_IN POM_5V_GPU POM_5V_CPU", (5000, 5000, 5000), (1240, 40, 200)),)
_AGX_XAVIER = (
    _chip(1, 0x40, "GPU CPU SOC", (19000, 19000, 19000), (150, 385, 1200)),
    _chip(1, 0x41, "CV VDDRQ SYS5V", (19000, 19000, 5000), (0, 192, 1500)),
)
# The Xavier NX module is fed 5 V (its carrier converts the 19 V adapter's output).
_XAVIER_NX = (_chip(1, 0x40, "VDD_IN VDD_CPU_GPU_CV VDD_SOC", (5000,) * 3, (4824, 518, 1475)),)
_ORIN_NX = (_chip(1, 0x40, "VDD_IN VDD_CPU_GPU_CV VDD_SOC", (19000,) * 3, (5200, 600, 1500)),)
_AGX_ORIN = (
    _chip(1, 0x40, "VDD_GPU_SOC VDD_CPU_CV VIN_SYS_5V0", (19000, 19000, 5000), (2800, 800, 3000)),
    # NC inputs: nothing connected, 0 V.
    _chip(1, 0x41, "NC VDDQ_VDD2_1V8AO NC", (0, 5000, 0), (0, 600, 0)),
)
# Instantiated with new_device: no labels, the driver's default 10 mΩ shunts (power.md §3.1).
_RPI = (_chip(1, 0x40, "- - -", (5000, 5000, 5000), (2700, 0, 0), shunt_uohm=10000),)

_JP5_I2C = ((1, "platform/c240000.i2c"),)
LAYOUTS: Dict[str, BoardLayout] = {
    layout.key: layout
    for layout in (
        BoardLayout("tx2-jp4", "NVIDIA Jetson TX2 Developer Kit", IIO, _TX2, ((0, "3160000.i2c"),)),
        # Nano's bus 6 is the VI I2C controller under host1x.
        BoardLayout(
            "nano-jp4",
            "NVIDIA Jetson Nano Developer Kit",
            IIO,
            _NANO,
            ((6, "50000000.host1x/546c0000.i2c"),),
        ),
        BoardLayout("agx-xavier-jp4", "Jetson-AGX", IIO, _AGX_XAVIER, ((1, "c240000.i2c"),)),
        BoardLayout(
            "xavier-nx-jp5", "NVIDIA Jetson Xavier NX Developer Kit", HWMON, _XAVIER_NX, _JP5_I2C
        ),
        BoardLayout(
            "orin-nx-jp5",
            "NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
            HWMON,
            _ORIN_NX,
            _JP5_I2C,
        ),
        BoardLayout(
            "agx-orin-jp5", "NVIDIA Jetson AGX Orin Developer Kit", HWMON, _AGX_ORIN, _JP5_I2C
        ),
        BoardLayout(
            "rpi-ina3221",
            "Raspberry Pi 4 Model B Rev 1.4",
            HWMON,
            _RPI,
            ((1, "platform/soc/fe804000.i2c"),),
            "bcm2835 (i2c@7e804000)",
        ),
    )
}

# Unrelated hwmon devices a shuffled tree adds: (name, parent dir under /sys/devices, whether
# the hwmon device sits in a "hwmon/" glue dir and has a "device" link, extra files).
EXTRA_HWMONS: Tuple[Tuple[str, str, bool, Tuple[Tuple[str, bytes], ...]], ...] = (
    ("cpu_thermal", "virtual/thermal/thermal_zone0", False, (("temp1_input", b"45277\n"),)),
    (
        "nvme",
        "pci0000:00/0000:00:01.0/0000:01:00.0/nvme/nvme0",
        False,
        (("temp1_input", b"38850\n"), ("temp1_label", b"Composite\n")),
    ),
    ("pwmfan", "platform/pwm-fan", True, (("pwm1", b"0\n"),)),
)


def channel_id(layout: BoardLayout, chip: Chip, index: int) -> str:
    """Where a channel is, as the readers name it: ``0-0041/ch0`` (IIO, channels from 0) or
    ``1-0040/in1`` (hwmon, channels from 1)."""
    if layout.driver == IIO:
        return f"{chip.dev_name}/ch{index}"
    return f"{chip.dev_name}/in{index + 1}"


def channel_name(layout: BoardLayout, chip: Chip, index: int) -> str:
    """A channel's rail label, or its :func:`channel_id` when it has none or is ``NC``."""
    label = chip.labels[index]
    return label if label and label != "NC" else channel_id(layout, chip, index)


def get_layout(key: str) -> BoardLayout:
    try:
        return LAYOUTS[key]
    except KeyError:
        raise ValueError(
            f"unknown board layout {key!r}; choose one of: {', '.join(sorted(LAYOUTS))}"
        ) from None


def channel_names(layout: str) -> List[str]:
    """Every channel of a layout, chip by chip (NC ones too): the rail index of the drive log."""
    lay = get_layout(layout)
    return [channel_name(lay, chip, i) for chip in lay.chips for i in range(3)]


def rail_names(layout: str) -> List[str]:
    """The rails of a layout: labelled channels by label, unlabelled ones by channel id; ``NC``
    channels left out (they are still addressable by their id)."""
    lay = get_layout(layout)
    return [
        channel_name(lay, chip, i) for chip in lay.chips for i in range(3) if chip.labels[i] != "NC"
    ]
