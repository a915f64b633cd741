"""Compact transport of raw per-run nanosecond timings: int64 LE -> zlib -> base64.

Pure stdlib so the board needs no numpy for it; numpy integer arrays are accepted as input.
"""

from __future__ import annotations

import base64
import binascii
import operator
import sys
import zlib
from array import array
from typing import Any, Iterable, List

from .errors import ProtocolError

# 8 MiB unpacked: far beyond what fits in one message compressed, and a cap on zip bombs.
MAX_RAW_NS = 1 << 20
_INT64_MAX = 2**63 - 1


def pack_ns(values: Iterable[Any], field: str = "raw_ns") -> str:
    """Pack non-negative integer nanoseconds (list, tuple or numpy int array) to a string."""
    arr = array("q")
    for i, v in enumerate(values):
        if isinstance(v, bool):
            raise ProtocolError(f"{field}[{i}]", "must be an int, got a bool")
        try:
            n = operator.index(v)
        except TypeError:
            raise ProtocolError(
                f"{field}[{i}]", f"must be an int, got {type(v).__name__}"
            ) from None
        if not 0 <= n <= _INT64_MAX:
            raise ProtocolError(f"{field}[{i}]", f"must be in 0..2**63-1, got {n}")
        arr.append(n)
    if len(arr) > MAX_RAW_NS:
        raise ProtocolError(field, f"at most {MAX_RAW_NS} values, got {len(arr)}")
    if sys.byteorder == "big":
        arr.byteswap()
    return base64.b64encode(zlib.compress(arr.tobytes(), 6)).decode("ascii")


def unpack_ns(packed: str, field: str = "raw_ns") -> List[int]:
    """Inverse of :func:`pack_ns`; any malformed input raises :class:`ProtocolError`."""
    values = _values(_inflate(packed, field))
    _check_signs(values, field)
    return values


def check_packed_ns(packed: str, field: str = "raw_ns") -> None:
    """Raise exactly what :func:`unpack_ns` would, without making the list unless a value is
    negative: decode checks every result's raw_ns, only analysis needs the numbers."""
    raw = _inflate(packed, field)
    # The top byte of each little-endian int64 holds its sign bit: all are >= 0 when those
    # bytes are ASCII, which bytes.isascii() checks in C.
    if not raw[7::8].isascii():
        _check_signs(_values(raw), field)


def _inflate(packed: str, field: str) -> bytes:
    """The int64 little-endian bytes of a packed string, checked for all but the signs."""
    if not isinstance(packed, str):
        raise ProtocolError(field, f"must be a string, got {type(packed).__name__}")
    try:
        compressed = base64.b64decode(packed.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise ProtocolError(field, "is not valid base64") from None
    limit = MAX_RAW_NS * 8
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(compressed, limit + 1)
    except zlib.error as e:
        raise ProtocolError(field, f"is not valid zlib data ({e})") from None
    if len(raw) > limit or inflater.unconsumed_tail:
        raise ProtocolError(field, f"unpacks to more than {MAX_RAW_NS} values")
    if not inflater.eof or inflater.unused_data:
        raise ProtocolError(field, "zlib data is truncated or has trailing bytes")
    if len(raw) % 8:
        raise ProtocolError(field, f"unpacks to {len(raw)} bytes, not a whole number of int64")
    return raw


def _values(raw: bytes) -> List[int]:
    arr = array("q")
    arr.frombytes(raw)
    if sys.byteorder == "big":
        arr.byteswap()
    return arr.tolist()


def _check_signs(values: List[int], field: str) -> None:
    if values and min(values) < 0:  # min() in C; the loop only to name the first one
        for i, n in enumerate(values):
            if n < 0:
                raise ProtocolError(f"{field}[{i}]", f"must be >= 0, got {n}")
