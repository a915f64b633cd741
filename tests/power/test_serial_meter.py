"""Serial meters as power sources: configuration, discovery without opening ports, the
sampler and the energy report over a fake PPK2 on a real pty (counter integration at the
meter's rate, within 0.5 % of the known profile), errors, power probe, a sampler process."""

from __future__ import annotations

import tempfile
import time

import numpy as np
import pytest

from firmware_bridge.fakes.profiles import SquareProfile
from firmware_bridge.fakes.pty_port import PtyPort
from firmware_bridge.fakes.registry import make_device
from power.boards import rail_policy
from power.discover import PowerOptions, discover, open_for_sampler, open_source
from power.probe import format_probe, probe
from power.report import energy_report
from power.sampler import ProcessSampler, ThreadSampler
from power.serial_meter import SerialMeterSource, meter_config

SQUARE = "profile=square&lo_ma=2&hi_ma=8&period_ms=40&duty=0.25"
PROFILE = SquareProfile(2.0, 8.0, 0.040, 0.25)


@pytest.fixture
def pty_meter():
    ports = []
    tmp = tempfile.mkdtemp(prefix="halofarm-meter-")

    def make(url: str) -> PtyPort:
        port = PtyPort(make_device(url), tmp, f"ttyMETER{len(ports)}").start()
        ports.append(port)
        return port

    yield make
    for port in ports:
        port.close()


def options(*meters) -> PowerOptions:
    return PowerOptions(
        sysfs_root="/nonexistent-sysfs", meters=tuple(meter_config(m) for m in meters)
    )


def test_config_is_validated_with_helpful_messages():
    ok = meter_config({"name": "dut", "kind": "ppk2", "url": "/dev/ttyACM0", "voltage_mv": 1800})
    assert ok.rail_names == ("VOUT",) and ok.driver_options()["voltage_mv"] == 1800
    ina = meter_config({"name": "m", "kind": "inameter", "url": "x", "rails": ["A", "B"]})
    assert ina.driver_options()["rails"] == ["A", "B"]
    for bad, message in [
        ({"name": "m", "kind": "ppk3", "url": "x"}, "kind: must be one of lpm01a, ppk2"),
        ({"name": "m", "kind": "ppk2"}, "'url' is required"),
        ({"name": "m", "kind": "ppk2", "url": "x", "volts": 3}, "unknown key"),
        (
            {"name": "m", "kind": "ppk2", "url": "x", "voltage_mv": "3V"},
            "voltage_mv: must be a int",
        ),
        ({"name": "m", "kind": "lpm01a", "url": "x", "rails": ["A", "B"]}, "has one channel"),
        ({"name": "m", "kind": "ppk2", "url": "x", "mode": "amps"}, "'source' or 'ampere'"),
        ({"name": "my meter", "kind": "ppk2", "url": "x"}, "source name --power takes"),
    ]:
        with pytest.raises(ValueError, match=message):
            meter_config(bad, "power.meters[0]")


def test_discover_lists_meters_without_opening_them(tmp_path):
    opts = options({"name": "dut", "kind": "ppk2", "url": str(tmp_path / "ttyGONE")})
    sources = discover(opts)
    assert [s.name for s in sources] == ["dut"]
    source = sources[0]
    assert source.kind == "serial-meter" and source._meter is None
    assert rail_policy(source.rail_names(), kind=source.kind).total == ("VOUT",)
    reading = source.read()  # now it tries, and says why it cannot
    assert reading.mw == [None] and "cannot open the ppk2" in reading.errors["VOUT"]
    assert "no such port" in reading.errors["VOUT"]
    source.close()


def test_energy_report_from_a_ppk2_within_half_a_percent(pty_meter):
    port = pty_meter(f"fake-ppk2://?{SQUARE}&noise=0.02&seed=7")
    opts = options({"name": "dut", "kind": "ppk2", "url": port.path, "voltage_mv": 2500})
    source, policy = open_source("auto", opts)  # a board without sensors: the meter is it
    assert isinstance(source, SerialMeterSource) and source.method == "measured"
    try:
        sampler = ThreadSampler(source, 0.01).start()
        time.sleep(0.3)
        start = time.monotonic_ns()
        time.sleep(1.0)
        end = time.monotonic_ns()
        time.sleep(0.3)
        log = sampler.stop()
        report = energy_report(log, source, policy, (start, end), inferences=10)
        meter = source._meter
        # The profile's exact energy over the same window, on the meter's clock.
        t0 = (start - meter.clock.offset_ns) / 1e9
        t1 = (end - meter.clock.offset_ns) / 1e9
        q = PROFILE.charge(np.array([t0, t1]))
        truth_mj = 2.5 * float(q[1] - q[0]) * 1e3
    finally:
        source.close()
    assert report["status"] == "ok" and report["integration"] == "counter"
    assert report["e_total_mj"] == pytest.approx(truth_mj, rel=0.005)
    assert report["source"]["device"]["kind"] == "ppk2"
    assert report["source"]["device"]["dropped_samples"] == 0
    assert "VOUT" in report["rails"] and report["rails"]["VOUT"]["energy_mj"] is not None


def test_a_meter_that_stops_sending_gives_rail_errors(pty_meter):
    port = pty_meter("fake-ppk2://?profile=const&ma=3&replug_after_s=60")
    config = meter_config({"name": "m", "kind": "ppk2", "url": port.path})
    source = SerialMeterSource(config, stall_s=0.3)
    try:
        assert source.read().errors == {}
        port.device.unplug()
        deadline = time.monotonic() + 10
        while True:
            reading = source.read()
            if reading.errors:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "no samples from the ppk2" in reading.errors["VOUT"]
        assert "disconnected" in reading.errors["VOUT"]
    finally:
        source.close()


def test_power_probe_lists_the_meter(pty_meter):
    port = pty_meter("fake-inameter://?profile=const&ma=4&channels=2")
    opts = options(
        {"name": "bench", "kind": "inameter", "url": port.path, "rails": ["VDD_DUT", "VDD_IO"]}
    )
    result = probe(opts, seconds=0.5)
    (src,) = result["sources"]
    assert src["name"] == "bench" and src["total"]["rails"] == ["VDD_DUT", "VDD_IO"]
    rails = {r["rail"]: r for r in src["rails"]}
    assert rails["VDD_DUT"]["mean_mw"] == pytest.approx(4 * 3.3, rel=0.05)
    assert "source bench (serial-meter, measured)" in format_probe(result)


def test_a_sampler_process_opens_the_meter_itself(pty_meter):
    port = pty_meter("fake-ppk2://?profile=const&ma=6")
    opts = options({"name": "dut", "kind": "ppk2", "url": port.path, "voltage_mv": 3000})
    parent, _ = open_source("dut", opts)  # never read: the port stays free for the child
    sampler = ProcessSampler(open_for_sampler, ("dut", opts), 0.01).start()
    time.sleep(1.5)  # the child opens the port on its first read, then streams
    log = sampler.stop()
    parent.close()
    times, counter = log.counter("VOUT")
    assert len(times) >= 2, log.errors
    mean_mw = (counter[-1] - counter[0]) / ((times[-1] - times[0]) / 1e9) / 1000.0
    assert mean_mw == pytest.approx(18.0, rel=0.01)
