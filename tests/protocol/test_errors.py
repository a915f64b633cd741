"""Rejections name the offending field and say what was expected."""

from __future__ import annotations

import dataclasses
import json
import pickle
from typing import Any, Dict

import pytest

from protocol import (
    MAX_COMMAND_BYTES,
    MAX_MESSAGE_BYTES,
    SCHEMA_VERSION,
    Ack,
    AdaptSpec,
    BenchResult,
    BenchSpec,
    BenchStats,
    BlobChunk,
    Command,
    Heartbeat,
    ProtocolError,
    Status,
    decode,
    encode,
    make,
)

SHA = "ab" * 32
CMD_ID = "0123456789abcdef0123456789abcdef"


def command_dict(**body: Any) -> Dict[str, Any]:
    bench = {"model_sha256": SHA, "model_name": "nb201-0001"}
    return {
        "schema": SCHEMA_VERSION,
        "type": "cmd",
        "msg_id": "f" * 32,
        "device": "pi4-01",
        "created_at": 1700000000.5,
        "body": dict({"cmd_id": CMD_ID, "kind": "bench", "bench": bench}, **body),
    }


def rejection(message: Any, **kwargs: Any) -> ProtocolError:
    data = message if isinstance(message, bytes) else json.dumps(message).encode()
    with pytest.raises(ProtocolError) as info:
        decode(data, **kwargs)
    return info.value


def test_valid_command_decodes_with_spec_defaults() -> None:
    env = decode(json.dumps(command_dict()).encode(), expect_type="cmd")
    assert env.body == Command(CMD_ID, "bench", bench=BenchSpec(SHA, "nb201-0001"))
    assert env.body.bench is not None and env.body.bench.threads == 1
    assert env.body.bench.max_seconds == 150.0 and env.body.bench.timeout_s is None


def test_threads_zero() -> None:
    msg = command_dict()
    msg["body"]["bench"]["threads"] = 0
    err = rejection(msg)
    assert err.field == "body.bench.threads"
    assert str(err) == "body.bench.threads: must be an int in 1..64, got 0"


def test_bool_is_not_an_int_but_int_is_a_float() -> None:
    msg = command_dict()
    msg["body"]["bench"]["threads"] = True
    assert str(rejection(msg)) == "body.bench.threads: must be an int in 1..64, got True"
    msg["body"]["bench"]["threads"] = 2
    msg["body"]["bench"]["warmup_seconds"] = 3
    spec = decode(json.dumps(msg).encode()).body.bench
    assert spec.warmup_seconds == 3.0 and isinstance(spec.warmup_seconds, float)


def test_bad_sha256() -> None:
    msg = command_dict()
    msg["body"]["bench"]["model_sha256"] = "AB" * 32
    err = rejection(msg)
    assert err.field == "body.bench.model_sha256"
    assert "64 lowercase hex" in err.reason


@pytest.mark.parametrize(
    "key, expected",
    [("thread", "unknown field (did you mean 'threads'?)"), ("gpu", "unknown field")],
)
def test_unknown_field(key: str, expected: str) -> None:
    msg = command_dict()
    msg["body"]["bench"][key] = 4
    assert str(rejection(msg)) == f"body.bench.{key}: {expected}"


def test_unknown_envelope_field() -> None:
    msg = command_dict()
    msg["extra"] = 1
    assert str(rejection(msg)) == "extra: unknown field"


def test_missing_field() -> None:
    msg = command_dict()
    del msg["body"]["cmd_id"]
    assert str(rejection(msg)) == "body.cmd_id: is required"


def test_kind_bench_requires_bench() -> None:
    msg = command_dict(bench=None)
    assert str(rejection(msg)) == "body.bench: is required when kind is 'bench'"
    del msg["body"]["bench"]
    assert str(rejection(msg)) == "body.bench: is required when kind is 'bench'"


def test_cancel_needs_target_and_no_bench() -> None:
    assert rejection(command_dict(kind="cancel", bench=None)).field == "body.target_cmd_id"
    err = rejection(command_dict(kind="ping"))
    assert str(err) == "body.bench: must be null unless kind is 'bench' (kind is 'ping')"
    ok = decode(json.dumps(command_dict(kind="cancel", bench=None, target_cmd_id=CMD_ID)).encode())
    assert ok.body.target_cmd_id == CMD_ID


def test_adapt_and_mcu_decode() -> None:
    msg = command_dict(kind="adapt", bench=None, adapt={"task": "drift", "steps": 20})
    body = decode(json.dumps(msg).encode()).body
    assert (body.kind, body.adapt.task, body.adapt.steps, body.adapt.optimizer) == (
        "adapt", "drift", 20, "halo")  # fmt: skip
    assert rejection(command_dict(kind="adapt", bench=None)).field == "body.adapt"
    # class_balanced came later: off the wire while None, so older agents see what they know.
    assert "class_balanced" not in body.adapt.to_dict()
    on = dataclasses.replace(body.adapt, class_balanced=True)
    assert on.to_dict()["class_balanced"] is True
    assert AdaptSpec.from_dict(on.to_dict()) == on
    msg["body"]["adapt"]["class_balanced"] = "yes"
    assert rejection(msg).field == "body.adapt.class_balanced"
    msg = command_dict(kind="mcu", bench=None, mcu={"dut": "l4r5", "windows": 3})
    body = decode(json.dumps(msg).encode()).body
    assert (body.kind, body.mcu.dut, body.mcu.windows, body.mcu.min_window_s) == (
        "mcu", "l4r5", 3, 10.0)  # fmt: skip
    assert rejection(command_dict(kind="mcu", bench=None)).field == "body.mcu"
    bad = command_dict(kind="mcu", bench=None, mcu={"dut": "/dev/ttyACM0"})
    assert rejection(bad).field == "body.mcu.dut"  # a port never comes over the network


