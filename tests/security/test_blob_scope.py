"""The coordinator serves a device only the blobs named in commands dispatched to it."""

from __future__ import annotations

import queue

import paho.mqtt.client as mqtt

from coordinator.connect import BrokerTarget
from coordinator.dispatch import Controller, bench_command, command_blobs
from coordinator.security import DeviceKeys
from coordinator.store import Store
from protocol.bodies import AdaptSpec, BenchSpec, BlobRequest, Command
from protocol.envelope import decode, encode, make
from protocol.topics import device_topic


def test_command_blobs_finds_every_named_blob():
    bench = Command("1" * 32, "bench", 1.0, bench=BenchSpec("a" * 64, "m"))
    assert command_blobs(bench.to_dict()) == {"a" * 64}
    adapt = AdaptSpec(
        source_sha256="b" * 64, target_sha256="c" * 64, target_test_sha256="d" * 64, label="y"
    )
    assert {"b" * 64, "c" * 64, "d" * 64} <= command_blobs(
        Command("2" * 32, "adapt", 1.0, adapt=adapt).to_dict()
    )
    assert command_blobs(None) == set()


def test_a_device_gets_only_the_blobs_it_was_sent(tmp_path, mosquitto):
    shas = []
    for name in ("sent", "other"):
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(name.encode() * 100)
        shas.append(path)
    inbox: dict[str, queue.Queue] = {"dev-a": queue.Queue(), "dev-b": queue.Queue()}
    clients = []
    for dev, box in inbox.items():
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=dev, protocol=mqtt.MQTTv5)
        c.on_message = lambda cl, u, msg, box=box: box.put(msg)
        c.connect(mosquitto.host, mosquitto.port)
        c.subscribe(device_topic(dev, "blob_data"), qos=1)
        c.loop_start()
        clients.append(c)

    def ask(i: int, dev: str, sha: str):
        clients[i].publish(
            device_topic(dev, "blob_req"), encode(make(BlobRequest(sha, 0, 64), dev)), qos=1
        )
        return decode(inbox[dev].get(timeout=10).payload, expect_type="blob_data").body

    try:
        with Store(tmp_path / "store.sqlite") as store:
            sent, other = (store.put_blob_file(p) for p in shas)
            target = BrokerTarget(mosquitto.host, mosquitto.port)
            with Controller(store, target, keys=DeviceKeys(None)) as ctl:
                ctl.send("dev-a", bench_command(BenchSpec(model_sha256=sent, model_name="m")))
                assert ask(0, "dev-a", sent).error is None
                assert ask(0, "dev-a", other).error == "unknown blob"
                assert ask(1, "dev-b", sent).error == "unknown blob"
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
