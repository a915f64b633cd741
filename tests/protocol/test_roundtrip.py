"""Round trips of valid messages, and fuzzing: decode never raises anything but ProtocolError."""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    CHUNK_MAX,
    MESSAGE_TYPES,
    Ack,
    AdaptResult,
    AdaptSpec,
    BenchResult,
    BenchSpec,
    BenchStats,
    BlobChunk,
    BlobRequest,
    Body,
    Caps,
    Command,
    Envelope,
    Heartbeat,
    McuSpec,
    Progress,
    ProtocolError,
    Status,
    decode,
    encode,
    make,
    pack_ns,
)

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INT64_MAX = 2**63 - 1
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)
hex32 = st.uuids().map(lambda u: u.hex)
sha256 = st.binary(min_size=32, max_size=32).map(lambda b: b.hex())
counts = st.integers(0, INT64_MAX)


def text(max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(max_size=max_size)


def number(lo: float = 0.0, hi: float = 1e12) -> st.SearchStrategy[float]:
    # Ints are valid in float fields; they come back as equal floats.
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False) | st.integers(
        math.ceil(lo), math.floor(hi)
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), INT64_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text(20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text(10), inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(text(20), json_values, max_size=6)

statuses = st.builds(
    Status,
    state=st.sampled_from(["online", "offline"]),
    agent_version=text(),
    started_at=st.none() | number(),
)

caps = st.builds(
    Caps,
    agent_version=text(),
    board=text(),
    soc=st.none() | text(),
    machine=text(),
    cores=st.integers(1, 4096),
    ram_bytes=counts,
    os=text(),
    kernel=text(),
    python=text(),
    runtime=st.none() | text(),
    runtime_version=st.none() | text(),
    numpy=text(),
    xnnpack=st.booleans(),
    delegates=st.lists(text(), max_size=5),
    power_sources=st.lists(text(), max_size=5),
    tags=st.lists(text(), max_size=5),
)

heartbeats = st.builds(
    Heartbeat,
    uptime_s=number(),
    load=st.lists(number(0, 1000), min_size=3, max_size=3),
    temps_c=st.dictionaries(text(20), number(-273.15, 1000.0), max_size=8),
    cpu_freq_khz=st.dictionaries(text(20), counts, max_size=8),
    throttled=st.none() | st.booleans(),
    outbox_depth=counts,
    queue_depth=counts,
    running_job=st.none() | ids,
    agent_version=text(),
)


@st.composite
def bench_specs(draw: Callable[..., Any]) -> BenchSpec:
    max_seconds = draw(number(1e-6, 86400.0))
    return BenchSpec(
        model_sha256=draw(sha256),
        model_name=draw(text(128)),
        xnnpack=draw(st.booleans()),
        threads=draw(st.integers(1, 64)),
        affinity=draw(st.none() | st.lists(st.integers(0, 1023), min_size=1, unique=True)),
        seed=draw(counts),
        warmup_runs=draw(st.integers(0, 1000000)),
        warmup_seconds=draw(number(0, 3600)),
        min_runs=draw(st.integers(1, 1000000)),
        min_seconds=draw(st.floats(0.0, max_seconds)),
        max_seconds=max_seconds,
        timeout_s=draw(st.none() | number(1e-3, 172800.0)),
        keep_raw=draw(st.booleans()),
        power=draw(st.sampled_from(["none", "auto", "ina3221x", "hwmon:acpi_power:1"])),
        power_period_ms=draw(st.none() | number(0.5, 10000.0)),
        idle_seconds=draw(st.none() | number(0.0, 3600.0)),
        energy_seconds=draw(st.none() | number(1e-3, 86400.0)),
    )


mcu_specs = st.builds(
    McuSpec,
    dut=st.sampled_from(["l4r5", "nucleo-01", "dut:2"]),
    windows=st.integers(1, 100),
    min_window_s=number(1e-3, 3600.0),
    warmups=st.integers(0, 1000),
    input_sha256=st.none() | sha256,
    power=st.sampled_from(["none", "auto", "ppk2-a"]),
    timeout_s=st.none() | number(1e-3, 172800.0),
)


@st.composite
def adapt_specs(draw: Callable[..., Any]) -> AdaptSpec:
    optimizer = draw(st.sampled_from(["halo", "sgd", "momentum", "adam", "adagrad", "rmsprop"]))
    tune = optimizer != "halo" and draw(st.booleans())
    builtin = draw(st.booleans())
    steps = draw(st.integers(1, 1000000))
    return AdaptSpec(
        task=draw(st.sampled_from(["thyroid", "digits", "drift"])) if builtin else None,
        source_sha256=None if builtin else draw(sha256),
        target_sha256=None if builtin else draw(sha256),
        target_test_sha256=None if builtin else draw(sha256),
        label=draw(text(128)),
        model=draw(st.sampled_from([None, "mlp", "mlp:30,30", "cnn1d:8,8", "cnn2d:8"])),
        optimizer=optimizer,
        optimizer_sha256=draw(st.none() | sha256) if optimizer == "halo" else None,
        lr=None if optimizer == "halo" or tune else draw(st.none() | number(1e-6, 100.0)),
        tune_lr=tune,
        steps=steps,
        batch=draw(st.integers(1, 65536)),
        sparsity=draw(st.sampled_from([None, "0.1,0.3,0.5", "1"])),
        seed=draw(st.integers(0, 2**31 - 1)),
        eval_every=draw(st.sampled_from([0, max(1, steps // 1000 + 1)])),
        pretrain_steps=draw(st.integers(0, 1000000)),
        power=draw(st.sampled_from(["none", "auto", "ina3221x"])),
        timeout_s=draw(st.none() | number(1e-3, 172800.0)),
        class_balanced=draw(st.sampled_from([None, True, False])),
    )


@st.composite
def commands(draw: Callable[..., Any]) -> Command:
    kind = draw(st.sampled_from(["bench", "cancel", "ping", "adapt", "mcu"]))
    return Command(
        cmd_id=draw(hex32),
        kind=kind,
        expires_at=draw(st.none() | number()),
        bench=draw(bench_specs()) if kind == "bench" else None,
        target_cmd_id=draw(hex32) if kind == "cancel" else None,
        mcu=draw(mcu_specs) if kind == "mcu" else None,
        adapt=draw(adapt_specs()) if kind == "adapt" else None,
    )


acks = st.builds(
    Ack,
    cmd_id=hex32,
    state=st.sampled_from(
        ["accepted", "rejected", "running", "done", "failed", "cancelled", "pong"]
    ),
    reason=st.none() | text(),
    job_id=st.none() | ids,
)

progresses = st.builds(
    Progress,
    job_id=ids,
    phase=st.sampled_from(["fetch", "init", "warmup", "measure"]),
    done=counts,
    total=st.none() | counts,
)

ns = number(0, 1e15)
stats = st.builds(
    BenchStats,
    count=st.integers(1, INT64_MAX),
    min=ns,
    p5=ns,
    p50=ns,
    p90=ns,
    p95=ns,
    p99=ns,
    max=ns,
    mean=ns,
    std=ns,
    cv=ns,
)


@st.composite
def results(draw: Callable[..., Any]) -> BenchResult:
    ok = draw(st.booleans())
    return BenchResult(
        result_id=draw(hex32),
        job_id=draw(ids),
        cmd_id=draw(hex32),
        status="ok" if ok else "failed",
        reason=draw(st.none() | text()) if ok else draw(text()),
        spec=draw(bench_specs()),
        model_bytes=draw(st.none() | counts),
        runtime=draw(text()),
        runtime_version=draw(text()),
        init_ns=draw(st.none() | counts),
        first_ns=draw(st.none() | counts),
        warmup_count=draw(counts),
        warmup_mean_ns=draw(st.none() | ns),
        stats=draw(stats) if ok else draw(st.none() | stats),
        raw_ns=draw(st.none() | st.lists(st.integers(0, INT64_MAX), max_size=50).map(pack_ns)),
        env_pre=draw(json_objects),
        env_post=draw(json_objects),
        ops=draw(st.dictionaries(text(20), counts, max_size=10)),
        delegated=draw(st.booleans()),
        peak_rss_bytes=draw(st.none() | counts),
        started_at=draw(number()),
        finished_at=draw(number()),
        energy=draw(st.none() | json_objects),
    )


@st.composite
def adapt_results(draw: Callable[..., Any]) -> AdaptResult:
    ok = draw(st.booleans())
    return AdaptResult(
        result_id=draw(hex32),
        job_id=draw(ids),
        cmd_id=draw(hex32),
        status="ok" if ok else "failed",
        reason=draw(st.none() | text()) if ok else draw(text()),
        spec=draw(adapt_specs()),
        document=draw(json_objects) if ok else draw(st.none() | json_objects),
        started_at=draw(number()),
        finished_at=draw(number()),
    )


blob_requests = st.builds(
    BlobRequest, sha256=sha256, offset=counts, length=st.integers(1, CHUNK_MAX)
)


@st.composite
def blob_chunks(draw: Callable[..., Any]) -> BlobChunk:
    offset = draw(st.integers(0, 2**40))
    if draw(st.booleans()):
        return BlobChunk(draw(sha256), offset, draw(counts), "", error=draw(text()))
    payload = draw(st.binary(max_size=300))
    total = offset + len(payload) + draw(st.integers(0, 2**40))
    return BlobChunk.of(draw(sha256), offset, total, payload)


BODIES: Dict[str, st.SearchStrategy[Body]] = {
    "status": statuses,
    "caps": caps,
    "hb": heartbeats,
    "cmd": commands(),
    "ack": acks,
    "progress": progresses,
    "result": results(),
    "adapt_result": adapt_results(),
    "blob_req": blob_requests,
    "blob_data": blob_chunks(),
}


@st.composite
def envelopes(draw: Callable[..., Any]) -> Envelope:
    kind = draw(st.sampled_from(sorted(BODIES)))
    return make(draw(BODIES[kind]), draw(ids), msg_id=draw(hex32), created_at=draw(number(0, 4e9)))


def test_every_message_type_has_a_strategy() -> None:
    assert set(BODIES) == set(MESSAGE_TYPES)


@FUZZ
@given(envelopes())
def test_decode_inverts_encode(env: Envelope) -> None:
    data = encode(env)
    assert decode(data) == env
    assert decode(data, expect_type=env.type) == env
    # Encoding is deterministic, so a resend from the outbox is byte-identical.
    assert encode(decode(data)) == data


@FUZZ
@given(st.sampled_from(sorted(BODIES)).flatmap(lambda k: BODIES[k]))
def test_body_dict_round_trip(body: Body) -> None:
    assert type(body).from_dict(body.to_dict()) == body
    json.dumps(body.to_dict(), allow_nan=False)


def _decode_or_protocol_error(data: bytes) -> None:
    try:
        decode(data)
    except ProtocolError as e:
        assert str(e)
        assert e.field


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    _decode_or_protocol_error(data)


@FUZZ
@given(json_values)
def test_arbitrary_json_raises_only_protocol_error(value: Any) -> None:
    _decode_or_protocol_error(json.dumps(value).encode())


def _containers(obj: Any, out: List[Any]) -> List[Any]:
    if isinstance(obj, (dict, list)):
        out.append(obj)
        for child in obj.values() if isinstance(obj, dict) else obj:
            _containers(child, out)
    return out


@st.composite
def mutated_messages(draw: Callable[..., Any]) -> bytes:
    """A valid message with one spot changed: replaced, removed, or an extra key added."""
    data = encode(draw(envelopes())).decode()
    if draw(st.booleans()):
        obj = json.loads(data)
        target = draw(st.sampled_from(_containers(obj, [])))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if isinstance(target, dict) and target:
            k = draw(st.sampled_from(sorted(target)))
            if action == "delete":
                del target[k]
            elif action == "add":
                target[draw(text(10))] = draw(json_values)
            else:
                target[k] = draw(json_values)
        elif isinstance(target, list) and target:
            i = draw(st.integers(0, len(target) - 1))
            if action == "delete":
                del target[i]
            else:
                target[i] = draw(json_values)
        return json.dumps(obj).encode()
    raw = bytearray(data.encode())
    for _ in range(draw(st.integers(1, 4))):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw[: draw(st.integers(0, len(raw)))])


@FUZZ
@given(mutated_messages())
def test_mutated_messages_raise_only_protocol_error(data: bytes) -> None:
    _decode_or_protocol_error(data)


def _adapt(**changes: Any) -> Dict[str, Any]:
    data = AdaptSpec(task="thyroid").to_dict()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "path", "reason"),
    [
        ({"task": "mnist"}, "adapt.task", "one of"),
        ({"model": "resnet:50"}, "adapt.model", "mlp:30,30"),
        ({"optimizer": "lion"}, "adapt.optimizer", "one of"),
        ({"optimizer": "adam", "lr": 0.01, "tune_lr": True}, "adapt.lr", "tune_lr"),
        ({"lr": 0.01}, "adapt.lr", "halo learns its own"),
        ({"optimizer": "sgd", "optimizer_sha256": "a" * 64}, "adapt.optimizer_sha256", "halo"),
        ({"task": None}, "adapt.source_sha256", "is required without a task"),
        ({"source_sha256": "b" * 64}, "adapt.source_sha256", "must be null with a task"),
        ({"steps": 0}, "adapt.steps", "1..1000000"),
        ({"steps": 100000, "eval_every": 1}, "adapt.eval_every", "at most 1000"),
        ({"sparsity": "half"}, "adapt.sparsity", "probabilities"),
        ({"power": "../x"}, "adapt.power", "power source"),
        ({"optimiser": "adam"}, "adapt.optimiser", "did you mean 'optimizer'"),
    ],
)
def test_adapt_spec_rejections_name_the_field(
    changes: Dict[str, Any], path: str, reason: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        AdaptSpec.from_dict(_adapt(**changes), "adapt")
    assert info.value.field == path
    assert reason in info.value.reason


def test_adapt_command_needs_its_spec() -> None:
    with pytest.raises(ProtocolError) as info:
        Command.from_dict({"cmd_id": "0" * 32, "kind": "adapt"})
    assert info.value.field == "body.adapt"
    spec = AdaptSpec(source_sha256="a" * 64, target_sha256="b" * 64, target_test_sha256="c" * 64)
    cmd = Command(cmd_id="0" * 32, kind="adapt", adapt=spec)
    assert Command.from_dict(cmd.to_dict()) == cmd
    assert spec.data_blobs() == ["a" * 64, "b" * 64, "c" * 64]
