"""Fakes on real pty pairs (and as pyserial URLs), torn down after each test."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest

from firmware_bridge.fakes.pty_port import PtyPort
from firmware_bridge.fakes.registry import make_device
from firmware_bridge.fakes.serial_port import forget

_ids = itertools.count()


@pytest.fixture
def pty_fake(tmp_path):
    """``pty_fake(url)`` serves the fake described by ``url`` on a pty pair and returns the
    :class:`PtyPort` (``.path`` is what the host opens, ``.device`` the fake)."""
    ports = []

    def make(url: str, name: str = "") -> PtyPort:
        port = PtyPort(make_device(url), str(tmp_path), name or f"ttyFAKE{next(_ids)}").start()
        ports.append(port)
        deadline = time.monotonic() + 10
        while port.device.boots == 0 and time.monotonic() < deadline:
            time.sleep(0.005)  # its boot banner is stale output by the time a host connects
        return port

    yield make
    for port in ports:
        port.close()


@pytest.fixture
def fake_url():
    """``fake_url("fake-dut://ic01", infer_us=1500)`` -> a URL of its own device (``id``),
    forgotten after the test."""
    urls = []

    def make(base: str, **params) -> str:
        params.setdefault("id", uuid.uuid4().hex[:8])
        query = "&".join(f"{k}={v}" for k, v in params.items())
        url = f"{base}{'&' if '?' in base else '?'}{query}"
        urls.append(url)
        return url

    yield make
    for url in urls:
        forget(url)


@pytest.fixture
def board_name():
    """A board name of its own, so DUT and meter fakes of one test share a supply."""
    from firmware_bridge.fakes.profiles import forget_board

    name = "b" + uuid.uuid4().hex[:8]
    yield name
    forget_board(name)
