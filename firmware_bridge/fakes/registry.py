"""URL -> fake device: the one place that knows which class serves which scheme and how its
URL parameters map onto options and faults."""

from __future__ import annotations

from typing import Dict

from firmware_bridge.fakes.core import FakeDevice, Faults, parse_url, reject_unknown, take_params
from firmware_bridge.fakes.profiles import from_params as profile_from_params


def make_device(url: str) -> FakeDevice:
    """A new (not started) device for ``url``; raises ValueError naming bad parameters."""
    scheme, host, params = parse_url(url)
    params.pop("id", None)  # only makes the URL (and so the device) unique
    faults = Faults(**take_params(Faults, params))
    allowed = ["id"] + list(Faults.__dataclass_fields__)
    if scheme in ("fake-dut", "fake-iface"):
        from firmware_bridge.fakes.dut import DutOptions, FakeDut

        opts: Dict[str, object] = take_params(DutOptions, params)
        if host:
            opts.setdefault("model", host)
        allowed += list(DutOptions.__dataclass_fields__)
        if scheme == "fake-dut":
            reject_unknown(url, params, allowed)
            return FakeDut(DutOptions(**opts), faults)  # type: ignore[arg-type]
        from firmware_bridge.fakes.iface import FakeIface

        opts.setdefault("energy", True)
        delay = params.pop("dut_baud_delay", "1") not in ("0", "false", "no")
        reject_unknown(url, params, allowed + ["dut_baud_delay"])
        return FakeIface(DutOptions(**opts), faults, dut_baud_delay=delay)  # type: ignore[arg-type]
    profile_keys = ["board", "profile", "ma", "lo_ma", "hi_ma", "period_ms", "duty"]
    if scheme == "fake-lpm01a":
        from firmware_bridge.fakes.lpm01a import FakeLpm01a, LpmOptions

        profile = profile_from_params(params)
        lo = LpmOptions(**take_params(LpmOptions, params))
        reject_unknown(url, params, allowed + profile_keys + list(LpmOptions.__dataclass_fields__))
        return FakeLpm01a(profile, lo, faults)
    if scheme == "fake-ppk2":
        from firmware_bridge.fakes.ppk2 import FakePpk2, Ppk2Options

        profile = profile_from_params(params)
        po = Ppk2Options(**take_params(Ppk2Options, params))
        reject_unknown(url, params, allowed + profile_keys + list(Ppk2Options.__dataclass_fields__))
        return FakePpk2(profile, po, faults)
    if scheme == "fake-inameter":
        from firmware_bridge.fakes.inameter import FakeInaMeter, InaOptions

        profile = profile_from_params(params)
        io = InaOptions(**take_params(InaOptions, params))
        reject_unknown(url, params, allowed + profile_keys + list(InaOptions.__dataclass_fields__))
        return FakeInaMeter(profile, io, faults)
    raise ValueError(f"no fake device for scheme {scheme!r}")
