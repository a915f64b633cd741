"""Small typed checkers for JSON values, each naming the offending field path.

A checker is ``check(value, path) -> value``: it returns the value converted to its Python
form (ints accepted for floats become floats, nested objects become dataclasses) or raises
:class:`ProtocolError` whose field is ``path``. Checkers never trust the input's type, so
arbitrary JSON can be fed to them.

Speed: decode runs every checker on every field of every message (~150 values in a result),
so each checker first tries the common case -- the exact JSON type, in range, ASCII text --
and returns it as is; anything else takes the general path, which also builds the error. The
free-form walkers (objects, lists, ``json_value``) do not build a path per key or item on
their first pass: if anything fails they walk again with paths, so the error names the same
field it always did. Both passes accept exactly the same values.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any, Callable, Dict, List, NoReturn, Optional, Pattern, Sequence

from .errors import ProtocolError

Checker = Callable[[Any, str], Any]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# Sane bounds for anything the contract leaves open.
MAX_STR = 4096
MAX_KEYS = 256
MAX_LIST = 4096
MAX_DEPTH = 16
# A float within these bounds is finite; every comparison with nan is false.
_FLOAT_MAX = sys.float_info.max

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HEX32_RE = re.compile(r"[0-9a-f]{32}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def fail(path: str, reason: str) -> NoReturn:
    raise ProtocolError(path, reason)


def describe(value: Any) -> str:
    """A short rendering of a bad value for error messages (never the whole payload)."""
    if value is None or isinstance(value, (bool, int, float)):
        text = "null" if value is None else repr(value)
    elif isinstance(value, str):
        text = repr(value) if len(value) <= 40 else f"{value[:40]!r}... ({len(value)} chars)"
    elif isinstance(value, dict):
        return "an object"
    elif isinstance(value, (list, tuple)):
        return "an array"
    else:
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:60] + "..."


def sub(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def member(path: str, name: Any) -> str:
    """Path of an arbitrary (possibly unknown, possibly empty) key of an object."""
    name = str(name)
    if _NAME_RE.fullmatch(name):
        return sub(path, name)
    return key(path, name)


def item(path: str, index: int) -> str:
    return f"{path}[{index}]"


_PLAIN_KEY = re.compile(r"[ !#-\[\]-~]{0,40}")  # printable ASCII but " and \: quoted as is


def key(path: str, name: str) -> str:
    # Hot in decode (every key of every free-form object): skip json.dumps when it would only
    # add the quotes.
    if _PLAIN_KEY.fullmatch(name):
        return f'{path}["{name}"]'
    return f"{path}[{json.dumps(name[:40])}]"


def is_int(value: Any) -> bool:
    # bool is a subclass of int, but true/false is never a count.
    return isinstance(value, int) and not isinstance(value, bool)


def _range_text(lo: Optional[float], hi: Optional[float], lo_open: bool = False) -> str:
    if lo is not None and hi is not None and not lo_open:
        return f" in {lo}..{hi}"
    bounds = []
    if lo is not None:
        bounds.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        bounds.append(f"<= {hi}")
    return " " + " and ".join(bounds) if bounds else ""


def int_in(lo: int = INT64_MIN, hi: int = INT64_MAX) -> Checker:
    want = "must be an int" + _range_text(
        None if lo == INT64_MIN else lo, None if hi == INT64_MAX else hi
    )

    def check(value: Any, path: str) -> int:
        if type(value) is int and lo <= value <= hi:
            return value
        if not is_int(value) or not lo <= value <= hi:
            fail(path, f"{want}, got {describe(value)}")
        return int(value)

    return check


def float_in(
    lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False
) -> Checker:
    """A finite number (ints accepted, returned as float) within the bounds."""
    want = "must be a finite number" + _range_text(lo, hi, lo_open)
    # The fast test is only ever stricter than the full one below (e.g. an open lower bound
    # of None excludes -_FLOAT_MAX), so whatever it accepts the full test accepts too.
    fast_lo = -_FLOAT_MAX if lo is None else lo
    fast_hi = _FLOAT_MAX if hi is None else hi

    def check(value: Any, path: str) -> float:
        if (
            type(value) is float
            and (fast_lo < value if lo_open else fast_lo <= value)
            and value <= fast_hi
        ):
            return value
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            fail(path, f"{want}, got {describe(value)}")
        try:
            number = float(value)
        except OverflowError:
            fail(path, f"{want}, got an int too large for a float")
        if (
            not math.isfinite(number)
            or (lo is not None and (number <= lo if lo_open else number < lo))
            or (hi is not None and number > hi)
        ):
            fail(path, f"{want}, got {describe(value)}")
        return number

    return check


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        fail(path, f"must be true or false, got {describe(value)}")
    return value


def _text(value: Any, path: str, max_len: int) -> str:
    if not isinstance(value, str):
        fail(path, f"must be a string, got {describe(value)}")
    if len(value) > max_len:
        fail(path, f"must be at most {max_len} characters, got {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        fail(path, "must be valid Unicode (it contains a lone surrogate)")
    return value


def text(max_len: int = MAX_STR) -> Checker:
    def check(value: Any, path: str) -> str:
        # ASCII cannot hold a lone surrogate: no need to try encoding it.
        if type(value) is str and len(value) <= max_len and value.isascii():
            return value
        return _text(value, path, max_len)

    return check


def one_of(choices: Sequence[str]) -> Checker:
    allowed = ", ".join(repr(c) for c in choices)

    def check(value: Any, path: str) -> str:
        if not isinstance(value, str) or value not in choices:
            fail(path, f"must be one of {allowed}, got {describe(value)}")
        return value

    return check


def matching(pattern: Pattern[str], what: str) -> Checker:
    def check(value: Any, path: str) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            fail(path, f"must be {what}, got {describe(value)}")
        return value

    return check


HEX32 = matching(HEX32_RE, "32 lowercase hex digits (uuid4().hex)")
SHA256 = matching(SHA256_RE, "a sha256 as 64 lowercase hex digits")
ID = matching(ID_RE, "an id of 1-64 letters, digits, '_', '.', '-' starting with a letter or digit")


def optional(checker: Checker) -> Checker:
    def check(value: Any, path: str) -> Any:
        return None if value is None else checker(value, path)

    return check


def list_of(checker: Checker, max_len: int = MAX_LIST, min_len: int = 0) -> Checker:
    size = f"exactly {min_len}" if min_len == max_len else f"{min_len}..{max_len}"

    def check(value: Any, path: str) -> List[Any]:
        if not isinstance(value, list):
            fail(path, f"must be an array, got {describe(value)}")
        if not min_len <= len(value) <= max_len:
            fail(path, f"must have {size} items, got {len(value)}")
        try:
            return [checker(v, path) for v in value]
        except ProtocolError:  # again with each item's path, to name the bad one
            return [checker(v, item(path, i)) for i, v in enumerate(value)]

    return check


def unique(checker: Checker) -> Checker:
    """Wraps a list checker: no item may repeat."""

    def check(value: Any, path: str) -> List[Any]:
        items = checker(value, path)
        seen = set()
        for i, v in enumerate(items):
            if v in seen:
                fail(item(path, i), f"duplicate value {describe(v)}")
            seen.add(v)
        return items

    return check


def _utf8_ok(text: str) -> bool:
    """ASCII, or encodable as UTF-8 (no lone surrogate): what _text checks, without raising."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _object(
    value: Any, path: str, max_keys: int, max_key_len: int, check_value: Checker
) -> Dict[str, Any]:
    """A JSON object: string keys of bounded length, each value checked at its own path."""
    if type(value) is dict and len(value) <= max_keys:
        # First pass without a path per key; any doubt or failure falls through to the
        # second pass, which names the offending key.
        out = {}
        try:
            for k, v in value.items():
                if type(k) is not str or len(k) > max_key_len or not _utf8_ok(k):
                    break
                out[k] = check_value(v, path)
            else:
                return out
        except ProtocolError:
            pass
    return _object_with_paths(value, path, max_keys, max_key_len, check_value)


