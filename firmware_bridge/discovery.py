"""Which serial devices are attached, found by USB identity rather than by ``ttyACMn`` number
(which changes with plug order): VID/PID, serial number, and the known meters' signatures.

A match is returned as its stable path: ``/dev/serial/by-id/...`` when udev made one, else the
device node.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

from firmware_bridge.errors import NotFound

BY_ID = "/dev/serial/by-id"

# (vid, pid) -> device kind. PPK2's PID is the one nRF Connect reports; serial.md notes it as
# "believed" -- the product string "PPK2" is matched too.
KNOWN: Dict[tuple, str] = {
    (0x0483, 0x5740): "lpm01a",
    (0x1915, 0xC00A): "ppk2",
}


@dataclass(frozen=True)
class PortInfo:
    """One attached serial device (a labgrid-style resource: what exists, not how to talk)."""

    device: str  # /dev/ttyACM0
    path: str  # the stable path: /dev/serial/by-id/... when there is one
    vid: Optional[int]
    pid: Optional[int]
    serial_number: Optional[str]
    manufacturer: Optional[str]
    product: Optional[str]
    description: str
    location: Optional[str]
    kind: Optional[str]  # "lpm01a", "ppk2" when recognised

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["usb"] = None if self.vid is None else f"{self.vid:04x}:{self.pid or 0:04x}"
        return d


def _by_id_map() -> Dict[str, str]:
    out: Dict[str, str] = {}
    try:
        names = os.listdir(BY_ID)
    except OSError:
        return out
    for name in sorted(names):
        link = os.path.join(BY_ID, name)
        out.setdefault(os.path.realpath(link), link)
    return out


def _kind(vid: Optional[int], pid: Optional[int], product: Optional[str]) -> Optional[str]:
    if vid is not None and (vid, pid) in KNOWN:
        return KNOWN[(vid, pid)]
    if product == "PPK2":
        return "ppk2"
    return None


def list_ports() -> List[PortInfo]:
    """Every serial port the OS knows, with USB identity where it has one."""
    from serial.tools import list_ports as lp

    stable = _by_id_map()
    out = []
    for p in lp.comports():
        out.append(
            PortInfo(
                device=p.device,
                path=stable.get(os.path.realpath(p.device), p.device),
                vid=p.vid,
                pid=p.pid,
                serial_number=p.serial_number,
                manufacturer=p.manufacturer,
                product=p.product,
                description=p.description,
                location=p.location,
                kind=_kind(p.vid, p.pid, p.product),
            )
        )
    return out


def find_ports(
    vid: Optional[int] = None,
    pid: Optional[int] = None,
    serial_number: Optional[str] = None,
    kind: Optional[str] = None,
    ports: Optional[List[PortInfo]] = None,
) -> List[PortInfo]:
    """Ports matching every given criterion. A PPK2 exposes two CDC interfaces; the data one
    has a ``location`` ending in ``1`` (serial.md §5) and sorts first."""
    found = [
        p
        for p in (list_ports() if ports is None else ports)
        if (vid is None or p.vid == vid)
        and (pid is None or p.pid == pid)
        and (serial_number is None or p.serial_number == serial_number)
        and (kind is None or p.kind == kind)
    ]
    return sorted(found, key=lambda p: (not (p.location or "").endswith("1"), p.path))


def parse_usb_id(text: str) -> tuple:
    """``"0483:5740"`` -> (0x0483, 0x5740)."""
    try:
        v, p = text.split(":", 1)
        return int(v, 16), int(p, 16)
    except ValueError:
        raise ValueError(f"USB id must look like 0483:5740 (hex VID:PID), got {text!r}") from None


def find_port(
    vid: Optional[int] = None,
    pid: Optional[int] = None,
    serial_number: Optional[str] = None,
    kind: Optional[str] = None,
) -> str:
    """The stable path of the one matching port; :class:`NotFound` names what is attached."""
    found = find_ports(vid, pid, serial_number, kind)
    if not found:
        wanted = []
        if vid is not None:
            wanted.append(f"VID {vid:04x}")
        if pid is not None:
            wanted.append(f"PID {pid:04x}")
        if serial_number is not None:
            wanted.append(f"serial {serial_number}")
        if kind is not None:
            wanted.append(kind)
        attached = ", ".join(p.to_dict()["usb"] or p.device for p in list_ports()) or "none"
        raise NotFound(
            f"no serial device with {' '.join(wanted) or 'any identity'} is attached "
            f"(attached: {attached}); check the cable and `halo-agent mcu probe --list`"
        )
    return found[0].path
