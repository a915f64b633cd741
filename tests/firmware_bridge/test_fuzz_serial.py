"""Fuzzing the serial protocol parsers: the EEMBC DUT driver over a real pty whose device
answers with fuzzed replies (only BridgeError subclasses may come out), the meters' stream
decoders (PPK2 words, LPM01A values, inameter records with right checksums around fuzzed
fields: never raise, energy stays finite) and the meters' setup replies. The targets are
shared with fuzz/run.py."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz import targets
from tests.fuzzing import EDGE_TOKENS, fuzz_settings, inputs, mutated


@pytest.fixture(scope="module")
def dut():
    with targets.eembc_dut() as run:
        yield run


@pytest.fixture(scope="module")
def stream():
    with targets.meter_stream() as run:
        yield run


@pytest.fixture(scope="module")
def setup():
    with targets.meter_setup() as run:
        yield run


DUT_LINES = [
    b"m-name-dut-[unspecified]",
    b"m-profile-[ULPMark for tinyML Firmware V0.0.1]",
    b"m-model-[ic01]",
    b"m-lap-us-4294967000",
    b"m-results-[0.000,0.992,0.008,]",
    b"m-warmup-start-1",
    b"m-infer-start-5",
    b"m-[Expecting 40 bytes]",
    b"m-load-done",
    b"m-buffer-00-01-02-0a",
    b"m-timestamp-mode-performance",
    b"e-[Unknown command: name]",
    b"m-init-done",
    b"m-ready",
    b"%",
]


@st.composite
def dut_inputs(draw) -> bytes:
    """An operation, then replies made of known lines, each maybe mutated, maybe behind the
    interface board's ``[dut]: `` prefix."""
    op = draw(st.integers(0, 255))
    lines = draw(st.lists(mutated(DUT_LINES, steps=2) | st.sampled_from(DUT_LINES), max_size=12))
    prefixed = [b"[dut]: " + ln if draw(st.booleans()) and op & 16 else ln for ln in lines]
    return bytes([op]) + b"\r\n".join(prefixed)


@fuzz_settings(150)
@given(dut_inputs() | inputs(targets.dut_seeds()))
# Were ValueError: int() of a 5000-digit lap / expected byte count.
@example(bytes([2]) + b"m-lap-us-" + b"9" * 5000)
@example(bytes([7]) + b"m-[Expecting " + b"9" * 5000 + b" bytes]")
def test_eembc_dut_replies(dut, data: bytes) -> None:
    dut(data)


def _field() -> st.SearchStrategy[str]:
    return st.integers(-5, 70000).map(str) | st.sampled_from(
        [t.decode("latin-1") for t in EDGE_TOKENS] + ["1e308", "4294967295", "65535", "65536"]
    )


@st.composite
def inameter_stream(draw) -> bytes:
    """Records with a right checksum around fuzzed fields, mostly of the right shape: what
    gets past the checksum to the field parsing."""
    out = b""
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["P", "P", "E", "X"]))
        count = draw(st.sampled_from([5 if kind == "P" else 4] * 3 + [0, 2, 7]))
        fields = [draw(_field()) for _ in range(count)]
        out += targets._inameter_record(",".join([kind] + fields))
    return out


@st.composite
def stream_inputs(draw) -> bytes:
    """One meter's stream (a mutated valid one, or checksummed inameter records) cut into
    chunks at random places."""
    kind = draw(st.integers(0, 2))
    seed = targets.meter_seeds()[kind]
    whole = b"".join(content for _, content in targets.records(seed))
    if kind == 2 and draw(st.booleans()):
        body = draw(inameter_stream())
    else:
        body = draw(mutated([whole], steps=6))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    pieces = [body[a:b] for a, b in zip([0] + cuts, cuts + [len(body)])]
    return b"".join(targets.record(kind, piece) for piece in pieces)


@fuzz_settings(300)
@given(stream_inputs() | inputs(targets.meter_seeds()))
# Were ValueError in the reader thread (fields int()/float()ed outside the try), a nan energy
# ("nan" mV), and ValueError from int() on a 5000-digit LPM01A timestamp.
@example(targets.record(2, targets._inameter_record("P,1,1000,x,3300,12000")))
@example(targets.record(2, targets._inameter_record("P,1,1000,1,nan,12000")))
@example(targets.record(2, targets._inameter_record("P,1,1000,1,1e308,1e308")))
@example(targets.record(2, targets._inameter_record("P,1,99999999999999,1,3300,1")))
@example(targets.record(1, b"TimeStamp: " + b"9" * 5000 + b"s 000ms, buff 00%\r\n"))
def test_meter_stream_decoders(stream, data: bytes) -> None:
    stream(data)


@fuzz_settings(30)
@given(inputs(targets.meter_setup_seeds(), max_size=200))
# Were StopIteration (no m-info line), ValueError (int() of 5000 digits), IndexError ("Error
# detail" without a colon).
@example(bytes([1]) + b"\x00m-name-inameter-[x]\x00m-chan-[1,a,1]")
@example(bytes([1]) + b"\x00m-name-inameter-[x]\x00m-info-[a]\r\nm-chan-[" + b"9" * 5000 + b",a,1]")
@example(bytes([0]) + b"PowerShield > error htc\r\nError details busy")
def test_meter_setup_replies(setup, data: bytes) -> None:
    setup(data)
