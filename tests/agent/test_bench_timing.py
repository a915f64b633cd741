"""The benchmark_model timing loop against a simulated clock: time passes only inside invoke(),
so run counts follow from the plan exactly, whatever the machine's speed."""

from __future__ import annotations

import pytest

from agent.bench.timing import MAX_RUNS, NS_PER_S, TimingPlan, run_timing

MS = 1_000_000


class SimulatedModel:
    """A clock plus an invoke() that advances it by the next latency (the last one repeats)."""

    def __init__(self, *latencies_ns: int) -> None:
        self.now = 0
        self.latencies = list(latencies_ns)
        self.calls = 0

    def clock(self) -> int:
        return self.now

    def invoke(self) -> None:
        self.now += self.latencies[min(self.calls, len(self.latencies) - 1)]
        self.calls += 1


def plan(**kw) -> TimingPlan:
    base = dict(warmup_runs=0, warmup_seconds=0.0, min_runs=1, min_seconds=0.0, max_seconds=150.0)
    base.update(kw)
    return TimingPlan(**base)


def test_min_runs_bound_when_runs_are_slow_enough():
    model = SimulatedModel(MS)
    t = run_timing(model.invoke, plan(min_runs=10, min_seconds=0.005), clock=model.clock)
    assert len(t.raw_ns) == 10  # 10 ms of runs already covers the 5 ms minimum
    assert t.raw_ns == [MS] * 10
    assert t.warmup_count == 0 and t.warmup_mean_ns is None
    assert model.calls == 1 + 10  # first inference + measured runs


def test_min_seconds_bound_when_runs_are_fast():
    model = SimulatedModel(MS)
    t = run_timing(model.invoke, plan(min_runs=5, min_seconds=0.1), clock=model.clock)
    assert len(t.raw_ns) == 100  # runs until 100 ms have passed
    assert sum(t.raw_ns) >= 0.1 * NS_PER_S


def test_max_seconds_stops_starting_runs():
    model = SimulatedModel(MS)
    t = run_timing(
        model.invoke, plan(min_runs=1000, min_seconds=1.0, max_seconds=0.05), clock=model.clock
    )
    n = len(t.raw_ns)
    assert n < 1000
    # benchmark_model starts no run once elapsed > max_secs: the last one began at <= 50 ms.
    assert 0.05 * NS_PER_S <= n * MS <= 0.05 * NS_PER_S + MS


def test_measured_runs_capped_at_max_runs():
    model = SimulatedModel(1000)
    t = run_timing(model.invoke, plan(min_runs=5, min_seconds=10.0, max_runs=20), clock=model.clock)
    assert len(t.raw_ns) == 20


def test_first_inference_is_timed_on_its_own():
    model = SimulatedModel(7 * MS, 2 * MS, MS)
    t = run_timing(model.invoke, plan(warmup_runs=1, min_runs=3), clock=model.clock)
    assert t.first_ns == 7 * MS
    assert t.warmup_count == 1 and t.warmup_mean_ns == 2 * MS
    assert t.raw_ns == [MS, MS, MS]


@pytest.mark.parametrize(
    "runs, seconds, expected",
    [(3, 0.0, 3), (3, 0.01, 10), (20, 0.01, 20), (0, 0.0, 0)],
)
def test_warmup_needs_both_runs_and_seconds(runs, seconds, expected):
    model = SimulatedModel(MS)
    t = run_timing(model.invoke, plan(warmup_runs=runs, warmup_seconds=seconds), clock=model.clock)
    assert t.warmup_count == expected
    assert t.warmup_mean_ns == (MS if expected else None)


def test_warmup_is_capped_by_max_seconds_too():
    model = SimulatedModel(MS)
    t = run_timing(
        model.invoke, plan(warmup_runs=10**6, max_seconds=0.02, min_seconds=0.0), clock=model.clock
    )
    assert 20 <= t.warmup_count <= 21


def test_progress_reported_per_phase_at_most_once_per_second():
    model = SimulatedModel(300 * MS)
    seen = []
    run_timing(
        model.invoke,
        plan(warmup_runs=2, min_runs=1, min_seconds=3.0),
        clock=model.clock,
        on_progress=lambda phase, done: seen.append((phase, done, model.now)),
    )
    phases = [p for p, _, _ in seen]
    assert phases[0] == "warmup" and "measure" in phases
    assert phases == sorted(phases, key=["warmup", "measure"].index)
    measure = [(done, now) for p, done, now in seen if p == "measure"]
    assert measure[0][0] == 0
    assert [d for d, _ in measure] == sorted(d for d, _ in measure)
    gaps = [b - a for (_, a), (_, b) in zip(measure[1:], measure[2:])]
    assert gaps and all(g >= NS_PER_S for g in gaps)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"min_runs": 0}, "min_runs"),
        ({"max_seconds": 0.0}, "max_seconds"),
        ({"warmup_runs": -1}, "warmup_runs"),
        ({"min_seconds": -1.0}, "min_seconds"),
        ({"min_runs": MAX_RUNS + 1}, "limit"),
    ],
)
def test_plan_rejects_impossible_settings(kw, message):
    with pytest.raises(ValueError, match=message):
        plan(**kw)


def test_real_clock_smoke():
    calls = []
    t = run_timing(lambda: calls.append(1), plan(min_runs=5))
    assert len(t.raw_ns) == 5 and all(ns >= 0 for ns in t.raw_ns)
    assert len(calls) == 6
