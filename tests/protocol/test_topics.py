"""Topic names: build/parse round trip, filters, rejection of bad ids and wildcards."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    INGEST_SHARED,
    MESSAGE_TYPES,
    ProtocolError,
    TopicRef,
    device_topic,
    filter_all,
    job_topic,
    parse_topic,
)
from protocol.topics import DEVICE_LEAVES, JOB_LEAVES, QOS

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)


def test_every_message_type_has_a_topic_and_qos() -> None:
    assert set(DEVICE_LEAVES) | set(JOB_LEAVES) == set(MESSAGE_TYPES) == set(QOS)


def test_contract_topics() -> None:
    assert device_topic("pi4-01", "status") == "halo/v1/dev/pi4-01/status"
    assert device_topic("pi4-01", "ack") == "halo/v1/dev/pi4-01/ack"
    assert device_topic("pi4-01", "blob_req") == "halo/v1/dev/pi4-01/blob/req"
    assert device_topic("pi4-01", "blob_data") == "halo/v1/dev/pi4-01/blob/data"
    assert job_topic("pi4-01", "j7", "result") == "halo/v1/dev/pi4-01/job/j7/result"
    assert filter_all("status") == "halo/v1/dev/+/status"
    assert filter_all("blob_req") == "halo/v1/dev/+/blob/req"
    assert filter_all("progress") == "halo/v1/dev/+/job/+/progress"
    assert INGEST_SHARED == "$share/ingest/" + filter_all("result")


@settings(max_examples=100, deadline=None)
@given(ids, ids, st.sampled_from(sorted(DEVICE_LEAVES)), st.sampled_from(sorted(JOB_LEAVES)))
def test_build_parse_round_trip(device: str, job: str, leaf: str, job_leaf: str) -> None:
    assert parse_topic(device_topic(device, leaf)) == TopicRef(device, leaf)
    assert parse_topic(job_topic(device, job, job_leaf)) == TopicRef(device, job_leaf, job)


@pytest.mark.parametrize(
    "device",
    ["", "a/b", "+", "#", "dev+1", "dev#1", "-lead", ".hidden", "a" * 65, "sp ace", "é", None, 7],
)
def test_bad_device_ids(device: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        device_topic(device, "status")
    assert info.value.field == "device"
    with pytest.raises(ProtocolError):
        job_topic(device, "j1", "result")


@pytest.mark.parametrize("job", ["", "a/b", "+", "#", "a" * 65])
def test_bad_job_ids(job: str) -> None:
    with pytest.raises(ProtocolError) as info:
        job_topic("pi4-01", job, "result")
    assert info.value.field == "job_id"


@pytest.mark.parametrize(
    "call",
    [
        lambda: device_topic("pi4-01", "result"),
        lambda: device_topic("pi4-01", "reboot"),
        lambda: job_topic("pi4-01", "j1", "status"),
        lambda: filter_all("nope"),
    ],
)
def test_unknown_leaf(call: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        call()
    assert info.value.field == "leaf"


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "halo/v2/dev/pi4-01/status",
        "/halo/v1/dev/pi4-01/status",
        "halo/v1/dev/pi4-01",
        "halo/v1/dev/pi4-01/",
        "halo/v1/dev/pi4-01/status/extra",
        "halo/v1/dev/pi4-01/blob",
        "halo/v1/dev/pi4-01/cmd/ack",
        "halo/v1/dev/+/status",
        "halo/v1/dev/#",
        "halo/v1/dev/pi4-01/job/+/result",
        "halo/v1/dev/pi4-01/job/j1/status",
        "halo/v1/dev/pi4-01/job/j1/result/x",
        "halo/v1/dev/pi4-01/result",
        INGEST_SHARED,
    ],
)
def test_parse_rejects(topic: str) -> None:
    with pytest.raises(ProtocolError):
        parse_topic(topic)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80) | st.text(alphabet="halo/v1dev+#-_.jobresult", max_size=60))
def test_parse_arbitrary_text_raises_only_protocol_error(topic: str) -> None:
    try:
        ref = parse_topic(topic)
    except ProtocolError:
        return
    rebuilt = (
        job_topic(ref.device, ref.job_id, ref.leaf)
        if ref.job_id is not None
        else device_topic(ref.device, ref.leaf)
    )
    assert rebuilt == topic
