"""The EEMBC DUT driver against the fake DUT over real ptys: whole sessions and the quirks
serial.md §1 documents (CR/LF after %, W defaults to 10, trailing commas, blank lines,
over-long commands), timeouts, garbage bytes, device errors, the interface board."""

from __future__ import annotations

import time

import pytest

from firmware_bridge import eembc
from firmware_bridge.dut import EembcDut, Timeouts
from firmware_bridge.errors import CommandTimeout, CommandTooLong, DeviceError
from firmware_bridge.transport import PortSettings, Transport

WAIT = 10.0


def raw_reply(t: Transport, command: bytes):
    """Send bytes as they are; the lines up to m-ready."""
    t.write(command)
    lines = []
    while True:
        line = t.read_line(WAIT)
        assert line is not None, f"no m-ready after {command!r}: {lines}"
        lines.append(line)
        if line.endswith("m-ready"):
            return lines


def test_full_session(pty_fake):
    port = pty_fake("fake-dut://vww01?infer_us=800&name=nucleo-l4r5zi")
    data = bytes(range(256)) * 3
    with EembcDut.open(port.path) as dut:
        identity = dut.identify()
        assert (identity.name, identity.model) == ("nucleo-l4r5zi", "vww01")
        assert identity.profile == "ULPMark for tinyML Firmware V0.0.1"
        assert identity.timestamp_mode == "performance"
        dut.load(data)
        assert dut.db_print() == data
        reply = dut.infer(40, 2)
        assert reply.elapsed_us is not None and reply.elapsed_us >= 40 * 800
        assert len(reply.results) == 2 and abs(sum(reply.results) - 1.0) < 0.01
        assert dut.results() == reply.results
    # 768 bytes in 31-byte chunks, as the runner sends them; W was sent explicitly.
    chunks = [c for c in port.device.commands if c.startswith("db ") and c != "db print"]
    assert len(chunks) == 1 + (768 + 30) // 31
    assert max(len(c) for c in chunks) == 3 + 62
    assert "infer 40 2" in port.device.commands


def test_crlf_after_percent_breaks_the_next_command(pty_fake):
    port = pty_fake("fake-dut://ic01")
    with Transport(PortSettings(port.path)).open() as t:
        assert raw_reply(t, b"name%\r\n")[-1] == "m-ready"
        lines = raw_reply(t, b"name%")
        # "e-[Unknown command: \r\nname]" arrives as two lines; the driver joins them.
        assert lines[:2] == ["e-[Unknown command: ", "name]"]
    with pytest.raises(ValueError, match="CR/LF"):
        eembc.build_command("name\r\n")
    joiner = eembc.ErrorJoiner()
    texts = [joiner.feed(line, eembc.message(line)) for line in lines]
    assert texts[1] == "Unknown command:\nname"


def test_name_recovers_from_a_half_typed_command(pty_fake):
    port = pty_fake("fake-dut://ic01")
    with EembcDut.open(port.path) as dut:
        dut.transport.write(b"\r\n")  # what a terminal left behind in the DUT's buffer
        assert dut.name() == "halofarm fake DUT"
        with pytest.raises(DeviceError, match="Unknown command") as err:
            dut.command("nmae")
        assert err.value.text == "Unknown command: nmae"


def test_infer_without_w_runs_ten_warmups(pty_fake):
    port = pty_fake("fake-dut://ic01?infer_us=100")
    with Transport(PortSettings(port.path)).open() as t:
        assert "m-warmup-start-10" in raw_reply(t, b"infer 1%")
        assert "m-warmup-start-0" in raw_reply(t, b"infer 1 0%")
    with EembcDut.open(port.path) as dut:
        assert dut.infer(3, 0).warmups == 0
        with pytest.raises(ValueError, match="N >= 1"):
            dut.infer(0, 0)
        with pytest.raises(DeviceError, match="must be >0"):
            dut.command("infer -2 0")


def test_trailing_comma_in_results(pty_fake):
    port = pty_fake("fake-dut://kws01?trailing_comma=1")
    with Transport(PortSettings(port.path)).open() as t:
        line = [ln for ln in raw_reply(t, b"results%") if ln.startswith("m-results")][0]
        assert line.endswith(",]")
    with EembcDut.open(port.path) as dut:
        assert dut.results() == [0.0] * 12
    assert eembc.parse_results("0.000, 0.992,,") == [0.0, 0.992]


def test_blank_lines_of_db_print_are_ignored(pty_fake):
    port = pty_fake("fake-dut://ic01")
    with EembcDut.open(port.path) as dut:
        dut.load(bytes(range(13)))  # 13 % 8 != 0: the firmware adds an empty line
        with Transport(PortSettings(port.path, exclusive=False)):
            pass
        assert dut.db_print() == bytes(range(13))
    with Transport(PortSettings(port.path)).open() as t:
        assert "" in raw_reply(t, b"db print%")


