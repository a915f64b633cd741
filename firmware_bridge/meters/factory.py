"""Open a meter by kind, or guess the kind from the URL (our fake schemes, a known USB id)."""

from __future__ import annotations

import os
from typing import Any, Optional

from firmware_bridge.discovery import list_ports
from firmware_bridge.meters.base import Meter
from firmware_bridge.transcript import Transcript
from firmware_bridge.urlschemes import scheme_of

KINDS = ("lpm01a", "ppk2", "inameter")
_BY_SCHEME = {"fake-lpm01a": "lpm01a", "fake-ppk2": "ppk2", "fake-inameter": "inameter"}


def guess_kind(url: str) -> Optional[str]:
    """``ppk2`` for ``fake-ppk2://`` or a port whose USB id is a PPK2's; None if unknown."""
    scheme = scheme_of(url)
    if scheme in _BY_SCHEME:
        return _BY_SCHEME[scheme]
    if scheme == "hwgrep":
        text = url.split("://", 1)[1].lower()
        if "0483:5740" in text:
            return "lpm01a"
        if "1915:c00a" in text:
            return "ppk2"
        return None
    if scheme:
        return None
    try:
        real = os.path.realpath(url)
        for port in list_ports():
            if os.path.realpath(port.device) == real:
                return port.kind
    except Exception:  # discovery is a convenience; the caller can name the kind
        return None
    return None


def meter_class(kind: str) -> type:
    if kind == "lpm01a":
        from firmware_bridge.meters.lpm01a import Lpm01a

        return Lpm01a
    if kind == "ppk2":
        from firmware_bridge.meters.ppk2 import Ppk2

        return Ppk2
    if kind == "inameter":
        from firmware_bridge.meters.inameter import InaMeter

        return InaMeter
    raise ValueError(f"unknown meter kind {kind!r}: use one of {', '.join(KINDS)}")


def make_meter(
    url: str, kind: Optional[str] = None, trace: Optional[Transcript] = None, **options: Any
) -> Meter:
    """A (not yet opened) meter driver for ``url``."""
    kind = kind or guess_kind(url)
    if kind is None:
        raise ValueError(
            f"cannot tell which meter is at {url}: give its kind ({', '.join(KINDS)}), e.g. "
            '--meter-kind ppk2 or kind = "ppk2" in [[power.meters]]'
        )
    return meter_class(kind)(url, trace=trace, **options)


def open_meter(
    url: str, kind: Optional[str] = None, trace: Optional[Transcript] = None, **options: Any
) -> Meter:
    """An opened and configured meter (not streaming yet: call ``start()``)."""
    return make_meter(url, kind, trace, **options).open()
