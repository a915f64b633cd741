"""`halo-coord broker start|status|stop` through the real entry point in a subprocess: the
broker must outlive the CLI process that started it, and every user error is one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from coordinator.broker import ManagedBroker
from tests.mqtt_broker import free_port, mqtt_ready


def coord(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("halo-coord: error: "), r.stderr
    return lines[0]


@pytest.fixture
def state_dir(tmp_path):
    """A halofarm state dir whose broker is stopped at teardown, even if the test failed."""
    yield tmp_path / "state"
    ManagedBroker(tmp_path / "state" / "broker").stop()


def test_start_status_stop_json(state_dir):
    port = free_port()
    r = coord("broker", "start", "--port", str(port), "--state-dir", str(state_dir), "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["running"] and not st["already_running"]
    assert st["url"] == f"mqtt://127.0.0.1:{port}"
    assert st["state_dir"] == str((state_dir / "broker").resolve())
    # The CLI process has exited; the broker it started is still serving.
    assert mqtt_ready("127.0.0.1", port)

    r = coord("broker", "status", "--state-dir", str(state_dir), "--json")
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    assert status["running"] and status["pid"] == st["pid"] and status["port"] == port
    assert status["version"].startswith("mosquitto version")

    r = coord("broker", "stop", "--state-dir", str(state_dir), "--json")
    assert r.returncode == 0, r.stderr
    stopped = json.loads(r.stdout)
    assert stopped["stopped"] and not stopped["killed"] and stopped["pid"] == st["pid"]
    assert not psutil.pid_exists(st["pid"])

    r = coord("broker", "status", "--state-dir", str(state_dir), "--json")
    assert json.loads(r.stdout)["running"] is False


def test_human_output_and_start_when_running(state_dir):
    port = free_port()
    r = coord("broker", "start", "--port", str(port), "--state-dir", str(state_dir))
    assert r.returncode == 0, r.stderr
    assert f"broker started at mqtt://127.0.0.1:{port}" in r.stdout

    r = coord("broker", "start", "--port", str(free_port()), "--state-dir", str(state_dir))
    assert r.returncode == 0, r.stderr
    assert f"broker already running at mqtt://127.0.0.1:{port}" in r.stdout

    r = coord("broker", "status", "--state-dir", str(state_dir))
    assert f"broker running at mqtt://127.0.0.1:{port}" in r.stdout

    r = coord("broker", "stop", "--state-dir", str(state_dir))
    assert r.returncode == 0 and "broker stopped" in r.stdout

    r = coord("broker", "stop", "--state-dir", str(state_dir))
    assert r.returncode == 0 and "broker not running" in r.stdout


def test_state_dir_from_environment(state_dir):
    port = free_port()
    env = {"HALOFARM_STATE_DIR": str(state_dir)}
    r = coord("broker", "start", "--port", str(port), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state_dir"] == str((state_dir / "broker").resolve())
    assert (state_dir / "broker" / "broker.pid").is_file()
    r = coord("broker", "status", "--json", env=env)
    assert json.loads(r.stdout)["port"] == port


def test_status_reports_and_removes_stale_pidfile(state_dir):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (state_dir / "broker").mkdir(parents=True)
    (state_dir / "broker" / "broker.pid").write_text(f"{dead.pid}\n")
    r = coord("broker", "status", "--state-dir", str(state_dir))
    assert r.returncode == 0, r.stderr
    assert f"broker not running (removed stale pidfile of pid {dead.pid})" in r.stdout
    assert not (state_dir / "broker" / "broker.pid").exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--mosquitto", "/nonexistent/mosquitto"], "sudo apt-get install mosquitto"),
        (["--host", "0.0.0.0"], "refusing to listen on 0.0.0.0 with anonymous access"),
        (["--host", "192.168.1.10"], "--password-file FILE"),
        (["--password-file", "/nonexistent/passwd"], "mosquitto_passwd -c /nonexistent/passwd"),
    ],
)
def test_start_errors_are_one_line_exit_2(state_dir, args, fragment):
    r = coord("broker", "start", "--port", str(free_port()), "--state-dir", str(state_dir), *args)
    assert fragment in one_line_error(r)
    assert not (state_dir / "broker" / "broker.pid").exists()


def test_missing_mosquitto_from_environment_is_one_line_exit_2(state_dir, tmp_path):
    env = {"HALOFARM_MOSQUITTO": str(tmp_path / "no-mosquitto")}
    line = one_line_error(coord("broker", "start", "--state-dir", str(state_dir), env=env))
    assert "no-mosquitto does not exist" in line and "brew install mosquitto" in line
