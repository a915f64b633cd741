"""The transport over real ptys and loopback sockets: exclusive lock, stale-output flush,
DTR handling, transcript, reconnect after an unplug, the URL schemes."""

from __future__ import annotations

import time

import pytest
import serial

from firmware_bridge import urlschemes
from firmware_bridge.discovery import PortInfo, find_ports, parse_usb_id
from firmware_bridge.dut import EembcDut
from firmware_bridge.errors import DeviceDisconnected, PortBusy, PortOpenError
from firmware_bridge.fakes.registry import make_device
from firmware_bridge.fakes.serial_port import device_for_url
from firmware_bridge.fakes.tcp_port import TcpPort
from firmware_bridge.transcript import Transcript
from firmware_bridge.transport import PortSettings, Transport

WAIT = 10.0  # generous: the machine is shared


def wait_for(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_exclusive_lock_on_a_real_tty(pty_fake):
    port = pty_fake("fake-dut://ic01")
    with Transport(PortSettings(port.path)).open():
        with pytest.raises(PortBusy, match="in use by another process"):
            Transport(PortSettings(port.path)).open()
        # Without the lock a second opener gets in (advisory flock, serial.md §7).
        Transport(PortSettings(port.path, exclusive=False)).open().close()


def test_missing_port_says_what_to_check(tmp_path):
    with pytest.raises(PortOpenError, match="no such port"):
        Transport(PortSettings(str(tmp_path / "ttyNONE"))).open()


def test_stale_output_is_flushed_at_connect(pty_fake):
    port = pty_fake("fake-dut://ic01")
    # The boot banner was written before anyone opened the tty: it waits as stale output.
    assert wait_for(lambda: port.device.boots == 1)
    time.sleep(0.1)
    t = Transport(PortSettings(port.path)).open()
    try:
        assert t.pending() == b""
        t.write(b"name%")
        assert t.read_line(WAIT) == "m-name-dut-[halofarm fake DUT]"
        assert t.read_line(WAIT) == "m-ready"
    finally:
        t.close()


def test_dtr_low_at_open_avoids_the_auto_reset(fake_url):
    url = fake_url("fake-dut://ic01", reset_on_dtr=1)
    device = device_for_url(url)
    assert wait_for(lambda: device.boots == 1)
    Transport(PortSettings(url)).open().close()  # dtr=False: no reset
    time.sleep(0.2)
    assert device.boots == 1
    urlschemes.register()
    plain = serial.serial_for_url(url)  # pyserial's default asserts DTR: an Arduino resets
    try:
        assert wait_for(lambda: device.boots == 2)
    finally:
        plain.close()


def test_transcript_records_both_directions(pty_fake, tmp_path):
    port = pty_fake("fake-dut://ic01")
    trace_path = tmp_path / "trace.log"
    trace = Transcript(str(trace_path))
    with EembcDut.open(port.path, trace=trace) as dut:
        dut.name()
    trace.close()
    text = trace_path.read_text()
    assert "dut tx b'name%'" in text
    assert "dut rx 'm-name-dut-[halofarm fake DUT]'" in text
    assert "dut ev open" in text and "dut ev close" in text


def test_reconnects_after_unplug_and_replug(pty_fake):
    port = pty_fake("fake-dut://ic01?replug_after_s=0.3")
    t = Transport(PortSettings(port.path, retry_s=0.05)).open()
    try:
        generation = t.generation
        port.device.unplug()
        with pytest.raises(DeviceDisconnected):
            t.read_line(WAIT)
        with pytest.raises(DeviceDisconnected):
            t.write(b"name%")
        assert t.wait_connected(WAIT)
        assert t.generation == generation + 1 and t.disconnects == 1
        t.flush_stale(quiet_s=0.2)
        t.write(b"name%")
        assert t.read_line(WAIT) == "m-name-dut-[halofarm fake DUT]"
    finally:
        t.close()


def test_url_fake_unplug_fails_like_a_vanished_device(fake_url):
    url = fake_url("fake-dut://ic01", replug_after_s=0.3)
    t = Transport(PortSettings(url, retry_s=0.05)).open()
    try:
        device = device_for_url(url)
        device.unplug()
        assert not t.connected or wait_for(lambda: not t.connected)
        with pytest.raises(PortOpenError, match="no such port"):
            Transport(PortSettings(url, reconnect=False)).open()
        assert t.wait_connected(WAIT)
    finally:
        t.close()


def test_socket_url_like_ser2net_raw():
    tcp = TcpPort(make_device("fake-dut://kws01")).start()
    try:
        with EembcDut.open(tcp.url) as dut:
            identity = dut.identify()
        assert identity.model == "kws01" and identity.timestamp_mode == "performance"
    finally:
        tcp.close()


def test_both_scheme_spellings_reach_the_fakes(fake_url):
    for base in ("fake-dut://ic01", "fake_dut://ic01"):
        with EembcDut.open(fake_url(base)) as dut:
            assert dut.name() == "halofarm fake DUT"


def test_unknown_fake_parameter_is_refused(fake_url):
    with pytest.raises(PortOpenError, match="unknown parameter.*infer_ms"):
        Transport(PortSettings(fake_url("fake-dut://ic01", infer_ms=3))).open()


def test_discovery_matches_usb_identity():
    ports = [
        PortInfo("/dev/ttyACM0", "/dev/serial/by-id/a", 0x1915, 0xC00A, "S1", "Nordic", "PPK2",
                 "PPK2", "1-1:1.0", "ppk2"),
        PortInfo("/dev/ttyACM1", "/dev/serial/by-id/b", 0x1915, 0xC00A, "S1", "Nordic", "PPK2",
                 "PPK2", "1-1:1.1", "ppk2"),
        PortInfo("/dev/ttyACM2", "/dev/ttyACM2", 0x0483, 0x5740, "L9", "ST", "PowerShield",
                 "PowerShield", "1-2", "lpm01a"),
    ]  # fmt: skip
    assert [p.device for p in find_ports(*parse_usb_id("1915:c00a"), ports=ports)] == [
        "/dev/ttyACM1",  # the data interface: location ending in 1
        "/dev/ttyACM0",
    ]
    assert find_ports(serial_number="L9", ports=ports)[0].kind == "lpm01a"
    assert find_ports(kind="ppk2", serial_number="nope", ports=ports) == []
    with pytest.raises(ValueError, match="VID:PID"):
        parse_usb_id("0483-5740")
