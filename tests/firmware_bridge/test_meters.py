"""Meter drivers against the meter fakes over real ptys: energy of a known current profile
within 0.5 %, PPK2 drops from the sample counter, garbage, timestamp events, refusals; the
decoders on hand-built streams."""

from __future__ import annotations

import time

import numpy as np
import pytest

from firmware_bridge.errors import MeterError
from firmware_bridge.fakes.ppk2 import CAL, metadata_text, pack_word
from firmware_bridge.fakes.profiles import SquareProfile
from firmware_bridge.meters import ppk2 as ppk2_mod
from firmware_bridge.meters.factory import guess_kind, open_meter
from firmware_bridge.meters.inameter import checksum_ok
from firmware_bridge.meters.lpm01a import parse_values

WAIT = 10.0
SQUARE = "profile=square&lo_ma=1.5&hi_ma=9&period_ms=20&duty=0.3"
SQUARE_PROFILE = SquareProfile(1.5, 9.0, 0.020, 0.3)


def stream(meter, seconds):
    """Start, let ``seconds`` of samples arrive, return (first, last) snapshots."""
    meter.start()
    deadline = time.monotonic() + WAIT
    while meter.snapshot().samples == 0:
        assert time.monotonic() < deadline, "no samples"
        time.sleep(0.01)
    first = meter.snapshot()
    time.sleep(seconds)
    return first, meter.snapshot()


def truth_j(first, last, volts):
    """V x the profile's exact charge between the two snapshots' meter times."""
    q = SQUARE_PROFILE.charge(np.array([first.t_meter_s, last.t_meter_s]))
    return volts * float(q[1] - q[0])


def relative_error(measured, true):
    return abs(measured - true) / true


def test_ppk2_energy_of_a_known_profile(pty_fake):
    port = pty_fake(f"fake-ppk2://?{SQUARE}&noise=0.02&seed=1")
    with open_meter(port.path, "ppk2", voltage_mv=3000) as meter:
        first, last = stream(meter, 1.5)
        assert meter.info.calibration["per_range"]["GI"] == CAL["GI"]
    assert last.samples - first.samples > 50_000
    measured = last.energy_j[0] - first.energy_j[0]
    assert relative_error(measured, truth_j(first, last, 3.0)) < 0.005
    assert last.dropped == 0 or last.dropped == port.device.samples_dropped


def test_ppk2_drops_are_detected_from_the_counter(pty_fake):
    port = pty_fake(f"fake-ppk2://?{SQUARE}&drop_every=10&seed=2")
    with open_meter(port.path, "ppk2", voltage_mv=3000) as meter:
        first, last = stream(meter, 1.0)
        meter.stop()
        # Bytes still in flight (a loaded machine delays the reader): give them time to arrive.
        deadline = time.monotonic() + WAIT
        while meter.snapshot().dropped != port.device.samples_dropped:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        final = meter.snapshot()
    assert port.device.samples_dropped > 0
    assert final.dropped == port.device.samples_dropped  # every lost block, counted exactly
    # The gaps are filled with the neighbours' mean: the energy is still right.
    measured = last.energy_j[0] - first.energy_j[0]
    assert relative_error(measured, truth_j(first, last, 3.0)) < 0.005


def test_ppk2_recovers_word_alignment_after_garbage(pty_fake):
    port = pty_fake(f"fake-ppk2://?{SQUARE}&garbage=0.05&seed=4")
    with open_meter(port.path, "ppk2", voltage_mv=3000) as meter:
        first, last = stream(meter, 1.0)
    assert last.bad > 0
    measured = last.energy_j[0] - first.energy_j[0]
    assert relative_error(measured, truth_j(first, last, 3.0)) < 0.005, (
        port.dropped_bytes,
        port.device.samples_sent,
        last,
    )