def test_over_long_commands(pty_fake):
    port = pty_fake("fake-dut://ic01")
    with Transport(PortSettings(port.path)).open() as t:
        raw_reply(t, b"db load 100%")
        # 39 bytes = 81 chars: the firmware keeps 80, an odd number of hex digits remains.
        lines = raw_reply(t, b"db " + bytes(39).hex().encode() + b"%")
        assert "e-[Insufficent number of hex digits]" in lines
        assert raw_reply(t, b"db " + bytes(38).hex().encode() + b"%") == ["m-ready"]
    with pytest.raises(CommandTooLong, match="80-character buffer"):
        eembc.build_command("db " + bytes(39).hex())
    with pytest.raises(CommandTooLong):
        eembc.db_commands(b"x" * 100, chunk=39)
    with EembcDut.open(port.path) as dut:
        with pytest.raises(CommandTooLong):
            dut.command("x" * 81)


def test_db_load_size_errors(pty_fake):
    port = pty_fake("fake-dut://ic01")
    with EembcDut.open(port.path) as dut:
        with pytest.raises(DeviceError, match="must be >0 bytes"):
            dut.command("db load 0")
        with pytest.raises(DeviceError, match="Invalid hex digit 'zz'"):
            dut.command("db load 2")
            dut.command("db zz00")
        with pytest.raises(ValueError, match="MAX_DB_INPUT_SIZE"):
            dut.load(bytes(eembc.MAX_DB_INPUT_SIZE + 1))


def test_timeout_when_no_m_ready(pty_fake):
    port = pty_fake("fake-dut://ic01?latency_ms=700")
    with EembcDut.open(port.path, timeouts=Timeouts(command_s=0.2)) as dut:
        with pytest.raises(CommandTimeout, match="no m-ready within 0.2 s after 'name'"):
            dut.command("name")
        # The late reply is stale output for the next command; it is skipped.
        dut.transport.flush_stale(quiet_s=1.0, max_s=4.0)
        assert dut.command("name", timeout_s=WAIT).messages[-1] == "m-ready"


def test_infer_timeout_scales_with_the_window(pty_fake):
    port = pty_fake("fake-dut://ic01?infer_us=50000")
    with EembcDut.open(port.path, timeouts=Timeouts(infer_min_s=0.1)) as dut:
        with pytest.raises(CommandTimeout):
            dut.infer(10, 0)  # 0.5 s of work, 0.1 s allowed
        dut.transport.flush_stale(quiet_s=1.0, max_s=3.0)
        assert dut.infer(10, 0, expected_s=0.5).elapsed_us >= 500_000


def test_garbage_bytes_do_not_break_a_session(pty_fake):
    port = pty_fake("fake-dut://ic01?garbage=0.5&seed=3&infer_us=200")
    with EembcDut.open(port.path) as dut:
        for _ in range(3):
            assert dut.identify().model == "ic01"
            dut.load(bytes(range(64)))
            reply = dut.infer(20, 1)
            assert reply.elapsed_us >= 20 * 200 and len(reply.results) == 10


def test_device_error_text_is_surfaced(pty_fake):
    port = pty_fake("fake-dut://ic01?error_at=infer:2")
    with EembcDut.open(port.path) as dut:
        dut.infer(1, 0)
        with pytest.raises(DeviceError) as err:
            dut.infer(1, 0)
        assert err.value.text == "th_infer() failed: injected fault"
        assert "rejected 'infer 1 0'" in str(err.value)
        dut.infer(1, 0)


def test_lap_counter_wrap(pty_fake):
    # The 32-bit microsecond counter wraps 2 s after boot; aim a 300 ms window across it.
    port = pty_fake(f"fake-dut://ic01?lap_start_us={2**32 - 2_000_000}&infer_us=1000")
    with EembcDut.open(port.path) as dut:
        now = dut.timestamp()
        assert now is not None and now > 2**32 - 2_000_000
        time.sleep(max(0.0, (2**32 - now) / 1e6 - 0.15))
        reply = dut.infer(300, 0)
        assert reply.t1_us < reply.t0_us  # wrapped during the window
        assert 300_000 <= reply.elapsed_us < 1_000_000
    assert eembc.lap_delta_us(2**32 - 5, 7) == 12


def test_interface_board_wrapping(pty_fake):
    port = pty_fake("fake-iface://ad01?infer_us=300")
    with EembcDut.open(port.path, interface=True) as dut:
        identity = dut.identify()
        assert identity.interface == "tinyML Enhanced Interface Board"
        assert identity.timestamp_mode == "energy" and identity.model == "ad01"
        dut.load(bytes(range(60)))
        reply = dut.infer(5, 0)
        assert reply.t0_us is None and len(reply.results) == 1
    chunks = [c for c in port.device.dut.commands if c.startswith("db ") and "load" not in c]
    assert [len(c) for c in chunks] == [3 + 52, 3 + 52, 3 + 16]  # 26-byte chunks
