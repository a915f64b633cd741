"""The MCU benchmark end to end over ptys: windows, medians, energy from a meter sharing the
fake DUT's supply and timestamp GPIO, an unplug in the middle of a window, the mapping onto
the agent's result schema."""

from __future__ import annotations

import uuid

import pytest

from firmware_bridge import mcu_bench

INFER_US = 1500.0
ACTIVE_W = 0.012 * 3.3  # the fake board draws 12 mA while computing; meters supply 3.3 V


def test_probe_identifies_and_never_raises(pty_fake):
    dut = pty_fake("fake-dut://kws01?name=stm32l4")
    probe = mcu_bench.probe(dut.path)
    assert probe.error is None and probe.identity.model == "kws01"
    assert probe.to_dict()["identity"]["name"] == "stm32l4"
    meter = pty_fake("fake-lpm01a://")
    bad = mcu_bench.probe(meter.path, timeouts=mcu_bench.Timeouts(command_s=0.5))
    assert bad.identity is None and "no m-ready" in bad.error


def test_performance_mode_with_host_window_energy(pty_fake, board_name, tmp_path):
    dut = pty_fake(f"fake-dut://ic01?board={board_name}&infer_us={INFER_US}&jitter=0.01")
    meter = pty_fake(f"fake-ppk2://?board={board_name}")
    trace = tmp_path / "mcu.trace"
    result = mcu_bench.run(
        dut.path,
        meter_url=meter.path,
        meter_kind="ppk2",
        windows=3,
        min_window_s=0.3,
        input_data=bytes(range(100)),
        trace=str(trace),
    )
    assert result.status == "ok", result.reason
    assert [w.status for w in result.windows] == ["ok"] * 3
    assert all(w.timing == "laps" and w.elapsed_us >= 0.3e6 for w in result.windows)
    assert result.latency_us_median == pytest.approx(INFER_US, rel=0.05)
    assert result.first_inference_us is not None
    # The lap lines' arrival bounds the window on the host clock: some idle at the edges.
    assert result.energy_per_inference_uj_median == pytest.approx(ACTIVE_W * INFER_US, rel=0.05)
    assert {w.energy.method for w in result.windows} == {"host-window"}
    assert not result.rules_ok and "3 windows" in result.rules_notes[0]
    assert result.simulated is False  # ptys: the bridge cannot tell they are fakes
    assert "ppk2 rxn" in trace.read_text() and "dut tx b'infer" in trace.read_text()


def test_energy_mode_through_the_interface_board(pty_fake, board_name):
    iface = pty_fake(f"fake-iface://ic01?board={board_name}&infer_us={INFER_US}")
    meter = pty_fake(f"fake-ppk2://?board={board_name}&marker_pin=0")
    result = mcu_bench.run(
        iface.path,
        meter_url=meter.path,
        meter_kind="ppk2",
        interface=True,
        windows=2,
        min_window_s=0.3,
    )
    assert result.status == "ok", result.reason
    assert result.identity.timestamp_mode == "energy"
    for w in result.windows:
        assert w.timing == "meter-events" and w.energy.method == "meter-markers"
    # Between the two timestamp edges the DUT only computes: energy/inference is exact.
    assert result.latency_us_median == pytest.approx(INFER_US, rel=0.01)
    assert result.energy_per_inference_uj_median == pytest.approx(ACTIVE_W * INFER_US, rel=0.005)


def test_energy_mode_without_a_meter_explains(pty_fake):
    dut = pty_fake("fake-dut://ic01?energy=1")
    result = mcu_bench.run(dut.path, windows=1, min_window_s=0.1)
    assert result.status == "failed"
    assert "needs a meter with its timestamp GPIO wired" in result.reason


def test_unplug_mid_window_fails_that_window_only(pty_fake):
    # Calibration is infer #1 and #2; windows are #3, #4, #5: unplug halfway through #4.
    dut = pty_fake(f"fake-dut://ic01?infer_us={INFER_US}&unplug_at=infer:4&replug_after_s=0.5")
    result = mcu_bench.run(dut.path, windows=3, min_window_s=0.3, input_data=b"\x01" * 40)
    assert [w.status for w in result.windows] == ["ok", "failed", "ok"]
    assert "DeviceDisconnected" in result.windows[1].reason
    assert result.status == "ok" and "window 1" in result.reason
    assert "1 window(s) failed" in result.rules_notes
    # After the replug the DUT was identified again and the input loaded again.
    assert dut.device.boots == 2
    assert dut.device.commands.count("db load 40") == 2
    assert result.windows[2].latency_us == pytest.approx(INFER_US, rel=0.05)


def test_result_maps_onto_the_agent_schema(fake_url):
    from agent.bench.stats import compute_stats
    from protocol.bodies import BenchResult, BenchSpec

    result = mcu_bench.run(fake_url("fake-dut://ic01", infer_us=500), windows=2, min_window_s=0.2)
    fields = result.bench_fields()
    identity = result.identity
    spec = BenchSpec(model_sha256=mcu_bench.identity_sha256(identity), model_name=identity.model)
    body = BenchResult(
        result_id=uuid.uuid4().hex,
        job_id="mcu-1",
        cmd_id=uuid.uuid4().hex,
        status=fields["status"],
        reason=fields["reason"],
        spec=spec,
        model_bytes=fields["model_bytes"],
        runtime=fields["runtime"],
        runtime_version=fields["runtime_version"],
        init_ns=fields["init_ns"],
        first_ns=fields["first_ns"],
        warmup_count=fields["warmup_count"],
        warmup_mean_ns=fields["warmup_mean_ns"],
        stats=compute_stats(fields["raw_ns"]),
        raw_ns=None,
        env_pre={"mcu": fields["mcu"]},
        env_post={},
        ops=fields["ops"],
        delegated=fields["delegated"],
        peak_rss_bytes=fields["peak_rss_bytes"],
        started_at=fields["started_at"],
        finished_at=fields["finished_at"],
        energy=fields["energy"],
    )
    body.validate()
    assert body.stats.count == 2 and body.stats.p50 == pytest.approx(500_000, rel=0.05)
    assert fields["mcu"]["simulated"] is True and fields["runtime"] == "mlperf-tiny-dut"


def test_dut_resource_from_config():
    from firmware_bridge.resources import dut_resource

    dut = dut_resource({"name": "l4r5", "url": "/dev/ttyACM0", "interface": True, "settle_s": 2})
    assert dut.interface and dut.port.settle_s == 2.0 and dut.port.settings().baudrate == 115200
    with pytest.raises(ValueError, match="mcu.duts.baudrate: must be a int"):
        dut_resource({"name": "x", "url": "u", "baudrate": "fast"})
    with pytest.raises(ValueError, match="'url' is required"):
        dut_resource({"name": "x"})
