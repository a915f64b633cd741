"""Our pyserial URL schemes: the fakes of every device we drive, opened like any port.

pyserial's :func:`serial.serial_for_url` takes the part of the URL before ``://``, lowercases
it and imports ``<package>.protocol_<scheme>`` from each package in
``serial.protocol_handler_packages``; the module's ``serial_class_for_url(url)`` (or its
``Serial`` class) opens it. :func:`register` appends ``firmware_bridge.urlhandlers`` to that
list, once.

A scheme with ``-`` (``fake-dut``) makes pyserial look for a module named
``protocol_fake-dut``, which no ``import`` statement can name: the handler package's
``__init__`` installs each ``protocol_fake_dut`` module under the hyphenated name in
``sys.modules`` as well, which is where :func:`importlib.import_module` looks first. Both
spellings work: ``fake-dut://ic01`` and ``fake_dut://ic01``.
"""

from __future__ import annotations

from typing import Dict

HANDLER_PACKAGE = "firmware_bridge.urlhandlers"

# scheme -> (what it is, the fake class path)
SCHEMES: Dict[str, str] = {
    "fake-dut": "MLPerf Tiny / EEMBC device under test (performance mode, 115200 baud)",
    "fake-iface": "EEMBC/MLPerf Tiny interface board with an energy-mode DUT behind it",
    "fake-lpm01a": "STM32 X-NUCLEO-LPM01A PowerShield (ASCII protocol, 3686400 baud)",
    "fake-ppk2": "Nordic Power Profiler Kit II (binary stream, 100 kS/s)",
    "fake-inameter": "halofarm line-protocol DIY INA219/INA3221 meter",
}


def register() -> None:
    """Make :func:`serial.serial_for_url` know our schemes (idempotent, cheap)."""
    import serial

    if HANDLER_PACKAGE not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(HANDLER_PACKAGE)


def scheme_of(url: str) -> str:
    """``fake-dut`` for ``fake_dut://ic01``; ``""`` for a plain device path."""
    if "://" not in url:
        return ""
    return url.split("://", 1)[0].lower().replace("_", "-")


def is_fake(url: str) -> bool:
    return scheme_of(url) in SCHEMES