def _object_with_paths(
    value: Any, path: str, max_keys: int, max_key_len: int, check_value: Checker
) -> Dict[str, Any]:
    if not isinstance(value, dict):
        fail(path, f"must be an object, got {describe(value)}")
    if len(value) > max_keys:
        fail(path, f"must have at most {max_keys} keys, got {len(value)}")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str):
            fail(path, f"keys must be strings, got {describe(k)}")
        at = key(path, k)
        _text(k, at, max_key_len)
        out[k] = check_value(v, at)
    return out


def dict_of(value_checker: Checker, max_keys: int = MAX_KEYS, max_key_len: int = 128) -> Checker:
    """An object with string keys and values of one kind."""

    def check(value: Any, path: str) -> Dict[str, Any]:
        return _object(value, path, max_keys, max_key_len, value_checker)

    return check


_ANY_INT = int_in()
_ANY_FLOAT = float_in()


def json_value(value: Any, path: str, depth: int = 0) -> Any:
    """Free-form JSON (``Dict[str, Any]`` fields): bounded in depth, size and number range."""
    try:
        return _fast_value(value, depth)
    except _Unusual:
        return _value_with_paths(value, path, depth)


def json_object(value: Any, path: str, depth: int = 0) -> Dict[str, Any]:
    if type(value) is dict:
        try:
            return _fast_object(value, depth)
        except _Unusual:
            pass
    return _object_with_paths(
        value, path, MAX_KEYS, MAX_STR, lambda v, at: _value_with_paths(v, at, depth + 1)
    )


