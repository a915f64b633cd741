"""Command signing (protocol.auth): what is covered, what is rejected and why. Python 3.8."""

from __future__ import annotations

import dataclasses
import json

import pytest

from protocol import BenchSpec, Command, decode, encode, make
from protocol.auth import AuthError, new_key, parse_key, sign, signing_bytes, verify

SHA = "ab" * 32
KEY = parse_key(new_key())
NOW = 1_800_000_000.0


def bench(expires_at=NOW + 3600) -> Command:
    return Command(
        cmd_id="1" * 32, kind="bench", expires_at=expires_at, bench=BenchSpec(SHA, "m-1")
    )


def wire_roundtrip(cmd: Command, device: str = "pi-01") -> Command:
    return decode(encode(make(cmd, device)), expect_type="cmd").body


def test_signed_command_verifies_after_the_wire():
    signed = sign(KEY, "pi-01", bench())
    assert signed.sig is not None and len(signed.sig) == 64
    verify(KEY, "pi-01", wire_roundtrip(signed), now=NOW)


def test_int_expiry_signs_like_the_float_it_becomes_on_the_wire():
    signed = sign(KEY, "pi-01", bench(expires_at=int(NOW) + 60))
    verify(KEY, "pi-01", wire_roundtrip(signed), now=NOW)


def test_unsigned_command_has_no_sig_key_on_the_wire():
    payload = json.loads(encode(make(bench(), "pi-01")))
    assert "sig" not in payload["body"]
    assert "sig" in json.loads(encode(make(sign(KEY, "pi-01", bench()), "pi-01")))["body"]


def test_unsigned_rejected():
    with pytest.raises(AuthError, match="unsigned command"):
        verify(KEY, "pi-01", bench(), now=NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: dataclasses.replace(c, bench=BenchSpec("cd" * 32, "m-1")),
        lambda c: dataclasses.replace(c, expires_at=c.expires_at + 1),
        lambda c: dataclasses.replace(c, cmd_id="2" * 32),
        lambda c: dataclasses.replace(c, sig="0" * 64),
    ],
    ids=["model", "expiry", "cmd_id", "sig"],
)
def test_tampered_rejected(tamper):
    signed = sign(KEY, "pi-01", bench())
    with pytest.raises(AuthError, match="bad signature"):
        verify(KEY, "pi-01", tamper(signed), now=NOW)


def test_other_device_or_key_rejected():
    signed = sign(KEY, "pi-01", bench())
    with pytest.raises(AuthError, match="bad signature"):
        verify(KEY, "pi-02", signed, now=NOW)
    with pytest.raises(AuthError, match="bad signature"):
        verify(parse_key(new_key()), "pi-01", signed, now=NOW)


def test_expiry_with_skew():
    signed = sign(KEY, "pi-01", bench(expires_at=NOW))
    verify(KEY, "pi-01", signed, now=NOW + 119, skew_s=120)
    with pytest.raises(AuthError, match=r"expired: expires_at was 121 s ago"):
        verify(KEY, "pi-01", signed, now=NOW + 121, skew_s=120)


def test_signing_needs_expiry():
    with pytest.raises(ValueError, match="expires_at"):
        sign(KEY, "pi-01", bench(expires_at=None))


def test_signing_bytes_name_the_device_and_ignore_sig():
    cmd = bench()
    assert signing_bytes("pi-01", cmd) != signing_bytes("pi-02", cmd)
    assert signing_bytes("pi-01", cmd) == signing_bytes("pi-01", sign(KEY, "pi-01", cmd))


@pytest.mark.parametrize("text", ["", "zz" * 32, "ab" * 31, "ab" * 33])
def test_bad_keys(text):
    with pytest.raises(ValueError, match="hex digits"):
        parse_key(text)


def test_bad_sig_on_the_wire_is_a_protocol_error():
    payload = json.loads(encode(make(bench(), "pi-01")))
    payload["body"]["sig"] = "XYZ"
    from protocol import ProtocolError

    with pytest.raises(ProtocolError, match="HMAC-SHA256"):
        decode(json.dumps(payload).encode(), expect_type="cmd")