def test_ppk2_decoder_on_a_hand_built_stream():
    cal = ppk2_mod.parse_metadata(
        "Calibrated: 1\nR0: 1000.0\nR1: -nan\nR2: 0\nGS0: 0.5\nGI0: 2.0\nO0: 8.0\nS0: 0.001\n"
        "I0: 0.0001\nUG0: 1.5\nHW: 1234\nEND\n"
    )
    assert cal.values["R"][1] == 101.65 and cal.values["R"][2] == 10.15  # -nan and 0 ignored
    assert cal.extra["HW"] == "1234"
    dec = ppk2_mod.Ppk2Decoder(cal, vdd_mv=2000, marker_pin=3)
    # counters 62, 63, 0 (wrap), then 4: three samples lost; logic pin 3 falls at word 2.
    # Then 5, 6, 7 and one more word, held back until the next call (it could be junk).
    words = [(100, 62, 0x08), (100, 63, 0x08), (200, 0, 0x00), (200, 4, 0x00)]
    words += [(200, 5, 0), (200, 6, 0), (200, 7, 0), (200, 8, 0)]
    data = b"".join(pack_word(a, 0, c, lg) for a, c, lg in words)
    out = dec.feed(data[:6])  # any split of the bytes works
    out2 = dec.feed(data[6:])
    assert out.samples + out2.samples == 7 and out.dropped + out2.dropped == 3

    def amps(adc):
        x = (adc * 4 - 8.0) * (1.8 / 163840 / 1000.0)
        return 1.5 * (x * (0.5 * x + 2.0) + (0.001 * 2.0 + 0.0001))

    a1, a2 = amps(100), amps(200)
    expected = (2 * a1 + a2 + 3 * a2 + a2 + 3 * a2) * 1e-5 * 2.0  # 3 lost samples filled
    assert dec.energy_j == pytest.approx(expected, rel=1e-12)
    (event,) = out.events + out2.events
    assert event[0] == 2 and event[1] == pytest.approx(2 * a1 * 1e-5 * 2.0)
    assert dec.index == 10  # samples 0..9 on the meter's clock, lost ones included
    # A gap of exactly 64 samples aliases to none: the 6-bit counter cannot see it.
    dec2 = ppk2_mod.Ppk2Decoder(cal, vdd_mv=2000)
    stream = [pack_word(1, 0, c, 0) for c in (5, 6 + 64, 7, 8)]
    assert dec2.feed(b"".join(stream)).dropped == 0


def test_ppk2_metadata_of_the_fake_parses():
    cal = ppk2_mod.parse_metadata(metadata_text(3300))
    assert cal.values["O"] == CAL["O"] and cal.extra["VDD"] == "3300"


def test_lpm01a_energy_bins_and_events(pty_fake, board_name):
    port = pty_fake(f"fake-lpm01a://?{SQUARE}&per_line=4")
    with open_meter(port.path, "lpm01a", voltage_mv=1800) as meter:
        assert meter.info.identity.startswith("PowerShield present")
        assert meter.info.firmware == "1.0.6"
        first, last = stream(meter, 1.5)
    measured = last.energy_j[0] - first.energy_j[0]
    assert relative_error(measured, truth_j(first, last, 1.8)) < 0.005


def test_lpm01a_counts_bins_the_board_dropped(pty_fake):
    port = pty_fake(f"fake-lpm01a://?{SQUARE}&drop_every=1")
    with open_meter(port.path, "lpm01a", voltage_mv=3300) as meter:
        meter.start()
        deadline = time.monotonic() + WAIT
        while meter.snapshot().dropped < 2:
            assert time.monotonic() < deadline, "the TimeStamp lines should reveal the drops"
            time.sleep(0.05)


def test_lpm01a_refusal_carries_the_board_detail(pty_fake):
    port = pty_fake("fake-lpm01a://")
    with open_meter(port.path, "lpm01a") as meter:
        with pytest.raises(MeterError, match="refused 'volt 5000m': voltage out of range"):
            meter.command("volt 5000m")
    with pytest.raises(ValueError, match="1800..3300"):
        open_meter(port.path, "lpm01a", voltage_mv=5000)
    assert parse_values("6409-07 0012+01") == [pytest.approx(6.409e-4), 120.0]


