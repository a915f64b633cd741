"""Fuzzing ``protocol.decode`` at the byte level: valid messages with bytes flipped, cut,
repeated and spliced (test_roundtrip.py fuzzes arbitrary bytes and JSON-level edits). Only
ProtocolError with a field may come out; what decodes re-encodes to the same envelope and is
refused under any other expected type. The target is shared with fuzz/run.py."""

from __future__ import annotations

import pytest
from hypothesis import given

from fuzz import targets
from tests.fuzzing import fuzz_settings, inputs

SEEDS = targets.protocol_seeds()


@pytest.fixture(scope="module")
def decode():
    with targets.protocol_decode() as run:
        yield run


@fuzz_settings(300)
@given(inputs(SEEDS))
def test_mutated_messages_decode_or_raise_protocol_error(decode, data: bytes) -> None:
    decode(data)
