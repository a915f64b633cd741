"""pack_ns / unpack_ns: round trips and rejection of malformed input."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import ProtocolError, pack_ns, unpack_ns
from protocol.packing import MAX_RAW_NS

INT64_MAX = 2**63 - 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, INT64_MAX), max_size=300))
def test_round_trip(values: Any) -> None:
    assert unpack_ns(pack_ns(values)) == values


def test_empty_and_extremes() -> None:
    assert unpack_ns(pack_ns([])) == []
    big = [0, 1, 2**31, 2**32 + 1, 2**53 + 1, INT64_MAX]
    assert unpack_ns(pack_ns(big)) == big
    assert unpack_ns(pack_ns(tuple(big))) == big
    assert unpack_ns(pack_ns(v for v in big)) == big


def test_wire_format_is_little_endian_int64_zlib_base64() -> None:
    packed = pack_ns([1, 258])
    assert zlib.decompress(base64.b64decode(packed)) == struct.pack("<qq", 1, 258)


def test_numpy_arrays() -> None:
    np = pytest.importorskip("numpy")
    runs = np.array([1500, 1600, 2**40], dtype=np.int64)
    assert unpack_ns(pack_ns(runs)) == [1500, 1600, 2**40]
    assert unpack_ns(pack_ns(runs.astype(np.uint32))) == [1500, 1600, 0]
    assert unpack_ns(pack_ns(np.array([], dtype=np.int64))) == []
    with pytest.raises(ProtocolError, match=r"raw_ns\[0\]: must be an int"):
        pack_ns(np.array([1.5]))


@pytest.mark.parametrize(
    "values, field",
    [([1, 2.0], "raw_ns[1]"), ([True], "raw_ns[0]"), ([-1], "raw_ns[0]"), ([2**63], "raw_ns[0]")],
)
def test_pack_rejects(values: Any, field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        pack_ns(values)
    assert info.value.field == field


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "packed, reason",
    [
        ("not base64!", "not valid base64"),
        ("é", "not valid base64"),
        (_b64(b"plain bytes"), "not valid zlib"),
        (_b64(zlib.compress(b"1234567")), "not a whole number of int64"),
        (_b64(zlib.compress(bytes(16))[:-3]), "truncated"),
        (_b64(zlib.compress(bytes(16)) + b"junk"), "trailing"),
        (_b64(zlib.compress(bytes(8 * MAX_RAW_NS + 8))), "more than"),
    ],
)
def test_unpack_rejects(packed: str, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        unpack_ns(packed)
    assert info.value.field == "raw_ns"
    assert reason in info.value.reason


def test_unpack_rejects_negative_values_and_non_strings() -> None:
    with pytest.raises(ProtocolError, match=r"^raw_ns\[1\]: must be >= 0"):
        unpack_ns(_b64(zlib.compress(struct.pack("<qq", 5, -5))))
    with pytest.raises(ProtocolError, match="must be a string"):
        unpack_ns(b"abc")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: _b64(zlib.compress(b))))
def test_arbitrary_input_raises_only_protocol_error(packed: str) -> None:
    try:
        values = unpack_ns(packed)
    except ProtocolError:
        return
    assert all(0 <= v <= INT64_MAX for v in values)
