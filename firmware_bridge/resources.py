"""Resources: what exists on this board's ports, as configuration -- a serial port, an MCU
device under test on one, a meter on another (labgrid's split: resources say *what* and
*where*; drivers in :mod:`firmware_bridge.dut` and :mod:`firmware_bridge.meters` say *how*).

:func:`dut_resource` reads one ``[[mcu.duts]]`` table of the agent config (meters are
``[[power.meters]]``, read by :func:`power.serial_meter.meter_config`). A command from the
network names a DUT by ``name``; its URL only ever comes from this local configuration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from firmware_bridge.transport import PortSettings

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")


@dataclass(frozen=True)
class SerialPortResource:
    url: str  # anything pyserial opens: /dev/serial/by-id/..., hwgrep://, rfc2217://, socket://
    baudrate: int = 115200
    exclusive: bool = True
    settle_s: float = 0.0  # for boards that reset when the port opens anyway

    def settings(self, tag: str = "") -> PortSettings:
        return PortSettings(
            self.url,
            baudrate=self.baudrate,
            exclusive=self.exclusive,
            settle_s=self.settle_s,
            tag=tag,
        )


@dataclass(frozen=True)
class DutResource:
    """An MLPerf Tiny / EEMBC DUT: directly on ``port`` (performance mode) or behind an
    interface board (``interface``: energy mode), optionally measured by the meter ``meter``
    (a ``[[power.meters]]`` name)."""

    name: str
    port: SerialPortResource
    interface: bool = False
    meter: Optional[str] = None


_DUT_KEYS = {"name": str, "url": str, "baudrate": int, "interface": bool, "meter": str,
             "exclusive": bool, "settle_s": float}  # fmt: skip


def dut_resource(values: Mapping[str, Any], where: str = "mcu.duts") -> DutResource:
    """A :class:`DutResource` from one config table; ValueError names the key and the fix."""
    unknown = sorted(set(values) - set(_DUT_KEYS))
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_DUT_KEYS)}"
        )
    for key in ("name", "url"):
        if not values.get(key):
            raise ValueError(
                f"{where}: '{key}' is required, e.g. name = \"l4r5\", "
                'url = "/dev/serial/by-id/usb-STMicroelectronics_STLINK-V3_...-if02"'
            )
    for key, kind in _DUT_KEYS.items():
        if key in values:
            value = values[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{where}.{key}: must be a {kind.__name__}, got {value!r}")
    if not NAME_RE.fullmatch(values["name"]):
        raise ValueError(
            f"{where}.name: {values['name']!r} must start with a letter or digit and hold only "
            "letters, digits and _.:@- (at most 64)"
        )
    interface = values.get("interface", False)
    port = SerialPortResource(
        url=values["url"],
        baudrate=values.get("baudrate", 115200),
        exclusive=values.get("exclusive", True),
        settle_s=float(values.get("settle_s", 0.0)),
    )
    return DutResource(values["name"], port, interface, values.get("meter"))
