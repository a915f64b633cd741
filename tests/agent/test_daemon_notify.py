"""sd_notify over real unix datagram sockets (the daemon-level test is in test_daemon.py)."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from agent.notify import Notifier


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(10)
    yield path, sock
    sock.close()


def test_without_notify_socket_everything_is_a_no_op():
    n = Notifier(env={})
    assert not n.enabled
    assert n.watchdog_interval_s is None
    assert n.ready("x") is False and n.watchdog() is False and n.stopping("x") is False


def test_messages_reach_a_path_socket(listener):
    path, sock = listener
    n = Notifier(env={"NOTIFY_SOCKET": path})
    assert n.ready("connected")
    assert sock.recv(1024) == b"READY=1\nSTATUS=connected"
    assert n.watchdog()
    assert sock.recv(1024) == b"WATCHDOG=1"
    assert n.extend_timeout(1.5)
    assert sock.recv(1024) == b"EXTEND_TIMEOUT_USEC=1500000"
    assert n.stopping("bye")
    assert sock.recv(1024) == b"STOPPING=1\nSTATUS=bye"


def test_abstract_namespace_socket():
    name = f"halofarm-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        assert Notifier(env={"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert sock.recv(1024) == b"STATUS=hello"


def test_watchdog_interval_is_half_the_timeout_for_this_process():
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000"}
    assert Notifier(env=env).watchdog_interval_s == 15.0
    assert Notifier(env=dict(env, WATCHDOG_PID=str(os.getpid()))).watchdog_interval_s == 15.0
    assert Notifier(env=dict(env, WATCHDOG_PID=str(os.getpid() + 1))).watchdog_interval_s is None


def test_a_vanished_socket_is_logged_not_raised(tmp_path, caplog):
    n = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.enabled
    assert n.watchdog() is False
    assert "sd_notify" in caplog.text
