"""The managed broker against a real mosquitto on 127.0.0.1: config text, the test fixture
(publish/subscribe, persistent sessions across a restart) and ManagedBroker's lifecycle."""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from coordinator.broker import (
    MESSAGE_SIZE_LIMIT,
    BrokerConfig,
    BrokerError,
    ManagedBroker,
    find_mosquitto,
    is_loopback,
    render_config,
)
from tests.mqtt_broker import (
    AUTOSAVE_INTERVAL,
    MAX_INFLIGHT_MESSAGES,
    MAX_QUEUED_MESSAGES,
    free_port,
    mqtt_ready,
    render_test_config,
)

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 30  # an upper bound for things that take milliseconds, not a timing assertion


class Client:
    """A paho v5 client that records what it receives and whether its session was present."""

    def __init__(
        self,
        client_id: str,
        host: str,
        port: int,
        clean_start: bool,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.session_present: bool | None = None
        self.reason_code: mqtt.ReasonCode | None = None
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self._got = threading.Condition(self._lock)
        self.mqtt = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_subscribe = lambda *a: self._subscribed.set()
        self.mqtt.on_message = self._on_message
        if credentials:
            self.mqtt.username_pw_set(*credentials)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.mqtt.connect(host, port, keepalive=30, clean_start=clean_start, properties=props)
        self.mqtt.loop_start()
        assert self._connected.wait(WAIT_S), f"{client_id} did not connect"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.session_present = flags.session_present
        self.reason_code = reason_code
        self._connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        with self._got:
            self.messages.append(msg)
            self._got.notify_all()

    def subscribe(self, topic: str) -> None:
        self.mqtt.subscribe(topic, qos=1)
        assert self._subscribed.wait(WAIT_S), f"no SUBACK for {topic}"

    def wait_for(self, count: int) -> list[bytes]:
        with self._got:
            self._got.wait_for(lambda: len(self.messages) >= count, WAIT_S)
            return [m.payload for m in self.messages]

    def publish_all(self, topic: str, payloads: list[bytes]) -> None:
        infos = [self.mqtt.publish(topic, p, qos=1) for p in payloads]
        for info in infos:
            assert info.rc == mqtt.MQTT_ERR_SUCCESS
            info.wait_for_publish(WAIT_S)
            assert info.is_published()

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


# --- config ------------------------------------------------------------------------------------


def test_render_config_defaults_are_loopback_persistent_and_anonymous(tmp_path):
    text = render_config(BrokerConfig(state_dir=tmp_path))
    lines = text.splitlines()
    assert text.endswith("\n")
    assert "listener 1883 127.0.0.1" in lines
    assert "allow_anonymous true" in lines
    assert not any(line.startswith("password_file") for line in lines)
    assert "persistence true" in lines
    assert f"persistence_location {tmp_path}/" in lines
    assert "persistence_file mosquitto.db" in lines
    assert "autosave_interval 10" in lines
    assert "autosave_on_changes false" in lines
    assert "max_queued_messages 100000" in lines
    assert "max_inflight_messages 100" in lines
    assert f"message_size_limit {MESSAGE_SIZE_LIMIT}" in lines
    assert MESSAGE_SIZE_LIMIT > 256 * 1024
    assert f"log_dest file {tmp_path / 'mosquitto.log'}" in lines
    assert not any(line.startswith("user ") for line in lines)
    # One listener only: mosquitto must not also open its default 0.0.0.0:1883.
    assert sum(line.startswith("listener") for line in lines) == 1


def test_render_config_password_file_turns_anonymous_off(tmp_path):
    cfg = BrokerConfig(
        state_dir=tmp_path,
        host="0.0.0.0",
        port=8883,
        persistence=False,
        password_file=tmp_path / "passwd",
        user="halo",
    )
    lines = render_config(cfg).splitlines()
    assert "listener 8883 0.0.0.0" in lines
    assert "allow_anonymous false" in lines
    assert f"password_file {tmp_path / 'passwd'}" in lines
    assert "persistence false" in lines
    assert not any(line.startswith(("persistence_", "autosave")) for line in lines)
    assert "user halo" in lines


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"port": 0}, "port must be in 1..65535"),
        ({"port": 70000}, "port must be in 1..65535"),
        ({"host": "127.0.0.1\nallow_anonymous true"}, "host must be a non-empty single line"),
        ({"host": ""}, "host must be a non-empty single line"),
        ({"password_file": Path("a\nb")}, "password_file must be"),
    ],
)
def test_render_config_rejects_values_that_would_inject_lines(tmp_path, changes, fragment):
    with pytest.raises(BrokerError, match=fragment):
        render_config(BrokerConfig(state_dir=tmp_path, **changes))


