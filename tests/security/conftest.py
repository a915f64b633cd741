"""A real production broker for the security tests: `halo-coord broker secure`, `device add` and
`broker start` run through the CLI on a free 127.0.0.1 port; clients connect over TLS with the
generated CA, as boards do."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from coordinator.broker import ManagedBroker
from coordinator.cli import cli
from tests.mqtt_broker import free_port

WAIT_S = 30.0


def wait_for(predicate, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@dataclass
class Probe:
    """A paho MQTT 5 client that records what the broker answers."""

    client: mqtt.Client
    connack: list = field(default_factory=list)
    subacks: list = field(default_factory=list)
    pubacks: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    disconnects: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def topics(self) -> list[str]:
        with self.lock:
            return [m.topic for m in self.messages]

    def subscribe(self, topic: str) -> list[str]:
        before = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        wait_for(lambda: len(self.subacks) > before, f"SUBACK for {topic}")
        return self.subacks[before]

    def publish(self, topic: str, payload: bytes) -> str:
        """QoS 1; the PUBACK's reason code as text."""
        info = self.client.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self.pubacks, f"PUBACK for {topic}")
        return self.pubacks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class SecureBroker:
    state_dir: Path  # what `--state-dir` gets; the broker lives in its broker/ subdirectory
    port: int  # for devices: client id = username
    local_port: int  # the coordinator's loopback listener
    ca_file: str
    probes: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def add_device(self, name: str) -> dict:
        return json.loads(
            run_cli(
                "device",
                "add",
                name,
                "--url",
                self.url,
                "--state-dir",
                str(self.state_dir),
                "--json",
            )
        )

    def connect(
        self,
        username: str | None,
        password: str | None,
        client_id: str | None = None,
        ca_file: str | None = None,
        tls: bool = True,
        wait: bool = True,
        session_expiry_s: int | None = None,
        port: int | None = None,
    ) -> Probe:
        """Connect and (with `wait`) wait for the CONNACK; probe.connack[0] is its reason code
        as text. A failed TLS handshake raises from here."""
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{len(self.probes)}",
            protocol=mqtt.MQTTv5,
        )
        probe = Probe(client)
        if tls:
            client.tls_set(ca_certs=ca_file or self.ca_file)
        if username is not None:
            client.username_pw_set(username, password)
        client.on_connect = lambda c, u, f, rc, p: probe.connack.append(str(rc))
        client.on_subscribe = lambda c, u, mid, rcs, p: probe.subacks.append([str(r) for r in rcs])
        client.on_publish = lambda c, u, mid, rc, p: probe.pubacks.__setitem__(mid, str(rc))
        client.on_disconnect = lambda c, u, f, rc, p: probe.disconnects.append(str(rc))

        def on_message(c, u, msg):
            with probe.lock:
                probe.messages.append(msg)

        client.on_message = on_message
        self.probes.append(probe)
        props = None
        if session_expiry_s is not None:  # a persistent session
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry_s
        # Raises for a failed TLS handshake.
        client.connect("127.0.0.1", port or self.port, clean_start=props is None, properties=props)
        client.loop_start()
        if wait:
            wait_for(lambda: probe.connack, "CONNACK")
        return probe

    def coordinator(self) -> Probe:
        creds = json.loads((self.state_dir / "broker/secure/coordinator.json").read_text())
        probe = self.connect(
            creds["username"], creds["password"], client_id="coordinator", port=self.local_port
        )
        assert probe.connack == ["Success"]
        return probe


@pytest.fixture
def secure_broker(tmp_path):
    state = tmp_path / "halofarm"
    port, local_port = free_port(), free_port()
    setup = json.loads(run_cli("broker", "secure", "--state-dir", str(state), "--json"))
    run_cli(
        "broker", "start", "--host", "127.0.0.1", "--port", str(port),
        "--local-port", str(local_port), "--state-dir", str(state),
    )  # fmt: skip
    broker = SecureBroker(state, port, local_port, setup["ca_file"])
    try:
        yield broker
    finally:
        for probe in broker.probes:
            probe.close()
        ManagedBroker(state / "broker").stop()
