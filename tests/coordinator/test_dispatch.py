"""The control plane: commands recorded then published, model blobs served in verified chunks."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import queue
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from coordinator.connect import BrokerTarget, parse_broker_url
from coordinator.dispatch import Controller, bench_command, blob_answer
from coordinator.errors import UserError
from coordinator.store import Store
from protocol.auth import Expired, sign, verify
from protocol.bodies import CHUNK_MAX, BenchSpec, BlobRequest, Command
from protocol.envelope import decode, encode, make
from protocol.topics import device_topic
from tests.coordinator.test_ingest_support import hb_message

DEVICE = "board-1"


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store.sqlite") as s:
        yield s


@pytest.fixture
def model(tmp_path):
    # Not a multiple of the chunk size, so the last chunk is short.
    data = bytes(range(256)) * (CHUNK_MAX // 256 * 2 + 3)
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1", BrokerTarget("127.0.0.1", 1883)),
        ("mqtts://broker.lab:9999", BrokerTarget("broker.lab", 9999, tls=True)),
        ("mqtt://u%40x:p%3Aw@127.0.0.1:1884", BrokerTarget("127.0.0.1", 1884, False, "u@x", "p:w")),
    ],
)
def test_broker_urls(url, expected):
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize("url", ["http://127.0.0.1", "mqtt://", "mqtt://127.0.0.1:99999", "x"])
def test_bad_broker_urls_say_what_is_expected(url):
    with pytest.raises(UserError, match="broker URL"):
        parse_broker_url(url)


def test_blob_answers_cover_the_file_and_its_errors(store, model):
    path, data = model
    sha = store.put_blob_file(path)
    got, offset = b"", 0
    while True:
        chunk = blob_answer(store, BlobRequest(sha, offset, CHUNK_MAX))
        assert chunk.error is None and chunk.total == len(data)
        piece = base64.b64decode(chunk.data)
        if not piece:
            break
        got += piece
        offset += len(piece)
    assert got == data
    unknown = blob_answer(store, BlobRequest("0" * 64, 0, 10))
    assert unknown.error == "unknown blob" and unknown.data == ""
    beyond = blob_answer(store, BlobRequest(sha, len(data) + 1, 10))
    assert "beyond" in beyond.error


def test_controller_records_then_publishes_and_serves_blobs(store, model, mosquitto):
    """A test client plays the device: it receives the command and fetches the model."""
    path, data = model
    sha = store.put_blob_file(path)
    inbox: queue.Queue = queue.Queue()
    dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dev", protocol=mqtt.MQTTv5)
    dev.on_message = lambda c, u, msg: inbox.put(msg)
    dev.connect(mosquitto.host, mosquitto.port)
    dev.subscribe(device_topic(DEVICE, "cmd"), qos=1)
    dev.subscribe(device_topic(DEVICE, "blob_data"), qos=1)
    dev.loop_start()
    try:
        target = BrokerTarget(mosquitto.host, mosquitto.port)
        with Controller(store, target) as ctl:
            command = bench_command(BenchSpec(model_sha256=sha, model_name="m.tflite"))
            ctl.send(DEVICE, command)
            assert [j.cmd_id for j in store.jobs(device=DEVICE)] == [command.cmd_id]
            env = decode(inbox.get(timeout=10).payload, expect_type="cmd")
            assert env.body == command and env.device == DEVICE

            got = b""
            while len(got) < len(data):
                req = make(BlobRequest(sha, len(got), CHUNK_MAX), DEVICE)
                dev.publish(device_topic(DEVICE, "blob_req"), encode(req), qos=1)
                chunk = decode(inbox.get(timeout=10).payload, expect_type="blob_data").body
                assert chunk.error is None and chunk.offset == len(got)
                got += base64.b64decode(chunk.data)
            assert hashlib.sha256(got).hexdigest() == sha

            # garbage on the request topic is ignored and the controller keeps serving
            dev.publish(device_topic(DEVICE, "blob_req"), b"\xff not json", qos=1)
            req = make(BlobRequest("1" * 64, 0, 16), DEVICE)
            dev.publish(device_topic(DEVICE, "blob_req"), encode(req), qos=1)
            chunk = decode(inbox.get(timeout=10).payload, expect_type="blob_data").body
            assert chunk.error == "unknown blob"
            assert ctl.bad_requests == 1
    finally:
        dev.loop_stop()
        dev.disconnect()


def test_controller_says_when_the_broker_is_unreachable(store):
    from tests.mqtt_broker import free_port

    with pytest.raises(UserError, match="cannot reach the broker"):
        Controller(store, BrokerTarget("127.0.0.1", free_port())).start(timeout=1.0)


def test_commands_expire_in_the_time_of_a_board_whose_clock_is_off(store, mosquitto):
    """A board an hour ahead (its heartbeats say so): a command meant to live 10 minutes must
    not be dead on arrival there, nor, once the board's clock is fixed, live an hour longer."""
    now = time.time()
    store.record_hb(dataclasses.replace(hb_message(DEVICE)[2], created_at=now + 3600), at=now)
    inbox: queue.Queue = queue.Queue()
    dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dev", protocol=mqtt.MQTTv5)
    dev.on_message = lambda c, u, msg: inbox.put(msg)
    dev.connect(mosquitto.host, mosquitto.port)
    dev.subscribe(device_topic(DEVICE, "cmd"), qos=1)
    dev.loop_start()
    key = b"k" * 32
    try:
        with Controller(store, BrokerTarget(mosquitto.host, mosquitto.port)) as ctl:
            ping = Command(uuid.uuid4().hex, "ping", expires_at=time.time() + 600)
            ctl.send(DEVICE, ping)
            msg = inbox.get(timeout=10)
            wire = decode(msg.payload, expect_type="cmd").body
            assert wire.expires_at == pytest.approx(ping.expires_at + 3600, abs=1)
            # The broker's expiry stays in real time.
            assert 590 <= msg.properties.MessageExpiryInterval <= 600
            # What the store keeps for the campaign logic is in this coordinator's time.
            (job,) = store.jobs(device=DEVICE)
            assert job.cmd_id == ping.cmd_id

            board_now = time.time() + 3600
            verify(key, DEVICE, sign(key, DEVICE, wire), now=board_now)
            with pytest.raises(Expired):  # as it was sent before
                verify(key, DEVICE, sign(key, DEVICE, ping), now=board_now)

            # Fixed by NTP: the next heartbeat says so, and expiry is sent as it is.
            store.record_hb(hb_message(DEVICE)[2], at=time.time())
            ctl.send(DEVICE, ping)
            wire = decode(inbox.get(timeout=10).payload, expect_type="cmd").body
            assert wire.expires_at == ping.expires_at
    finally:
        dev.loop_stop()
        dev.disconnect()
