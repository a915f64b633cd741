"""The reference meter firmware (Arduino C++) speaks the protocol the driver expects: the
sketch is compiled for the host against a minimal Arduino core (``arduino_host/``: Serial on
stdin/stdout, an INA3221 on Wire, the marker interrupt on SIGUSR1) and driven over a real pty
by the same driver that drives the fake. Skipped without a C++ compiler."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import tty
from pathlib import Path

import pytest

from firmware_bridge.meters.factory import open_meter

HERE = Path(__file__).resolve().parent
SKETCH = HERE.parents[1] / "firmware_bridge" / "firmware" / "halofarm_inameter"
CXX = shutil.which("g++") or shutil.which("clang++")


@pytest.fixture
def firmware(tmp_path):
    if CXX is None:
        pytest.skip("no C++ compiler to build the sketch for the host")
    binary = tmp_path / "inameter"
    subprocess.run(
        [CXX, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-O1", f"-I{HERE / 'arduino_host'}",
         f"-I{SKETCH}", "-DINA_MA=5", str(HERE / "arduino_host" / "main.cpp"), "-o", str(binary)],
        check=True,
    )  # fmt: skip
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    proc = subprocess.Popen([str(binary)], stdin=master, stdout=master, close_fds=True)
    os.close(master)
    yield proc, os.ttyname(slave)
    proc.kill()  # on EOF the sketch would poll forever
    proc.wait(10)
    os.close(slave)


def test_sketch_streams_what_the_driver_reads(firmware):
    proc, path = firmware
    with open_meter(path, "inameter", rails=["VDD_DUT", "VDD_IO"], rate_hz=100) as meter:
        assert meter.info.identity == "inameter-01"
        settings = meter.info.settings
        assert settings["chip"] == "ina3221" and settings["protocol"] == "1"
        assert [c["shunt_uohm"] for c in settings["channels"]] == [1000000, 1000000]
        meter.start()
        deadline = time.monotonic() + 10
        while meter.snapshot().samples < 20:
            assert time.monotonic() < deadline, "the sketch should stream P records"
            time.sleep(0.02)
        first = meter.snapshot()
        proc.send_signal(signal.SIGUSR1)  # the DUT's timestamp pin falls
        time.sleep(0.3)
        last = meter.snapshot()
        events = meter.events()
    assert last.bad == 0 and last.dropped == 0
    assert last.mv[0] == 3296.0 and last.ma[0] == pytest.approx(5.0)
    seconds = last.t_meter_s - first.t_meter_s
    assert (last.energy_j[0] - first.energy_j[0]) / seconds == pytest.approx(
        3.296 * 0.005, rel=1e-3
    )
    assert [e.source for e in events] == ["gpio2"]
