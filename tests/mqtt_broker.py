"""pytest plugin: a real mosquitto on a free 127.0.0.1 port for each test that asks for it.

    def test_x(mosquitto):
        client.connect(mosquitto.host, mosquitto.port)
        mosquitto.stop(); mosquitto.start()   # same port, same persistence file
        mosquitto.kill()                       # SIGKILL: unsaved broker state is lost

Persistence is on, so persistent sessions and queued QoS 1 messages survive `stop()` + `start()`
(mosquitto saves its database on SIGTERM). A missing mosquitto fails the test with the install
command instead of skipping it: CI installs mosquitto, and a silent skip would hide every MQTT test.

This module must import on Python 3.8 (the tests/agent leg), where `coordinator` (Python >= 3.10)
cannot be imported. On Python >= 3.10 the broker config comes from the production generator
`coordinator.broker.render_config`; on 3.8 from `render_test_config` below, which
tests/coordinator/test_broker.py pins to be byte-identical to the production output.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

HOST = "127.0.0.1"
MAX_QUEUED_MESSAGES = 100000
MAX_INFLIGHT_MESSAGES = 100
# Seconds between periodic saves; a graceful stop always saves, this bounds what kill() loses.
AUTOSAVE_INTERVAL = 1
MESSAGE_SIZE_LIMIT = 256 * 1024 + 16 * 1024
INSTALL_HINT = (
    "install it: `sudo apt-get install mosquitto` (Debian/Ubuntu/Raspberry Pi OS) "
    "or `brew install mosquitto` (macOS)"
)
MOSQUITTO_ENV = "HALOFARM_MOSQUITTO"
# Debian installs the broker to /usr/sbin, which is not on a normal user's PATH.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def mosquitto_binary() -> Optional[str]:
    """$HALOFARM_MOSQUITTO if set (as for `halo-coord broker start`), else PATH and sbin dirs."""
    explicit = os.environ.get(MOSQUITTO_ENV)
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    search = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    return shutil.which("mosquitto", path=search)


def render_test_config(port: int, state_dir: Path, user: str) -> str:
    """The test broker's config on Python 3.8; identical to the production generator's output."""
    return "\n".join(
        [
            "# mosquitto config written by halofarm; rewritten on every start.",
            f"listener {port} {HOST}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {state_dir}/",
            "persistence_file mosquitto.db",
            f"autosave_interval {AUTOSAVE_INTERVAL}",
            "autosave_on_changes false",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
            f"message_size_limit {MESSAGE_SIZE_LIMIT}",
            f"user {user}",
            f"log_dest file {state_dir / 'mosquitto.log'}",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "",
        ]
    )


def _config_text(port: int, state_dir: Path) -> str:
    # mosquitto started as root drops to user "mosquitto", which cannot write our state dir.
    user = getpass.getuser()
    if sys.version_info < (3, 10):
        return render_test_config(port, state_dir, user)
    from coordinator.broker import BrokerConfig, render_config

    return render_config(
        BrokerConfig(
            host=HOST,
            port=port,
            state_dir=state_dir,
            max_queued_messages=MAX_QUEUED_MESSAGES,
            max_inflight_messages=MAX_INFLIGHT_MESSAGES,
            autosave_interval=AUTOSAVE_INTERVAL,
            message_size_limit=MESSAGE_SIZE_LIMIT,
            user=user,
        )
    )


def mqtt_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if an MQTT 3.1.1 CONNECT to host:port gets a CONNACK (any return code)."""
    client_id = b"halofarm-probe"
    variable = (
        b"\x00\x04MQTT\x04\x02\x00\x05"  # protocol name, level 4, clean session, keepalive 5 s
    )
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = variable + payload
    packet = b"\x10" + bytes([len(body)]) + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(packet)
            reply = s.recv(4)
            s.sendall(b"\xe0\x00")  # DISCONNECT, so the broker logs a clean goodbye
    except OSError:
        return False
    return reply[:2] == b"\x20\x02"


class Mosquitto:
    """A mosquitto child process bound to one port and one persistence directory."""

    def __init__(self, binary: str, state_dir: Path, port: int) -> None:
        self.binary = binary
        self.state_dir = state_dir
        self.host = HOST
        self.port = port
        self.url = f"mqtt://{HOST}:{port}"
        self.config_path = state_dir / "mosquitto.conf"
        self.log_path = state_dir / "mosquitto.log"
        self.config_path.write_text(_config_text(port, state_dir), encoding="utf-8")
        self._proc: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self.running else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (or restart after stop/kill) on the same port with the same persistence file."""
        if self.running:
            raise RuntimeError(f"mosquitto already running on {self.url}")
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not mqtt_ready(self.host, self.port):
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self._proc.returncode} on {self.url}:\n"
                    + self.log_text()
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mosquitto not ready on {self.url}:\n" + self.log_text())
            time.sleep(0.02)

    def stop(self) -> None:
        """Graceful stop (SIGTERM: mosquitto saves its database), SIGKILL if it hangs."""
        if not self.running:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: whatever the broker had not saved yet is gone, like a power cut."""
        if not self.running:
            return
        self._proc.kill()
        self._proc.wait()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"<Mosquitto {self.url} pid={self.pid}>"


@pytest.fixture
def mosquitto(tmp_path_factory):
    """A started mosquitto on a free 127.0.0.1 port; stopped at teardown."""
    binary = mosquitto_binary()
    if binary is None:
        where = os.environ.get(MOSQUITTO_ENV) or f"PATH or {', '.join(SBIN_DIRS)}"
        pytest.fail(f"mosquitto not found ({where}): {INSTALL_HINT}", pytrace=False)
    broker = Mosquitto(binary, tmp_path_factory.mktemp("mosquitto"), free_port())
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