def test_plugin_fallback_config_is_the_production_config(tmp_path):
    # The fixture writes render_test_config on Python 3.8; it must be what production writes.
    production = render_config(
        BrokerConfig(
            state_dir=tmp_path,
            port=12345,
            max_queued_messages=MAX_QUEUED_MESSAGES,
            max_inflight_messages=MAX_INFLIGHT_MESSAGES,
            autosave_interval=AUTOSAVE_INTERVAL,
            user="someone",
        )
    )
    assert render_test_config(12345, tmp_path, "someone") == production


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("coordinator.lan", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_state_dir_with_spaces_works(tmp_path):
    # macOS puts user state under "Application Support".
    managed = ManagedBroker(tmp_path / "Application Support" / "halofarm" / "broker")
    try:
        st = managed.start(BrokerConfig(state_dir=managed.state_dir, port=free_port()))
        assert st.running
        managed.stop()
        assert (managed.state_dir / "mosquitto.db").is_file()
    finally:
        managed.stop()


# --- the fixture: real pub/sub and persistence ---------------------------------------------------


def test_fixture_broker_carries_qos1_from_publisher_to_subscriber(mosquitto):
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"
    sub = Client("sub", mosquitto.host, mosquitto.port, clean_start=True)
    pub = Client("pub", mosquitto.host, mosquitto.port, clean_start=True)
    try:
        sub.subscribe("halo/v1/dev/+/hb")
        pub.publish_all("halo/v1/dev/pi-1/hb", [b"one", b"two"])
        assert sub.wait_for(2) == [b"one", b"two"]
        assert all(m.qos == 1 and m.topic == "halo/v1/dev/pi-1/hb" for m in sub.messages)
    finally:
        sub.close()
        pub.close()
    assert "New client connected" in mosquitto.log_text()


def test_persistent_session_and_queued_messages_survive_broker_restart(mosquitto):
    topic = "halo/v1/dev/pi-1/job/j1/result"
    # clean_start=False from the very first connect: mosquitto 2.0.11 writes a session to its
    # database only if its CONNECT had clean_start=0, so paho's default (clean on the first
    # connect only) leaves the session in RAM until the next reconnect; a restart loses it.
    sub = Client("ingest-1", mosquitto.host, mosquitto.port, clean_start=False)
    sub.subscribe("halo/v1/dev/+/job/+/result")
    sub.close()

    pub = Client("pi-1", mosquitto.host, mosquitto.port, clean_start=True)
    payloads = [f"result {i}".encode() for i in range(200)]
    pub.publish_all(topic, payloads)
    pub.close()

    mosquitto.stop()
    assert not mqtt_ready(mosquitto.host, mosquitto.port)
    mosquitto.start()

    sub = Client("ingest-1", mosquitto.host, mosquitto.port, clean_start=False)
    try:
        assert sub.session_present is True
        assert sub.wait_for(200) == payloads
    finally:
        sub.close()
    assert "Saving in-memory database" in mosquitto.log_text()


def test_fixture_kill_and_start_again_on_the_same_port(mosquitto):
    port, pid = mosquitto.port, mosquitto.pid
    mosquitto.kill()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    mosquitto.start()
    assert mosquitto.port == port and mqtt_ready(mosquitto.host, port)


# --- ManagedBroker -----------------------------------------------------------------------------


@pytest.fixture
def managed(tmp_path):
    """A ManagedBroker in a temporary state dir, stopped at teardown whatever happened."""
    broker = ManagedBroker(tmp_path / "broker")
    yield broker
    broker.stop()


def test_managed_broker_start_status_stop(managed):
    port = free_port()
    st = managed.start(BrokerConfig(state_dir=managed.state_dir, port=port))
    assert st.running and not st.already_running
    assert (st.host, st.port, st.url) == ("127.0.0.1", port, f"mqtt://127.0.0.1:{port}")
    assert st.version.startswith("mosquitto version 2.")
    assert st.uptime_s >= 0
    assert managed.pid_path.read_text().strip() == str(st.pid)
    assert mqtt_ready("127.0.0.1", port)
    # Detached: its own session, so a Ctrl-C in the starting terminal does not reach it.
    assert os.getsid(st.pid) == st.pid
    assert f"user {getpass.getuser()}" in managed.config_path.read_text().splitlines()

    again = managed.start(BrokerConfig(state_dir=managed.state_dir, port=free_port()))
    assert again.already_running and again.pid == st.pid and again.port == port

    before, killed = managed.stop()
    assert before.pid == st.pid and not killed
    assert not psutil.pid_exists(st.pid)
    assert not managed.pid_path.exists()
    assert not mqtt_ready("127.0.0.1", port)
    assert managed.status().running is False
    assert "Saving in-memory database" in managed.log_path.read_text()


def test_stop_kills_a_broker_that_does_not_exit_on_sigterm(managed):
    st = managed.start(BrokerConfig(state_dir=managed.state_dir, port=free_port()))
    os.kill(st.pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM; SIGKILL still works
    before, killed = managed.stop(timeout=0.5)
    assert before.pid == st.pid and killed
    assert not psutil.pid_exists(st.pid)
    assert not managed.pid_path.exists()


def test_status_on_stale_pidfile_reports_not_running_and_removes_it(managed):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    managed.state_dir.mkdir(parents=True)
    managed.pid_path.write_text(f"{dead.pid}\n")
    st = managed.status()
    assert not st.running and st.stale_pid == dead.pid and st.pid is None
    assert not managed.pid_path.exists()


def test_pidfile_of_an_unrelated_live_process_is_stale(managed):
    # A pid reused by another process (here: this test) must never be signalled by stop().
    managed.state_dir.mkdir(parents=True)
    managed.pid_path.write_text(f"{os.getpid()}\n")
    before, killed = managed.stop()
    assert not before.running and before.stale_pid == os.getpid() and not killed
    assert not managed.pid_path.exists()


def test_start_on_a_busy_port_says_so(managed):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is already in use"):
            managed.start(BrokerConfig(state_dir=managed.state_dir, port=port))
    assert not managed.pid_path.exists()


def test_start_reports_mosquittos_own_error_when_it_exits(managed):
    cfg = BrokerConfig(state_dir=managed.state_dir, port=free_port(), message_size_limit=10**9)
    with pytest.raises(BrokerError, match=r"did not start.*Invalid message_size_limit value"):
        managed.start(cfg)
    assert not managed.pid_path.exists()
    assert not managed.status().running


def test_password_file_turns_anonymous_access_off(managed, tmp_path):
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "lab", "s3cret"], check=True)
    port = free_port()
    managed.start(BrokerConfig(state_dir=managed.state_dir, port=port, password_file=passwd))
    anonymous = Client("anon", "127.0.0.1", port, clean_start=True)
    user = Client("lab-1", "127.0.0.1", port, clean_start=True, credentials=("lab", "s3cret"))
    try:
        assert anonymous.reason_code == "Not authorized"
        assert user.reason_code == "Success"
    finally:
        anonymous.close()
        user.close()