def test_inameter_protocol_energy_and_events(pty_fake, board_name):
    dut = pty_fake(f"fake-dut://ic01?energy=1&board={board_name}&infer_us=2000")
    port = pty_fake(f"fake-inameter://?board={board_name}&rate_hz=200&noise=0.01")
    from firmware_bridge.dut import EembcDut

    with open_meter(port.path, "inameter", rails=["VDD_DUT", "VDD_IO"], rate_hz=200) as meter:
        assert meter.info.identity == "fake-0001"
        assert [c["label"] for c in meter.info.settings["channels"]] == ["VDD_DUT", "VDD_IO"]
        meter.start()
        with EembcDut.open(dut.path) as d:
            d.infer(100, 0)  # 0.2 s of computing between two timestamp pulses
        assert meter.wait_until(time.monotonic_ns(), WAIT)
        time.sleep(0.1)
        events = meter.events()
        snap = meter.snapshot()
    assert [e.source for e in events][-2:] == ["gpio2", "gpio2"]
    a, b = events[-2:]
    assert b.t_meter_s - a.t_meter_s == pytest.approx(0.2, abs=0.02)
    # Channel 1 sees the whole board: 12 mA while computing at ~3.3 V.
    energy = b.energy_j[0] - a.energy_j[0]
    assert energy == pytest.approx(0.012 * 3.296 * (b.t_meter_s - a.t_meter_s), rel=0.03)
    assert snap.bad == 0 and snap.dropped == 0


def test_inameter_counts_bad_and_lost_records(pty_fake):
    port = pty_fake("fake-inameter://?profile=const&ma=5&garbage=0.2&drop_every=7&seed=5")
    with open_meter(port.path, "inameter", rails=["A"]) as meter:
        first, last = stream(meter, 0.8)
    assert last.bad > 0 and last.dropped > 0
    seconds = last.t_meter_s - first.t_meter_s
    power = (last.energy_j[0] - first.energy_j[0]) / seconds
    assert power == pytest.approx(0.005 * 3.3, rel=0.02)
    assert checksum_ok("P,1,2,1,3300,5000*" + "00") is None


def test_inameter_refuses_more_rails_than_channels(pty_fake):
    port = pty_fake("fake-inameter://?channels=1")
    with pytest.raises(MeterError, match="has 1 channel"):
        open_meter(port.path, "inameter", rails=["A", "B"])


def test_a_meter_that_is_not_there_says_so(pty_fake):
    port = pty_fake("fake-dut://ic01")  # a DUT, not a PPK2
    with pytest.raises(MeterError, match="no PPK2 metadata"):
        open_meter(port.path, "ppk2", metadata_timeout_s=0.5)
    with pytest.raises(ValueError, match="give its kind"):
        open_meter(port.path)
    assert guess_kind("fake-lpm01a://") == "lpm01a"
    assert guess_kind("hwgrep://1915:C00A") == "ppk2"


def test_meter_restarts_after_unplug(pty_fake):
    port = pty_fake(f"fake-ppk2://?{SQUARE}&replug_after_s=0.3")
    with open_meter(port.path, "ppk2", voltage_mv=3000) as meter:
        first, _ = stream(meter, 0.2)
        port.device.unplug()
        deadline = time.monotonic() + WAIT
        while meter.snapshot().restarts == 0:
            assert time.monotonic() < deadline, "the meter should come back and restart"
            time.sleep(0.05)
        before = meter.snapshot().samples
        assert meter.wait_until(time.monotonic_ns() + 100_000_000, WAIT)
        after = meter.snapshot()
    assert after.samples > before and after.gap_s > 0.2