def test_min_seconds_above_max_seconds() -> None:
    msg = command_dict()
    msg["body"]["bench"].update(min_seconds=10, max_seconds=5)
    assert rejection(msg).field == "body.bench.min_seconds"


def test_oversized_command() -> None:
    # Whitespace keeps the JSON valid; only the size is wrong.
    data = json.dumps(command_dict(), indent=MAX_COMMAND_BYTES // 20).encode()
    assert MAX_COMMAND_BYTES < len(data) < MAX_MESSAGE_BYTES
    err = rejection(data)
    assert err.field == "message"
    assert f"a 'cmd' message may have at most {MAX_COMMAND_BYTES}" in err.reason
    assert rejection(data, expect_type="cmd").field == "message"


def test_oversized_message_rejected_before_parsing() -> None:
    err = rejection(b"\xff" * (MAX_MESSAGE_BYTES + 1))
    assert err.field == "message" and "bytes" in err.reason


def test_encode_refuses_what_decode_would_refuse() -> None:
    result = BenchResult(
        result_id="1" * 32,
        job_id="job-1",
        cmd_id=CMD_ID,
        status="failed",
        reason="timeout",
        spec=BenchSpec(SHA, "m"),
        model_bytes=None,
        runtime="ai-edge-litert",
        runtime_version="2.1.0",
        init_ns=None,
        first_ns=None,
        warmup_count=0,
        warmup_mean_ns=None,
        stats=None,
        raw_ns=None,
        env_pre={f"k{i}": "x" * 4000 for i in range(100)},
        env_post={},
        ops={},
        delegated=False,
        peak_rss_bytes=None,
        started_at=1.0,
        finished_at=2.0,
    )
    with pytest.raises(ProtocolError, match="at most 262144"):
        encode(make(result, "pi4-01"))
    result.env_pre = {}
    result.reason = None
    with pytest.raises(ProtocolError, match="body.reason: is required when status is 'failed'"):
        encode(make(result, "pi4-01"))
    result.status = "ok"
    with pytest.raises(ProtocolError, match="body.stats: is required when status is 'ok'"):
        encode(make(result, "pi4-01"))
    result.stats = BenchStats(3, *[1.0] * 10)
    assert decode(encode(make(result, "pi4-01"))).body == result


@pytest.mark.parametrize("schema", [2, 0, "1", True, None])
def test_wrong_schema_version(schema: Any) -> None:
    msg = command_dict()
    msg["schema"] = schema
    msg["body"] = {"from": "the future"}
    err = rejection(msg)
    assert err.field == "schema"
    assert "unsupported schema version" in err.reason


def test_missing_schema() -> None:
    msg = command_dict()
    del msg["schema"]
    assert str(rejection(msg)) == "schema: is required"


def test_expect_type() -> None:
    assert str(rejection(command_dict(), expect_type="result")) == (
        "type: expected 'result' here, got 'cmd'"
    )


def test_unknown_type() -> None:
    msg = command_dict()
    msg["type"] = "reboot"
    assert rejection(msg).field == "type"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"[1, 2]", "must be a JSON object"),
        (b'"cmd"', "must be a JSON object"),
        (b"\xc3\x28{}", "not valid UTF-8"),
        (b"{", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"schema": 1, "schema": 1}', "duplicate key 'schema'"),
        (b"[" * 100000, "nested too deeply"),
        (b'{"schema": 1' + b"0" * 5000 + b"}", "integer literal is far too long"),
    ],
)
def test_malformed_json(data: bytes, reason: str) -> None:
    err = rejection(data)
    assert err.field == "message"
    assert reason in err.reason
    assert "message:" not in err.reason


def test_long_int_literal_rejected_whichever_parser() -> None:
    """60 digits: past int64, under the interpreter's own digit limit -- rejected either at
    the message (our bound, on interpreters without one) or at the int field."""
    message = command_dict()
    message["body"]["bench"]["threads"] = 10**59
    err = rejection(message, expect_type="cmd")
    assert err.field in ("message", "body.bench.threads"), err


def test_non_bytes_input() -> None:
    with pytest.raises(ProtocolError, match="must be bytes"):
        decode("{}")  # type: ignore[arg-type]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_floats(literal: str) -> None:
    text = json.dumps(command_dict()).replace("1700000000.5", literal)
    err = rejection(text.encode())
    assert err.field == "created_at"
    assert "finite number" in err.reason


