"""The fast paths in decode accept exactly what the full checks accept, with the same result,
and leave every error to the full checks (so it names the same field with the same text)."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any, Callable, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import ProtocolError, pack_ns, unpack_ns
from protocol import fields as f
from protocol.packing import check_packed_ns

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT64_MAX = 2**63 - 1

# Values meant to land on both sides of every fast test: ASCII and not, lone surrogates,
# strings and keys at their limits, ints at and past int64, floats past the finite range.
odd_scalars = st.sampled_from(
    [
        "x" * f.MAX_STR,
        "x" * (f.MAX_STR + 1),
        "\u00e9t\u00e9",
        "\ud800",
        "",
        INT64_MAX,
        INT64_MAX + 1,
        -(2**63),
        -(2**63) - 1,
        10**40,
        1.7976931348623157e308,
        float("inf"),
        float("-inf"),
        float("nan"),
        -0.0,
        True,
        False,
        None,
    ]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats()
    | st.text(max_size=8)
    | odd_scalars
)
keys = st.text(max_size=6) | st.sampled_from(["k" * f.MAX_STR, "k" * (f.MAX_STR + 1), "\ud800"])
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=16,
)


def deep(levels: int, leaf: Any) -> Any:
    for i in range(levels):
        leaf = [leaf] if i % 2 else {"d": leaf}
    return leaf


def outcome(check: Callable[[], Any]) -> Tuple[str, Any]:
    try:
        value = check()
    except ProtocolError as e:
        return "error", str(e)
    # repr tells 1 from 1.0 and True from 1, which == does not.
    return "ok", repr(value)


def same_as_full_walk(value: Any, depth: int = 0) -> None:
    assert outcome(lambda: f.json_value(value, "v", depth)) == outcome(
        lambda: f._value_with_paths(value, "v", depth)
    )


@FUZZ
@given(values, st.integers(0, f.MAX_DEPTH + 1))
def test_json_value_fast_walk_matches_full_walk(value: Any, depth: int) -> None:
    same_as_full_walk(value, depth)


@pytest.mark.parametrize("levels", [f.MAX_DEPTH - 1, f.MAX_DEPTH, f.MAX_DEPTH + 1, 30])
@pytest.mark.parametrize("leaf", [1, "x", {}, [], {"k": 1}, [1.5]])
def test_depth_limit_matches_full_walk(levels: int, leaf: Any) -> None:
    same_as_full_walk(deep(levels, leaf))


def test_not_json_types_go_the_long_way() -> None:
    class Text(str):
        pass

    for value in ({1: 2}, {"a": (1, 2)}, [object()], {"a": Text("b")}, {"a": [1, {2: 3}]}):
        same_as_full_walk(value)
    # The full check returns a str subclass as it got it.
    assert type(f.json_value({"a": Text("b")}, "v")["a"]) is Text
    with pytest.raises(ProtocolError, match=r'^v\["a"\]\[1\]: keys must be strings'):
        f.json_object({"a": [1, {2: 3}]}, "v")


def test_json_object_copies() -> None:
    value = {"a": {"b": [1, 2]}}
    out = f.json_object(value, "v")
    assert out == value and out is not value
    assert out["a"] is not value["a"] and out["a"]["b"] is not value["a"]["b"]


@FUZZ
@given(st.dictionaries(keys, scalars, max_size=6))
def test_dict_of_names_the_first_bad_key(value: Any) -> None:
    check = f.dict_of(f.int_in(0), max_keys=5, max_key_len=4)
    kind, text = outcome(lambda: check(value, "v"))
    if len(value) > 5:
        assert (kind, text) == ("error", f"v: must have at most 5 keys, got {len(value)}")
        return
    for k, v in value.items():
        key_ok = len(k) <= 4 and f._utf8_ok(k)
        if not key_ok or not (f.is_int(v) and 0 <= v <= INT64_MAX):
            assert kind == "error" and text.startswith(f.key("v", k) + ": "), (value, text)
            return
    assert (kind, text) == ("ok", repr(value))


@FUZZ
@given(st.lists(scalars, max_size=6))
def test_list_of_names_the_first_bad_item(value: Any) -> None:
    check = f.list_of(f.float_in(0.0, 10.0, lo_open=True), max_len=5)
    kind, text = outcome(lambda: check(value, "v"))
    if len(value) > 5:
        assert kind == "error" and text.startswith("v: must have 0..5 items")
        return
    for i, v in enumerate(value):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 < v <= 10.0
        if not ok:
            assert kind == "error" and text.startswith(f"v[{i}]: "), (value, text)
            return
    assert kind == "ok" and all(type(v) is float for v in check(value, "v"))


@pytest.mark.parametrize(
    "check, good, bad",
    [
        (f.float_in(0.0), [0.0, 0, 1e308, 5], [-1e-300, float("inf"), float("nan"), True]),
        (f.float_in(0.0, lo_open=True), [1e-300, 2], [0.0, -0.0, 0]),
        (f.float_in(-1.0, 1.0), [-1.0, 1.0, -1, 1], [1.0000001, -1.01, 2]),
        (f.float_in(), [-1.7976931348623157e308, 10**20], [float("-inf"), 10**400]),
        (f.int_in(0, 10), [0, 10], [-1, 11, 1.0, True, "1"]),
        (f.text(3), ["", "abc", "\u00e9\u00e9\u00e9"], ["abcd", "\ud800", 1, None]),
    ],
)
def test_scalar_checkers(check: f.Checker, good: list, bad: list) -> None:
    for value in good:
        out = check(value, "v")
        assert out == value
    for value in bad:
        with pytest.raises(ProtocolError, match=r"^v: "):
            check(value, "v")
    assert type(f.float_in(0.0)(5, "v")) is float


def packed(raw: bytes) -> str:
    return base64.b64encode(zlib.compress(raw)).decode()


@FUZZ
@given(
    st.lists(st.integers(-(2**63), INT64_MAX), max_size=40).map(
        lambda vs: packed(struct.pack(f"<{len(vs)}q", *vs))
    )
    | st.binary(max_size=64).map(packed)
    | st.text(max_size=40)
    | st.builds(lambda vs: pack_ns(vs)[:-3], st.lists(st.integers(0, 9), max_size=5))
)
def test_check_packed_ns_raises_what_unpack_ns_raises(text: str) -> None:
    assert outcome(lambda: check_packed_ns(text, "raw")) == outcome(
        lambda: (unpack_ns(text, "raw"), None)[1]
    )


def test_check_packed_ns_names_the_first_negative() -> None:
    text = packed(struct.pack("<4q", 1, 2, -3, -4))
    with pytest.raises(ProtocolError) as info:
        check_packed_ns(text, "body.raw_ns")
    assert str(info.value) == "body.raw_ns[2]: must be >= 0, got -3"


def test_decode_error_paths_unchanged_by_the_fast_walk() -> None:
    # Same text as the full walk always gave: the offending key and list index.
    from tests.protocol.test_errors import _result_with_env

    with pytest.raises(ProtocolError) as info:
        _result_with_env({"ok": 1, "temps": {"cpu": [1.0, float("inf")]}})
    assert str(info.value) == ('body.env_pre["temps"]["cpu"][1]: must be a finite number, got inf')
    with pytest.raises(ProtocolError) as info:
        _result_with_env({"x": json.loads('"\\ud800"')})
    assert str(info.value).startswith('body.env_pre["x"]: must be valid Unicode')