class _Unusual(Exception):
    """The fast walk met something it does not accept outright (maybe valid, maybe not)."""


def _fast_value(value: Any, depth: int) -> Any:
    """json_value for the exact types json.loads makes, without paths or messages. Accepts
    a subset of what _value_with_paths accepts, with the same result; _Unusual otherwise.
    One _Unusual aborts the whole walk (no retry per level, so a bad value deep down costs
    two walks, not one per level)."""
    if depth > MAX_DEPTH:
        raise _Unusual
    kind = type(value)
    if kind is dict:
        return _fast_object(value, depth)
    if kind is list:
        if len(value) <= MAX_LIST:
            return [_fast_value(v, depth + 1) for v in value]
    elif _fast_scalar(value, kind):
        return value
    raise _Unusual


def _fast_scalar(value: Any, kind: type) -> bool:
    if kind is str:
        return len(value) <= MAX_STR and (value.isascii() or _utf8_ok(value))
    if kind is float:
        return -_FLOAT_MAX <= value <= _FLOAT_MAX
    if kind is int:
        return INT64_MIN <= value <= INT64_MAX
    return value is None or kind is bool


def _fast_object(value: Dict[Any, Any], depth: int) -> Dict[str, Any]:
    if len(value) > MAX_KEYS or depth >= MAX_DEPTH:
        # depth >= MAX_DEPTH: its values would be too deep (or it is empty: the long way).
        raise _Unusual
    out = {}
    inner = depth + 1
    for k, v in value.items():
        if type(k) is not str or len(k) > MAX_STR or not (k.isascii() or _utf8_ok(k)):
            raise _Unusual
        kind = type(v)
        # Scalars inline: most values are, and a call per value is most of the cost.
        if kind is str:
            if len(v) > MAX_STR or not (v.isascii() or _utf8_ok(v)):
                raise _Unusual
        elif kind is float:
            if not -_FLOAT_MAX <= v <= _FLOAT_MAX:
                raise _Unusual
        elif kind is int:
            if not INT64_MIN <= v <= INT64_MAX:
                raise _Unusual
        elif kind is dict:
            v = _fast_object(v, inner)
        elif kind is list:
            if len(v) > MAX_LIST:
                raise _Unusual
            v = [_fast_value(x, inner + 1) for x in v]
        elif not (v is None or kind is bool):
            raise _Unusual
        out[k] = v
    return out


def _value_with_paths(value: Any, path: str, depth: int) -> Any:
    """json_value the long way: every rule, and errors that name the offending item."""
    if depth > MAX_DEPTH:
        fail(path, f"nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return _text(value, path, MAX_STR) if isinstance(value, str) else value
    if is_int(value):
        return _ANY_INT(value, path)
    if isinstance(value, float):
        return _ANY_FLOAT(value, path)
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            fail(path, f"must have at most {MAX_LIST} items, got {len(value)}")
        return [_value_with_paths(v, item(path, i), depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return _object_with_paths(
            value, path, MAX_KEYS, MAX_STR, lambda v, at: _value_with_paths(v, at, depth + 1)
        )
    fail(path, f"must be a JSON value, got {describe(value)}")
