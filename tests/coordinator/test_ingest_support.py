"""Shared by the store and ingest tests (no tests here): realistic messages built with
protocol.bodies, a paho publisher playing a device, and a polling wait."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol import (
    Ack,
    BenchResult,
    BenchSpec,
    BenchStats,
    Caps,
    Envelope,
    Heartbeat,
    Status,
    device_topic,
    encode,
    job_topic,
    make,
    pack_ns,
)

WAIT_S = 60.0  # an upper bound for things that take milliseconds, not a timing assertion
MODEL_SHA = "ab" * 32
ENV = {
    "governor": "performance",
    "cpu_freq_khz": {"cpu0": 1800000, "cpu1": 1800000, "cpu2": 1800000, "cpu3": 1800000},
    "temps_c": {"cpu-thermal": 51.2},
    "throttled": False,
}


def wait_until(cond: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def bench_result(
    i: int = 0,
    *,
    job_id: str | None = None,
    cmd_id: str | None = None,
    model_sha256: str = MODEL_SHA,
    model_name: str | None = None,
    status: str = "ok",
    runs: int = 80,
) -> BenchResult:
    """A BenchResult as the agent sends it: stats computed from a seeded raw_ns array."""
    rng = random.Random(i)
    raw = sorted(int(2_000_000 + rng.gauss(0, 50_000)) for _ in range(runs))
    mean = sum(raw) / runs
    std = (sum((x - mean) ** 2 for x in raw) / runs) ** 0.5

    def q(p: float) -> float:
        return float(raw[min(runs - 1, int(p * runs))])

    ok = status == "ok"
    stats = BenchStats(runs, raw[0], q(0.05), q(0.5), q(0.9), q(0.95), q(0.99), raw[-1], mean, std,
                       std / mean)  # fmt: skip
    now = time.time()
    return BenchResult(
        result_id=uuid.uuid4().hex,
        job_id=job_id or uuid.uuid4().hex,
        cmd_id=cmd_id or uuid.uuid4().hex,
        status=status,
        reason=None if ok else "model crashed the interpreter (SIGSEGV)",
        spec=BenchSpec(
            model_sha256=model_sha256, model_name=model_name or f"nb201-{i:05d}", threads=4
        ),
        model_bytes=1_590_000,
        runtime="ai-edge-litert",
        runtime_version="2.3.0",
        init_ns=12_000_000 if ok else None,
        first_ns=3_000_000 if ok else None,
        warmup_count=5 if ok else 0,
        warmup_mean_ns=2_100_000.0 if ok else None,
        stats=stats if ok else None,
        raw_ns=pack_ns(raw) if ok else None,
        env_pre=dict(ENV),
        env_post=dict(ENV),
        ops={"CONV_2D": 20, "ADD": 10, "AVERAGE_POOL_2D": 2, "FULLY_CONNECTED": 1},
        delegated=True,
        peak_rss_bytes=120_000_000,
        started_at=now - 3.0,
        finished_at=now,
    )


def result_message(device: str, i: int = 0, **kw) -> tuple[str, bytes, Envelope]:
    """(topic, payload, envelope) of one result from device."""
    env = make(bench_result(i, **kw), device)
    return job_topic(device, env.body.job_id, "result"), encode(env), env


def status_message(device: str, state: str = "online") -> tuple[str, bytes, Envelope]:
    env = make(Status(state=state, agent_version="0.1.0", started_at=time.time()), device)
    return device_topic(device, "status"), encode(env), env


def caps_message(device: str) -> tuple[str, bytes, Envelope]:
    body = Caps(
        agent_version="0.1.0",
        board="Raspberry Pi 4 Model B Rev 1.4",
        soc="BCM2711",
        machine="aarch64",
        cores=4,
        ram_bytes=4 * 2**30,
        os="Debian GNU/Linux 12 (bookworm)",
        kernel="6.1.0-rpi7-rpi-v8",
        python="3.11.2",
        runtime="tflite-runtime",
        runtime_version="2.14.0",
        numpy="1.24.4",
        xnnpack=True,
        power_sources=["ina3221-hwmon"],
        tags=["shelf-a"],
    )
    env = make(body, device)
    return device_topic(device, "caps"), encode(env), env


def hb_message(device: str, running_job: str | None = None) -> tuple[str, bytes, Envelope]:
    body = Heartbeat(
        uptime_s=1234.5,
        load=[0.5, 0.4, 0.3],
        temps_c={"cpu-thermal": 51.2, "gpu-thermal": 49.0},
        cpu_freq_khz={"cpu0": 1800000},
        throttled=False,
        outbox_depth=0,
        queue_depth=2,
        running_job=running_job,
        agent_version="0.1.0",
    )
    env = make(body, device)
    return device_topic(device, "hb"), encode(env), env


def ack_message(
    device: str, cmd_id: str, state: str, job_id: str | None = None
) -> tuple[str, bytes, Envelope]:
    env = make(Ack(cmd_id=cmd_id, state=state, job_id=job_id), device)
    return device_topic(device, "ack"), encode(env), env


class FakeDevice:
    """A paho MQTT 5 client publishing like an agent's outbox: QoS 1, a bounded window of
    un-acked messages, a persistent session (paho resends in-flight messages after a broker
    restart), and a message the broker acked with reason "No matching subscribers" (16) is
    sent again later -- nobody got it, e.g. mosquitto 2.0 forgets shared subscriptions over a
    restart until the ingest worker re-subscribes."""

    NO_MATCHING_SUBSCRIBERS = 16

    def __init__(self, host: str, port: int, name: str = "rpi4-01", window: int = 2000) -> None:
        self.name = name
        self.window = window
        self.resent = 0
        self._cond = threading.Condition()
        self._inflight: dict[int, tuple[str, bytes, int, bool]] = {}
        self._pubacks: list[tuple[int, int]] = []  # (mid, reason), possibly before _inflight
        self._retry: list[tuple[str, bytes, int, bool]] = []
        self._connected = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{name}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda *a: self._connected.set()
        self.client.on_disconnect = lambda *a: self._connected.clear()
        self.client.on_publish = self._on_publish
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect_async(host, port, keepalive=10, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._connected.wait(WAIT_S):
            raise AssertionError(f"fake device {name} could not connect to {host}:{port}")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # Only record: publish() may not have returned this mid yet (paho #226), and our lock
        # is never held around paho calls, so taking it here cannot deadlock.
        with self._cond:
            self._pubacks.append((mid, reason_code.value))
            self._cond.notify_all()

    def _settle(self) -> None:
        """Match pubacks to messages (caller holds the lock)."""
        early = []
        for mid, reason in self._pubacks:
            msg = self._inflight.pop(mid, None)
            if msg is None:
                early.append((mid, reason))
            elif reason == self.NO_MATCHING_SUBSCRIBERS and not msg[3]:
                self._retry.append(msg)  # a retained message is kept by the broker anyway
        self._pubacks = early

    def _outstanding(self) -> int:
        self._settle()
        return len(self._inflight) + len(self._retry)

    def _send(self, msg: tuple[str, bytes, int, bool]) -> None:
        topic, payload, qos, retain = msg
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        # While the broker is away paho keeps QoS 1 messages and sends them after reconnecting.
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise AssertionError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        with self._cond:
            self._inflight[info.mid] = msg
            self._settle()

    def _resend_refused(self) -> None:
        with self._cond:
            retry, self._retry = self._retry, []
        for msg in retry:
            self.resent += 1
            self._send(msg)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        deadline = time.monotonic() + WAIT_S
        while True:
            with self._cond:
                if self._outstanding() < self.window:
                    break
                self._cond.wait(0.05)
            if time.monotonic() > deadline:
                raise AssertionError("publish window never drained")
            self._resend_refused()
        self._send((topic, payload, qos, retain))

    def send(self, message: tuple[str, bytes, Envelope], retain: bool = False) -> None:
        topic, payload, env = message
        qos = 0 if env.type == "hb" else 1
        self.publish(topic, payload, qos=qos, retain=retain)

    def wait_all_acked(self, timeout: float = WAIT_S) -> None:
        """Until the broker took every message for a subscriber (refused ones resent)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if self._outstanding() == 0:
                    return
                self._cond.wait(0.1)
            if time.monotonic() > deadline:
                raise AssertionError(f"{self._outstanding()} publishes never acked")
            time.sleep(0.1)  # a refused message waits a little for a subscriber to come back
            self._resend_refused()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
