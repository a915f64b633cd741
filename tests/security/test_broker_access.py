"""The production broker against a real mosquitto: who may connect, publish and read what."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import ssl
import stat
import subprocess
import time

import pytest

from coordinator.broker import mqtt_ready
from coordinator.security import hash_password, render_acl
from coordinator.tlsgen import make_ca

from .conftest import wait_for

QUIET_S = 1.0  # how long "nothing arrives" is watched, after a control message did arrive


def test_mosquitto_accepts_our_password_hashes(tmp_path):
    """Our $7$ lines are what mosquitto_passwd writes (same salt -> same line)."""
    binary = shutil.which("mosquitto_passwd", path=os.environ["PATH"] + ":/usr/bin:/usr/sbin")
    if binary is None:
        pytest.fail("mosquitto_passwd not found: install the mosquitto package")
    path = tmp_path / "passwd"
    subprocess.run([binary, "-c", "-b", str(path), "alice", "s3cret:x"], check=True)
    _, line = path.read_text().strip().split(":", 1)
    salt = base64.b64decode(line.split("$")[3])
    assert hash_password("s3cret:x", salt) == line


def test_secrets_are_private_and_acl_has_no_device_wildcards(secure_broker):
    secure = secure_broker.state_dir / "broker/secure"
    secure_broker.add_device("pi-01")
    for name in ("ca.key", "server.key", "passwd", "coordinator.json", "devices.json"):
        assert stat.S_IMODE((secure / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(secure.stat().st_mode) == 0o700
    acl = render_acl()
    assert "pattern read halo/v1/dev/%u/cmd" in acl and "pattern write halo/v1/dev/%u/ack" in acl
    assert "halo/v1/dev/+" not in acl and "pattern readwrite" not in acl


def test_good_credentials_connect_wrong_password_and_anonymous_refused(secure_broker):
    dev = secure_broker.add_device("pi-01")
    assert secure_broker.connect("pi-01", dev["password"], "pi-01").connack == ["Success"]
    assert secure_broker.connect("pi-01", "wrong", "pi-01x").connack == ["Not authorized"]
    assert secure_broker.connect("nobody", dev["password"]).connack == ["Not authorized"]
    assert secure_broker.connect(None, None).connack == ["Not authorized"]


def test_removed_device_is_refused_at_once(secure_broker):
    dev = secure_broker.add_device("pi-01")
    from .conftest import run_cli

    run_cli("device", "remove", "pi-01", "--state-dir", str(secure_broker.state_dir))
    time.sleep(0.3)  # mosquitto handles the SIGHUP in its main loop
    assert secure_broker.connect("pi-01", dev["password"]).connack == ["Not authorized"]


def test_plain_tcp_refused(secure_broker):
    """An MQTT CONNECT in clear text gets no CONNACK; the same port speaks TLS."""
    assert not mqtt_ready("127.0.0.1", secure_broker.port)
    assert mqtt_ready("127.0.0.1", secure_broker.port, cafile=secure_broker.ca_file)
    creds = secure_broker.add_device("pi-01")
    probe = secure_broker.connect("pi-01", creds["password"], tls=False, wait=False)
    wait_for(lambda: probe.disconnects, "the broker to drop the plain-TCP client")
    assert probe.connack == []


def test_broker_certificate_is_verified(secure_broker, tmp_path):
    """A board trusting another CA refuses the broker (as if a stranger ran it)."""
    dev = secure_broker.add_device("pi-01")
    other = tmp_path / "other-ca.pem"
    other.write_bytes(make_ca("someone else").cert)
    with pytest.raises(ssl.SSLCertVerificationError):
        secure_broker.connect("pi-01", dev["password"], ca_file=str(other))


def test_certificate_names_are_checked(secure_broker):
    """The certificate names localhost and 127.0.0.1, not other names for the same host."""
    ctx = ssl.create_default_context(cafile=secure_broker.ca_file)
    for name in ("localhost", "127.0.0.1"):
        with socket.create_connection(("127.0.0.1", secure_broker.port)) as raw:
            ctx.wrap_socket(raw, server_hostname=name).close()
    with socket.create_connection(("127.0.0.1", secure_broker.port)) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch|doesn't match"):
            ctx.wrap_socket(raw, server_hostname="evil.example")


def test_device_cannot_publish_as_another_device(secure_broker):
    a = secure_broker.add_device("dev-a")
    secure_broker.add_device("dev-b")
    coord = secure_broker.coordinator()
    assert coord.subscribe("halo/v1/#") == ["Granted QoS 1"]
    dev_a = secure_broker.connect("dev-a", a["password"], "dev-a")

    forged = {
        "halo/v1/dev/dev-b/job/j1/result": b"forged result",
        "halo/v1/dev/dev-b/ack": b"forged ack",
        "halo/v1/dev/dev-b/status": b"forged status",
        "halo/v1/dev/dev-b/cmd": b"forged command",
        "halo/v1/dev/dev-a/cmd": b"command to itself",
        "halo/v1/dev/dev-a/blob/data": b"model chunk to itself",
        "halo/v1/other": b"outside the device tree",
    }
    for topic, payload in forged.items():
        assert dev_a.publish(topic, payload) == "Not authorized", topic
    # Control: its own result topic works, so the subscriber would have seen the others.
    assert dev_a.publish("halo/v1/dev/dev-a/job/j1/result", b"own result") == "Success"
    wait_for(lambda: "halo/v1/dev/dev-a/job/j1/result" in coord.topics(), "the own result")
    time.sleep(QUIET_S)
    assert not set(forged) & set(coord.topics())


def test_device_cannot_read_another_devices_commands_or_blobs(secure_broker):
    a = secure_broker.add_device("dev-a")
    b = secure_broker.add_device("dev-b")
    coord = secure_broker.coordinator()
    dev_a = secure_broker.connect("dev-a", a["password"], "dev-a")
    dev_b = secure_broker.connect("dev-b", b["password"], "dev-b")
    # mosquitto 2.0 grants the SUBACK and then delivers only what the ACL lets the user read.
    for topic in ("halo/v1/dev/dev-b/cmd", "halo/v1/dev/+/cmd", "halo/v1/dev/dev-b/blob/data"):
        dev_a.subscribe(topic)
    dev_a.subscribe("halo/v1/#")
    dev_b.subscribe("halo/v1/dev/dev-b/cmd")
    dev_b.subscribe("halo/v1/dev/dev-b/blob/data")

    coord.publish("halo/v1/dev/dev-b/cmd", b"for b")
    coord.publish("halo/v1/dev/dev-b/blob/data", b"b's model")
    coord.publish("halo/v1/dev/dev-a/cmd", b"for a")
    wait_for(lambda: len(dev_b.topics()) == 2, "dev-b's command and chunk")
    wait_for(lambda: "halo/v1/dev/dev-a/cmd" in dev_a.topics(), "dev-a's own command")
    time.sleep(QUIET_S)
    assert set(dev_a.topics()) == {"halo/v1/dev/dev-a/cmd"}
    # Nor another device's results.
    dev_b.publish("halo/v1/dev/dev-b/job/j1/result", b"b's result")
    time.sleep(QUIET_S)
    assert set(dev_a.topics()) == {"halo/v1/dev/dev-a/cmd"}


def test_coordinator_gets_shared_subscriptions(secure_broker):
    """Ingest and blob serving use $share groups; the ACL must let the coordinator have them."""
    a = secure_broker.add_device("dev-a")
    coord = secure_broker.coordinator()
    assert coord.subscribe("$share/ingest/halo/v1/dev/+/job/+/result") == ["Granted QoS 1"]
    dev_a = secure_broker.connect("dev-a", a["password"], "dev-a")
    assert dev_a.publish("halo/v1/dev/dev-a/job/j1/result", b"r") == "Success"
    wait_for(lambda: coord.topics() == ["halo/v1/dev/dev-a/job/j1/result"], "a shared delivery")


def test_a_device_cannot_take_over_another_devices_session(secure_broker):
    """On the devices' listener the client id is the username: connecting with another
    device's client id neither reads its queued commands nor ends its session."""
    a = secure_broker.add_device("dev-a")
    b = secure_broker.add_device("dev-b")
    coord = secure_broker.coordinator()
    dev_b = secure_broker.connect("dev-b", b["password"], "dev-b", session_expiry_s=3600)
    dev_b.subscribe("halo/v1/dev/dev-b/cmd")
    dev_b.close()
    assert coord.publish("halo/v1/dev/dev-b/cmd", b"queued for b") == "Success"
    thief = secure_broker.connect("dev-a", a["password"], "dev-b", session_expiry_s=3600)
    assert thief.connack == ["Success"]
    thief.subscribe("halo/v1/dev/dev-a/cmd")
    coord.publish("halo/v1/dev/dev-a/cmd", b"for a")
    wait_for(lambda: thief.topics() == ["halo/v1/dev/dev-a/cmd"], "dev-a's own command")
    # dev-b comes back to its session and gets what was queued for it.
    dev_b = secure_broker.connect("dev-b", b["password"], "dev-b", session_expiry_s=3600)
    wait_for(lambda: "halo/v1/dev/dev-b/cmd" in dev_b.topics(), "dev-b's queued command")
    assert [m.payload for m in dev_b.messages] == [b"queued for b"]


def test_the_coordinator_listener_is_loopback_only(secure_broker):
    lines = (secure_broker.state_dir / "broker/mosquitto.conf").read_text().splitlines()
    main = lines.index(f"listener {secure_broker.port} 127.0.0.1")
    local = lines.index(f"listener {secure_broker.local_port} 127.0.0.1")
    assert "use_username_as_clientid true" in lines[main:local]
    assert "use_username_as_clientid true" not in lines[local:]
    assert any(line.startswith("certfile ") for line in lines[local:])
