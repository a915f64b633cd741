"""The energy account: work counted from real adaptation steps, joules from per-board
constants, sparse steps cheaper than dense ones, and calibration that recovers constants."""

from __future__ import annotations

import json

import numpy as np
import pytest

from halo.adapt import AdaptSettings, run_adaptation
from halo.calibrate import calibrate
from halo.energy import (
    BOARDS,
    UNITS,
    EnergyConstants,
    EnergyConstantsError,
    Work,
    board_seconds,
    cumulative_j,
    first_reaching,
    fit_nonnegative,
    model_report,
    run_work,
)
from halo.optim import Adam, HierarchicalRNN
from halo.sparsity import SparsitySchedule
from halo.tasks import DriftSettings, drift_task


@pytest.fixture(scope="module")
def runs():
    task = drift_task(DriftSettings(seed=3))
    net = task.optimizee()
    params = net.init(0)
    settings = AdaptSettings(steps=40, seed=1)
    out = {}
    for name, opt, sparsity in (
        ("halo", HierarchicalRNN(), None),
        ("halo-sparse", HierarchicalRNN(), SparsitySchedule.parse("0.1,0.3,0.5")),
        ("adam", Adam(), None),
    ):
        _, result = run_adaptation(net, params, opt, task.target, settings, sparsity)
        out[name] = (result, run_work(net, result.steps))
    return net, out


def _sum(works):
    total = Work()
    for w in works:
        total = total + w
    return total


def test_energy_is_work_times_constants() -> None:
    c = EnergyConstants.for_board("rpi4")
    spec = BOARDS["rpi4"]
    assert c.joules["mac"] == pytest.approx(spec.core_w * board_seconds(spec)["mac"])
    w = Work(mac=1e6, op=2e5, transcendental=1e4, byte=3e6, call=500)
    dynamic = sum(getattr(w, u) * c.joules[u] for u in UNITS)
    seconds = sum(getattr(w, u) * c.seconds[u] for u in UNITS)
    assert c.dynamic_j(w) == pytest.approx(dynamic)
    assert c.total_j(w) == pytest.approx(dynamic + spec.idle_w * seconds)
    assert cumulative_j(c, [w, w]) == pytest.approx([0.0, c.total_j(w), 2 * c.total_j(w)])
    with pytest.raises(EnergyConstantsError, match="unknown board"):
        EnergyConstants.for_board("cray-1")


def test_sparse_steps_do_less_work_and_cost_less(runs) -> None:
    net, out = runs
    dense, sparse, adam = (_sum(out[k][1]) for k in ("halo", "halo-sparse", "adam"))
    dense_res, sparse_res = out["halo"][0], out["halo-sparse"][0]
    # The same forward passes; the backward pass, the optimizer and its calls shrink.
    assert sparse_res.macs_forward == dense_res.macs_forward
    assert sparse.mac < dense.mac and sparse.call < dense.call and sparse.byte < dense.byte
    assert sparse.transcendental < 0.6 * dense.transcendental
    c = EnergyConstants.for_board("rpi4")
    saving = 1 - c.total_j(sparse) / c.total_j(dense)
    assert saving > 0.3
    # The learned optimizer costs more per step than Adam (halo.md §9: 1x to 3.75x).
    assert c.total_j(dense) > 2 * c.total_j(adam)
    report = model_report(c, out["halo"][1])
    assert report["method"] == "model" and report["constants"]["label"] == "estimate"
    assert report["per_step_j"] == pytest.approx(report["total_j"] / 40)
    assert sum(report["dynamic_share"].values()) == pytest.approx(1.0)


def test_fit_recovers_constants_from_synthetic_measurements() -> None:
    truth = np.array([6e-10, 3e-10, 1.2e-8, 2.3e-10, 8e-6])
    rows = np.array(
        [  # kernels dominated by one unit each, plus an adaptation-like mix
            [8.4e8, 0, 0, 0, 8],
            [0, 2.6e8, 0, 0, 16],
            [0, 0, 1.3e7, 0, 8],
            [0, 0, 0, 1.1e10, 1],
            [3e8, 5e7, 1.5e7, 2e8, 5e4],
        ]
    )
    noise = np.random.default_rng(0).normal(1.0, 0.01, len(rows))
    fitted = np.array(fit_nonnegative(rows, rows @ truth * noise))
    np.testing.assert_allclose(fitted, truth, rtol=0.05)
    assert (np.array(fit_nonnegative(rows, rows @ truth)) >= 0).all()


def test_constants_round_trip_and_bad_files(tmp_path) -> None:
    c = EnergyConstants.for_board("orin-nx")
    path = c.save(tmp_path / "c.json")
    assert EnergyConstants.load(path) == c
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(EnergyConstantsError, match="not a halofarm-energy-constants"):
        EnergyConstants.load(tmp_path / "bad.json")
    with pytest.raises(EnergyConstantsError, match="cannot read"):
        EnergyConstants.load(tmp_path / "missing.json")
    data = c.to_json()
    data["joules"]["mac"] = -1
    (tmp_path / "neg.json").write_text(json.dumps(data))
    with pytest.raises(EnergyConstantsError, match=">= 0"):
        EnergyConstants.load(tmp_path / "neg.json")


def test_time_calibration_fits_this_machine_and_checks_itself(tmp_path) -> None:
    base = EnergyConstants.for_board("generic")
    result = calibrate(base, seconds=0.05)
    c = result.constants
    assert c.origin == "calibrated-time" and "no power source" in c.calibration["note"]
    assert c.seconds["call"] > 0 and c.seconds["mac"] > 0
    assert c.joules["call"] == pytest.approx(base.core_w * c.seconds["call"])
    (check,) = result.checks
    assert check["name"].startswith("halo adaptation") and check["measured_s"] > 0
    # The fit explains its own workloads closely; the held-out HALO run within a factor 3.
    for run in result.runs:
        assert c.time_s(run.work) == pytest.approx(run.seconds, rel=0.5)
    assert 1 / 3 < check["model_s"] / check["measured_s"] < 3


def test_calibration_with_an_energy_source_fits_joules() -> None:
    """A stand-in meter that reports 2 W of dynamic power for every window: the fitted
    constants must then give 2 W x the fitted seconds."""
    base = EnergyConstants.for_board("generic")

    def factory():
        return lambda t0, t1: 2.0 * (t1 - t0) / 1e9

    c = calibrate(base, seconds=0.05, energy_of_factory=factory).constants
    assert c.origin == "calibrated-energy"
    assert c.core_w == pytest.approx(2.0, rel=0.2)
    for unit in UNITS:
        if c.seconds[unit] > 0 and c.joules[unit] > 0:
            assert c.joules[unit] / c.seconds[unit] == pytest.approx(2.0, rel=0.5)


def test_first_reaching() -> None:
    assert first_reaching([0.1, 0.5, 0.9], [0, 10, 20], 0.5) == 10
    assert first_reaching([0.1, 0.5], [0, 10], 0.95) is None
