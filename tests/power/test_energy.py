"""Energy integration (power.energy) and the energy report (power.report) on exact series."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from power import energy
from power.boards import RailPolicy
from power.report import energy_report, total_series
from power.sampler import SampleLog
from power.source import PowerSource, Rail, Reading

S = 1_000_000_000  # ns per second


def test_trapezoid_constant_and_ramp_are_exact():
    t = [0, S, 2 * S, 3 * S]
    assert energy.trapezoid_mj(t, [5000.0] * 4, 0, 3 * S) == pytest.approx(15000.0)
    ramp = [0.0, 1000.0, 2000.0, 3000.0]  # mW rising 1000 mW/s: integral over 0..3 s = 4500 mJ
    assert energy.trapezoid_mj(t, ramp, 0, 3 * S) == pytest.approx(4500.0)


def test_trapezoid_is_clipped_to_the_window_by_interpolation():
    t = [0, S, 2 * S]
    ramp = [0.0, 1000.0, 2000.0]
    # 0.5 s .. 1.5 s of a ramp 500 -> 1500 mW: mean 1000 mW x 1 s.
    assert energy.trapezoid_mj(t, ramp, S // 2, 3 * S // 2) == pytest.approx(1000.0)
    assert energy.interpolate(t, ramp, S // 4) == pytest.approx(250.0)


def test_window_not_covered_is_an_error_not_a_guess():
    t = [S, 2 * S]
    with pytest.raises(energy.NotEnoughSamples, match="do not span"):
        energy.trapezoid_mj(t, [1.0, 1.0], 0, 2 * S)
    with pytest.raises(energy.NotEnoughSamples):
        energy.trapezoid_mj([S], [1.0], S, S + 1)
    with pytest.raises(ValueError, match="empty window"):
        energy.trapezoid_mj(t, [1.0, 1.0], 2 * S, S)


def test_mean_power_uses_samples_strictly_inside():
    t = [0, S, 2 * S, 3 * S]
    mean, n = energy.mean_power(t, [100.0, 200.0, 300.0, 400.0], 0, 3 * S)
    assert (mean, n) == (250.0, 2)
    assert energy.mean_power(t, [1.0] * 4, S, S + 10) == (None, 0)


def test_counter_energy_interpolates_the_counter():
    t = [0, S, 2 * S]
    uj = [0.0, 2_000_000.0, 4_000_000.0]  # 2 J per second = 2000 mW
    assert energy.counter_mj(t, uj, S // 2, 3 * S // 2) == pytest.approx(2000.0)


def test_baseline_mean_and_std():
    t = [0, 1, 2, 3, 4]
    mean, std, n = energy.baseline(t, [0.0, 10.0, 20.0, 30.0, 0.0], 0, 4)
    assert (mean, n) == (20.0, 3)
    assert std == pytest.approx(10.0)
    assert energy.baseline(t, [1.0] * 5, 10, 20) == (None, None, 0)


def test_cross_check_flags_more_than_one_percent():
    assert energy.cross_check(1000.0, 100.0, 10.0)["flagged"] is False
    assert energy.cross_check(1000.0, 102.0, 10.0)["flagged"] is True
    assert energy.cross_check(1000.0, None, 10.0)["flagged"] is True


@given(
    st.lists(st.floats(0.0, 1e5), min_size=2, max_size=40),
    st.integers(1, 10_000_000),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
)
def test_trapezoid_matches_exact_integral_of_the_piecewise_linear_series(values, step, a, b):
    t = [i * step for i in range(len(values))]
    lo, hi = sorted((a * t[-1], b * t[-1]))
    start, end = int(lo), int(hi)
    if end <= start:
        return
    # Exact integral of the piecewise-linear interpolant, by fine Riemann-free evaluation at
    # every breakpoint inside the window.
    points = [start] + [x for x in t if start < x < end] + [end]
    exact = 0.0
    for p, q in zip(points, points[1:]):
        exact += (
            0.5 * (energy.interpolate(t, values, p) + energy.interpolate(t, values, q)) * (q - p)
        )
    got = energy.trapezoid_mj(t, values, start, end)
    assert math.isclose(got, exact / 1e9, rel_tol=1e-9, abs_tol=1e-9)


# --- the report ---


class _Fixed(PowerSource):
    kind = "test"
    name = "fixed"
    method = "simulated"

    def __init__(self, rails):
        self.rails = rails


def _log(rails, rows, period_ns=10_000_000):
    log = SampleLog(rails, period_ns)
    for t, values in rows:
        log.add(Reading(t, 1000, list(values)))
    return log


def test_report_total_rail_energy_idle_and_per_inference():
    rails = [Rail("VDD_IN", "0-0041/ch0"), Rail("VDD_SYS_CPU", "0-0041/ch1")]
    # idle 2000 mW for 0..1 s, then 5000 mW for 1..3 s; sub-rail never added.
    rows = [(i * S // 100, (2000.0 if i <= 100 else 5000.0, 999.0)) for i in range(0, 301)]
    log = _log(rails, rows)
    policy = RailPolicy(("VDD_IN",), "parent rail VDD_IN")
    report = energy_report(
        log, _Fixed(rails), policy, window=(S + S // 10, 3 * S), inferences=100, idle=(0, S)
    )
    assert report["status"] == "ok" and report["method"] == "simulated"
    seconds = 1.9
    assert report["e_total_mj"] == pytest.approx(5000.0 * seconds)
    assert report["e_per_inference_mj"] == pytest.approx(5000.0 * seconds / 100)
    assert report["idle"]["p_mean_mw"] == pytest.approx(2000.0)
    assert report["e_dynamic_mj"] == pytest.approx(3000.0 * seconds)
    assert report["e_dyn_per_inference_mj"] == pytest.approx(3000.0 * seconds / 100)
    assert report["integration_check"]["flagged"] is False
    assert report["rails"]["VDD_SYS_CPU"]["mean_mw"] == 999.0
    assert report["total"]["rails"] == ["VDD_IN"]
    # the plotted trace: idle first (t < 0), then the window; bins averaged, never invented
    trace = report["trace"]
    assert 0 < len(trace["t_s"]) == len(trace["total_mw"]) <= 400
    assert trace["t_s"] == sorted(trace["t_s"])
    assert trace["t_s"][0] < 0 < trace["t_s"][-1] <= 1.9
    idle_part = [v for t, v in zip(trace["t_s"], trace["total_mw"]) if t < -0.15]
    busy_part = [v for t, v in zip(trace["t_s"], trace["total_mw"]) if t > 0]
    assert set(idle_part) == {2000.0} and set(busy_part) == {5000.0}


def test_report_leaves_out_samples_missing_a_total_rail():
    rails = [Rail("GPU", "a"), Rail("CPU", "b")]
    rows = [(i * S // 10, (1000.0, None if i == 5 else 500.0)) for i in range(11)]
    log = _log(rails, rows)
    times, values, missing = total_series(log, ("GPU", "CPU"))
    assert missing == 1 and len(times) == 10 and set(values) == {1500.0}
    report = energy_report(log, _Fixed(rails), RailPolicy(("GPU", "CPU"), "sum"), (0, S), 10)
    assert report["e_total_mj"] == pytest.approx(1500.0)
    assert report["sampler"]["total_samples_missing"] == 1


def test_report_without_total_rule_says_so():
    rails = [Rail("1-0040/in1", "1-0040/in1", "vi")]
    log = _log(rails, [(0, (1.0,)), (S, (1.0,))])
    report = energy_report(log, _Fixed(rails), RailPolicy((), "none: unknown"), (0, S), 1)
    assert report["status"] == "no-total" and "unknown" in report["reason"]
    assert report["rails"]["1-0040/in1"]["energy_mj"] == pytest.approx(1.0)


def test_report_counter_rails_use_the_counter():
    rails = [Rail("package-0", "intel-rapl:0", "energy")]
    log = SampleLog(rails, 10_000_000)
    for i in range(11):
        log.add(Reading(i * S // 10, 10, [None if i == 0 else 3000.0], uj=[i * 300_000.0]))
    report = energy_report(log, _Fixed(rails), RailPolicy(("package-0",), "rapl"), (0, S), 3)
    assert report["integration"] == "counter"
    assert report["e_total_mj"] == pytest.approx(3000.0)
