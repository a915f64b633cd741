"""Ingest against a real mosquitto: every result stored exactly once, duplicates absorbed, a
broker restart survived, invalid messages counted and acked, device state recorded."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from coordinator import ingest as ingest_mod
from coordinator.ingest import Ingestor
from coordinator.registry import ONLINE, device_table
from coordinator.store import Store
from protocol import job_topic
from tests.coordinator.test_ingest_support import (
    WAIT_S,
    FakeDevice,
    ack_message,
    caps_message,
    hb_message,
    result_message,
    status_message,
    wait_until,
)

N = 200


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "store.sqlite") as s:
        yield s


@pytest.fixture
def ingestor(store, mosquitto):
    ing = Ingestor(store, mosquitto.host, mosquitto.port, name="test", batch_max=50)
    ing.start()
    assert ing.wait_ready(WAIT_S)
    yield ing
    ing.stop()


@pytest.fixture
def device(mosquitto):
    dev = FakeDevice(mosquitto.host, mosquitto.port, "rpi4-01")
    yield dev
    dev.close()


def test_results_stored_once_then_duplicates_absorbed(store, ingestor, device) -> None:
    messages = [result_message("rpi4-01", i) for i in range(N)]
    for m in messages:
        device.send(m)
    device.wait_all_acked()
    wait_until(lambda: ingestor.stats().messages == N, what=f"{N} results committed")
    assert store.count_results() == N
    st = ingestor.stats()
    assert (st.results_inserted, st.results_duplicate, st.rejected) == (N, 0, 0)

    for m in messages:  # the device's outbox resends everything, e.g. after losing its acks
        device.send(m)
    device.wait_all_acked()
    wait_until(lambda: ingestor.stats().messages == 2 * N, what="the resent results")
    assert store.count_results() == N
    st = ingestor.stats()
    assert (st.results_inserted, st.results_duplicate) == (N, N)
    assert st.acked == 2 * N and st.errors == 0
    assert {r.result_id for r in store.results()} == {m[2].body.result_id for m in messages}


def test_broker_restart_mid_run(store, ingestor, device, mosquitto) -> None:
    messages = [result_message("rpi4-01", i) for i in range(N)]
    for m in messages[: N // 2]:
        device.send(m)
    device.wait_all_acked()
    mosquitto.stop()  # graceful: mosquitto saves sessions and queued messages
    mosquitto.start()
    for m in messages[N // 2 :]:
        device.send(m)  # some while paho is still reconnecting: it resends them
    device.wait_all_acked()
    wait_until(lambda: store.count_results() == N, what=f"{N} results after the restart")
    assert ingestor.stats().connects >= 2
    assert {r.result_id for r in store.results()} == {m[2].body.result_id for m in messages}


def test_results_published_while_ingest_is_away_are_kept_for_it(store, mosquitto) -> None:
    """The persistent session: the broker queues for the stopped ingestor."""
    first = Ingestor(store, mosquitto.host, mosquitto.port, name="away")
    first.start()
    assert first.wait_ready(WAIT_S)
    first.stop()
    dev = FakeDevice(mosquitto.host, mosquitto.port, "rpi4-02")
    try:
        for i in range(N):
            dev.send(result_message("rpi4-02", i))
        dev.wait_all_acked()
    finally:
        dev.close()
    with Ingestor(store, mosquitto.host, mosquitto.port, name="away") as again:
        # Stats count a batch once it is committed and acked: wait for them, not the store.
        wait_until(lambda: again.stats().results_inserted == N, what="the queued results")
    assert store.count_results() == N


def test_invalid_messages_are_counted_acked_and_ingest_goes_on(store, ingestor, device) -> None:
    good_topic, good, env = result_message("rpi4-01", 1)
    job = env.body.job_id
    bad = [
        (good_topic, b"\x00\xffnot json"),
        (good_topic, b"{}"),
        (good_topic, b'{"schema": 99}'),
        (good_topic, good.replace(b'"status":"ok"', b'"status":"maybe"')),
        # Envelope from rpi4-01 published on another device's topic (the topic is what the
        # broker's ACL vouches for).
        (job_topic("jetson-nano", job, "result"), good),
        # The body's job does not match the topic's.
        (job_topic("rpi4-01", "other-job", "result"), good),
        # A status envelope on the result topic.
        (good_topic, status_message("rpi4-01")[1]),
    ]
    for topic, payload in bad:
        device.publish(topic, payload)
    device.send((good_topic, good, env))
    device.wait_all_acked()
    wait_until(lambda: ingestor.stats().messages == len(bad) + 1, what="all messages handled")
    st = ingestor.stats()
    assert (st.rejected, st.results_inserted, st.acked) == (len(bad), 1, len(bad) + 1)
    assert store.count_results() == 1
    by_key = {(r.device, r.leaf): r for r in store.rejects()}
    assert by_key[("rpi4-01", "result")].count == len(bad) - 1
    mismatch = by_key[("jetson-nano", "result")]
    assert mismatch.count == 1 and mismatch.last_reason.startswith("device:")
    assert "topic is 'jetson-nano'" in mismatch.last_reason


def test_a_message_our_checks_fail_on_is_rejected_and_ingest_goes_on(
    store, ingestor, device, monkeypatch
) -> None:
    # Decoding runs in paho's network thread: a bug there must not end it.
    topic, poison, _ = result_message("rpi4-01", 1)
    real_decode = ingest_mod.decode

    def decode(data, expect_type=None):
        if data == poison:
            raise RuntimeError("a bug")
        return real_decode(data, expect_type)

    monkeypatch.setattr(ingest_mod, "decode", decode)
    device.publish(topic, poison)
    device.send(result_message("rpi4-01", 2))
    device.wait_all_acked()
    wait_until(lambda: ingestor.stats().messages == 2, what="both messages handled")
    st = ingestor.stats()
    assert (st.rejected, st.results_inserted, st.acked, st.errors) == (1, 1, 2, 0)
    (reject,) = store.rejects()
    assert "failed to check it (RuntimeError)" in reject.last_reason


def test_device_state_and_acks(store, ingestor, device) -> None:
    cmd_id = uuid.uuid4().hex
    device.send(status_message("rpi4-01"), retain=True)
    device.send(caps_message("rpi4-01"), retain=True)
    device.send(hb_message("rpi4-01"))
    for state in ("accepted", "running", "done"):
        device.send(ack_message("rpi4-01", cmd_id, state, job_id="job-1"))
    device.wait_all_acked()
    wait_until(lambda: ingestor.stats().acks == 3 and ingestor.stats().hb == 1, what="state")
    (rec,) = store.devices()
    assert rec.status == "online" and rec.caps["soc"] == "BCM2711" and rec.hb_at is not None
    (job,) = store.jobs()
    assert (job.cmd_id, job.state, job.job_id, job.kind) == (cmd_id, "done", "job-1", None)
    (row,) = device_table(store.devices(), now=rec.hb_at + 1)
    assert row.health == ONLINE and row.board.startswith("Raspberry Pi")


def test_retained_status_reaches_a_new_ingestor(store, mosquitto, device) -> None:
    device.send(status_message("rpi4-01"), retain=True)
    device.send(caps_message("rpi4-01"), retain=True)
    device.wait_all_acked()
    with Ingestor(store, mosquitto.host, mosquitto.port, name="late") as ing:
        wait_until(lambda: ing.stats().caps == 1 and ing.stats().status == 1, what="retained")
    (rec,) = store.devices()
    assert rec.status == "online" and rec.caps["board"].startswith("Raspberry Pi")


def test_two_workers_share_the_result_stream(store, mosquitto, device) -> None:
    workers = [Ingestor(store, mosquitto.host, mosquitto.port, name=f"w{i}") for i in range(2)]
    for w in workers:
        w.start()
        assert w.wait_ready(WAIT_S)
    try:
        for i in range(N):
            device.send(result_message("rpi4-01", i))
        device.wait_all_acked()
        wait_until(
            lambda: sum(w.stats().results_inserted for w in workers) == N,
            what="results from both workers",
        )
        counts = [w.stats().results_inserted for w in workers]
        assert store.count_results() == N
    finally:
        for w in workers:
            w.stop()
    assert sum(counts) == N and all(counts), counts  # each result went to exactly one worker