def test_missing_password_file_is_a_user_error(managed, tmp_path):
    cfg = BrokerConfig(state_dir=managed.state_dir, port=free_port(), password_file=tmp_path / "p")
    with pytest.raises(BrokerError, match="mosquitto_passwd -c"):
        managed.start(cfg)


def test_find_mosquitto_missing_gives_install_advice(tmp_path, monkeypatch):
    monkeypatch.delenv("HALOFARM_MOSQUITTO", raising=False)
    with pytest.raises(BrokerError) as err:
        find_mosquitto(search_path=str(tmp_path))
    message = str(err.value)
    assert "sudo apt-get install mosquitto" in message and "brew install mosquitto" in message
    assert "\n" not in message
    with pytest.raises(BrokerError, match="does not exist or is not executable"):
        find_mosquitto(tmp_path / "mosquitto")


def test_find_mosquitto_explicit_and_environment(tmp_path, monkeypatch):
    real = find_mosquitto()
    assert find_mosquitto(real) == real
    monkeypatch.setenv("HALOFARM_MOSQUITTO", str(tmp_path / "nope"))
    with pytest.raises(BrokerError, match="nope does not exist"):
        find_mosquitto()


def test_fixture_fails_with_install_advice_when_mosquitto_is_missing(tmp_path):
    # A failure, not a skip: a skipped MQTT suite would look green in CI.
    test_file = tmp_path / "test_needs_broker.py"
    test_file.write_text("def test_x(mosquitto):\n    pass\n")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.mqtt_broker", "-p", "no:cacheprovider"]
        + ["--rootdir", str(tmp_path), str(test_file)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "HALOFARM_MOSQUITTO": str(tmp_path / "none"), "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 error" in r.stdout and "sudo apt-get install mosquitto" in r.stdout