def test_free_form_json_is_bounded() -> None:
    nested: Any = 1
    for _ in range(40):
        nested = [nested]
    with pytest.raises(ProtocolError, match=r'^body\.env_pre\["deep"\](\[0\])+: nested deeper'):
        _result_with_env({"deep": nested})
    many = {f"k{i}": i for i in range(257)}
    with pytest.raises(ProtocolError) as info:
        _result_with_env(many)
    assert str(info.value) == "body.env_pre: must have at most 256 keys, got 257"
    with pytest.raises(ProtocolError, match=r'^body\.env_pre\["x"\]: must be a JSON value'):
        _result_with_env({"x": object()})


def test_lone_surrogate_rejected() -> None:
    text = json.dumps(command_dict()).replace("nb201-0001", "\\ud800")
    err = rejection(text.encode())
    assert err.field == "body.bench.model_name"
    assert "surrogate" in err.reason


def test_heartbeat_errors_name_list_items_and_keys() -> None:
    hb = Heartbeat(1.0, [0.1, 0.2], {}, {}, None, 0, 0, None, "0.1")
    with pytest.raises(ProtocolError) as info:
        hb.validate()
    assert str(info.value) == "body.load: must have exactly 3 items, got 2"
    hb.load = [0.1, 0.2, -1.0]
    with pytest.raises(ProtocolError, match=r"^body\.load\[2\]: must be a finite number >= 0.0"):
        hb.validate()
    hb.load = [0.0, 0.0, 0.0]
    hb.temps_c = {"cpu": float("nan")}
    with pytest.raises(ProtocolError, match=r'^body\.temps_c\["cpu"\]: must be a finite number'):
        hb.validate()
    hb.temps_c = {"cpu": 45}
    hb.running_job = "a/b"
    with pytest.raises(ProtocolError, match=r"^body\.running_job: must be an id"):
        hb.validate()


def test_optional_fields_may_be_left_out() -> None:
    assert Ack.from_dict({"cmd_id": CMD_ID, "state": "done"}) == Ack(CMD_ID, "done", None, None)


def _result_with_env(env_pre: Dict[str, Any]) -> None:
    spec = BenchSpec(SHA, "m").to_dict()
    BenchResult.from_dict(
        {
            "result_id": "1" * 32,
            "job_id": "j",
            "cmd_id": CMD_ID,
            "status": "failed",
            "reason": "x",
            "spec": spec,
            "model_bytes": None,
            "runtime": "r",
            "runtime_version": "1",
            "init_ns": None,
            "first_ns": None,
            "warmup_count": 0,
            "warmup_mean_ns": None,
            "stats": None,
            "raw_ns": None,
            "env_pre": env_pre,
            "env_post": {},
            "ops": {},
            "delegated": False,
            "peak_rss_bytes": None,
            "started_at": 0,
            "finished_at": 0,
        }
    )


def test_blob_chunk_rules() -> None:
    assert BlobChunk.of(SHA, 10, 13, b"abc").payload() == b"abc"
    BlobChunk(SHA, 0, 0, "", error="unknown blob").validate()
    with pytest.raises(ProtocolError, match=r"^body\.data: must be empty when error is set"):
        BlobChunk(SHA, 0, 0, "YWJj", error="unknown blob").validate()
    with pytest.raises(ProtocolError, match=r"^body\.data: chunk at offset 11 with 3 bytes"):
        BlobChunk.of(SHA, 11, 13, b"abc").validate()
    with pytest.raises(ProtocolError, match=r"^body\.data: must be base64"):
        BlobChunk(SHA, 0, 10, "not base64!").validate()


def test_make_checks_body_type() -> None:
    with pytest.raises(ProtocolError, match="a 'ack' message needs a Ack body, got Status"):
        make("ack", "pi4-01", Status("online", "0.1", None))
    env = make(Status("online", "0.1", None), "pi4-01")
    assert env.type == "status" and len(env.msg_id) == 32 and env.created_at > 0


def test_encode_checks_envelope_fields() -> None:
    env = make(Status("online", "0.1", None), "pi4/01")
    with pytest.raises(ProtocolError, match="^device: "):
        encode(env)


def test_protocol_error_text_and_pickling() -> None:
    err = ProtocolError("body.spec.threads", "must be an int in 1..64, got 0")
    assert str(err) == "body.spec.threads: must be an int in 1..64, got 0"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.field, copy.reason, str(copy)) == (err.field, err.reason, str(err))
    assert isinstance(err, ValueError)


def test_numpy_values_are_sent_as_plain_numbers() -> None:
    np = pytest.importorskip("numpy")
    stats = BenchStats(np.int64(3), *np.arange(10, dtype=np.float32).tolist())
    stats.p50 = np.float32(1.5)
    load = np.array([0.5, 0.25, 0.0])
    freqs = {"cpu0": np.uint32(1200)}
    hb = Heartbeat(np.float64(1.0), load, {}, freqs, np.bool_(False), 0, 0, None, "0.1")
    for body in (stats, hb):
        json.dumps(body.to_dict())  # plain Python values only
        body.validate()
    assert Heartbeat.from_dict(hb.to_dict()).cpu_freq_khz == {"cpu0": 1200}
