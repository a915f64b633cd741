"""The message envelope: JSON encoding, decoding and validation of whole messages.

``decode`` is the boundary for untrusted bytes: whatever arrives, it returns a valid
:class:`Envelope` or raises :class:`ProtocolError` naming the offending field.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from . import fields as f
from .bodies import MESSAGE_TYPES, Body
from .errors import ProtocolError

SCHEMA_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024
MAX_COMMAND_BYTES = 16 * 1024
# Anything longer is far outside int64 and would only cost parse time.
_MAX_INT_DIGITS = 40
_LONG_INT = "integer literal is far too long"

_ENVELOPE_KEYS = ("schema", "type", "msg_id", "device", "created_at", "body")
_TYPE = f.one_of(tuple(MESSAGE_TYPES))
_CREATED_AT = f.float_in(0.0)


@dataclass
class Envelope:
    schema: int
    type: str
    msg_id: str
    device: str
    created_at: float
    body: Body

    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema": self.schema,
            "type": self.type,
            "msg_id": self.msg_id,
            "device": self.device,
            "created_at": self.created_at,
            "body": self.body.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any, expect_type: Optional[str] = None) -> Envelope:
        if not isinstance(data, dict):
            f.fail("message", f"must be a JSON object, got {f.describe(data)}")
        # Schema first: a newer sender's message should say "upgrade", not "unknown field".
        if "schema" not in data:
            f.fail("schema", "is required")
        schema = data["schema"]
        if not f.is_int(schema) or schema != SCHEMA_VERSION:
            f.fail(
                "schema",
                f"unsupported schema version {f.describe(schema)}; this side speaks "
                f"{SCHEMA_VERSION}, upgrade the older side",
            )
        for name in data:
            if name not in _ENVELOPE_KEYS:
                f.fail(f.member("", name), "unknown field")
        for name in _ENVELOPE_KEYS:
            if name not in data:
                f.fail(name, "is required")
        kind = _TYPE(data["type"], "type")
        if expect_type is not None and kind != expect_type:
            f.fail("type", f"expected {expect_type!r} here, got {kind!r}")
        return cls(
            schema=SCHEMA_VERSION,
            type=kind,
            msg_id=f.HEX32(data["msg_id"], "msg_id"),
            device=f.ID(data["device"], "device"),
            created_at=_CREATED_AT(data["created_at"], "created_at"),
            body=MESSAGE_TYPES[kind].from_dict(data["body"], "body"),
        )


def size_limit(message_type: str) -> int:
    return MAX_COMMAND_BYTES if message_type == "cmd" else MAX_MESSAGE_BYTES


def _check_size(size: int, message_type: Optional[str]) -> None:
    limit = MAX_MESSAGE_BYTES if message_type is None else size_limit(message_type)
    if size > limit:
        what = f"a {message_type!r} message" if message_type else "a message"
        f.fail("message", f"is {size} bytes; {what} may have at most {limit}")


def _check_body(kind: Any, body: Any) -> None:
    if kind not in MESSAGE_TYPES:
        raise ProtocolError("type", f"unknown message type {kind!r}")
    expected = MESSAGE_TYPES[kind]
    if not isinstance(body, expected):
        raise ProtocolError(
            "body",
            f"a {kind!r} message needs a {expected.__name__} body, got {type(body).__name__}",
        )


def make(
    type_or_body: Union[str, Body],
    device: str,
    body: Optional[Body] = None,
    msg_id: Optional[str] = None,
    created_at: Optional[float] = None,
) -> Envelope:
    """An envelope with a fresh msg_id and the current time; ``make(body, device)`` suffices."""
    if isinstance(type_or_body, Body):
        if body is not None:
            raise ProtocolError("body", "given twice: as the first argument and as body=")
        body = type_or_body
        kind = body.TYPE
    else:
        kind = type_or_body
    _check_body(kind, body)
    return Envelope(
        schema=SCHEMA_VERSION,
        type=kind,
        msg_id=uuid.uuid4().hex if msg_id is None else msg_id,
        device=device,
        created_at=time.time() if created_at is None else created_at,
        body=body,
    )


def encode(env: Envelope) -> bytes:
    """Validated compact UTF-8 JSON; raises ProtocolError exactly where decode would."""
    _check_body(env.type, env.body)
    # Serialise the validated copy: ints in float fields become floats, so the bytes depend
    # only on the values and a decoded message re-encodes identically.
    data = Envelope.from_dict(env.to_dict()).to_dict()
    out = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    _check_size(len(out), env.type)
    return out


def decode(data: bytes, expect_type: Optional[str] = None) -> Envelope:
    """Parse and validate one message; only ever raises :class:`ProtocolError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        f.fail("message", f"must be bytes, got {type(data).__name__}")
    raw = bytes(data)
    _check_size(len(raw), expect_type if expect_type in MESSAGE_TYPES else None)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        f.fail("message", f"is not valid UTF-8 (byte {e.start})")
    try:
        obj = _DECODER.decode(text)
    except ProtocolError:  # from our hooks; already says what is wrong
        raise
    except RecursionError:
        f.fail("message", "JSON is nested too deeply")
    except ValueError as e:  # JSONDecodeError, and the interpreter's int digit limit
        if "integer string conversion" in str(e):
            f.fail("message", _LONG_INT)
        f.fail("message", f"is not valid JSON ({e})")
    env = Envelope.from_dict(obj, expect_type)
    _check_size(len(raw), env.type)
    return env


def _unique_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                f.fail("message", f"duplicate key {k[:64]!r} in a JSON object")
            seen.add(k)
    return obj


def _bounded_int(literal: str) -> int:
    if len(literal) > _MAX_INT_DIGITS:
        f.fail("message", _LONG_INT)
    return int(literal)


def _int_parser() -> Any:
    """None (json's own C conversion) where the interpreter bounds the digits of an int
    literal itself (3.11, and the 3.8-3.10 security releases: 4300 by default), since a
    Python hook per int costs a tenth of decoding a result; our own bound otherwise, as an
    unbounded literal takes quadratic time to convert. Values that parse are range-checked
    later, at their field."""
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    return None if limit else _bounded_int


# Built once: json.loads(text, **hooks) would build a decoder and its scanner per call. Shared
# between threads like json's own default decoder; the hooks keep no state.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_int=_int_parser())
