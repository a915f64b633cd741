"""``fake-dut://`` for :func:`serial.serial_for_url` (see :mod:`firmware_bridge.fakes`)."""

from __future__ import annotations

from typing import Tuple


def serial_class_for_url(url: str) -> Tuple[str, type]:
    from firmware_bridge.fakes.serial_port import FakeSerial

    return url, FakeSerial
