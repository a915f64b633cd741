"""The learned optimizer's meta-parameters, initialisation, state and interface."""

from __future__ import annotations

import math

import numpy as np
import pytest

from halo.errors import ConfigError, ShapeError
from halo.optim import HierarchicalRNN, HRNNConfig, MetaLayout, init_meta

BLOCKS = {  # halo.md §2.5
    "gru0": 690,
    "bias0": 1260,
    "gru1": 2580,
    "bias1": 1260,
    "gru2": 2460,
    "init": 50,
    "readout": 47,
    "scalar": 2,
}


def test_meta_parameter_count_matches_halo_table() -> None:
    layout = MetaLayout(HRNNConfig())
    assert layout.size == 8349
    counts: dict = {}
    for name, (a, b, _) in layout.slices.items():
        block = name.split("/")[0].split("_")[0]
        counts[block] = counts.get(block, 0) + (b - a)
    assert counts == BLOCKS
    assert HRNNConfig().num_features == 12


def test_flat_vector_round_trip_and_views() -> None:
    config = HRNNConfig(cell_sizes=(4, 6, 5))
    layout = MetaLayout(config)
    flat = np.arange(layout.size, dtype=np.float64)
    tree = layout.unflatten(flat)
    assert np.shares_memory(tree["gru1/W_ru"], flat)
    np.testing.assert_array_equal(layout.flatten(tree), flat)
    population = np.stack([flat, -flat])
    pop_tree = layout.unflatten(population)
    assert pop_tree["gru0/W_c"].shape == (2,) + tree["gru0/W_c"].shape
    np.testing.assert_array_equal(layout.flatten(pop_tree, population=2), population)
    with pytest.raises(ShapeError, match="flat meta-parameter vector"):
        layout.unflatten(flat[:-1])


def test_initialisation_constants() -> None:
    config = HRNNConfig()
    tree = MetaLayout(config).unflatten(init_meta(config, seed=1))
    for level in ("gru0", "gru1", "gru2"):
        np.testing.assert_array_equal(tree[level + "/b_ru"], 2.2)
        np.testing.assert_array_equal(tree[level + "/b_c"], 0.0)
    assert tree["readout/b_scl_decay"][0] == 3.2 and tree["readout/b_inp_decay"][0] == 2.2
    assert tree["scalar/lr_momentum_logit"][0] == 3.2 and tree["scalar/step_offset"][0] == -1.0
    np.testing.assert_array_equal(tree["readout/w_lr"], 0.0)
    np.testing.assert_array_equal(tree["readout/b_lr"], 0.0)
    w = tree["gru1/W_ru"]  # 42 x 40 entries, std 0.5/sqrt(42)
    assert w.std() == pytest.approx(0.5 / math.sqrt(42), rel=0.1)
    assert abs(w.mean()) < 0.01
    assert tree["bias1_global/W"].std() == pytest.approx(0.5 / math.sqrt(20), rel=0.15)
    assert np.all(np.abs(tree["init/h1"]) <= 1.0)
    # Shortcut weights ~ N(1/4, 0.05): a positive multiple of the scaled gradients.
    assert np.all(np.abs(tree["readout/w_shortcut"] - 0.25) < 0.25)
    assert not np.array_equal(init_meta(config, seed=1), init_meta(config, seed=2))


def test_state_initialisation_and_first_step_features() -> None:
    opt = HierarchicalRNN(seed=0)
    rng = np.random.default_rng(0)
    params = [rng.normal(size=(40, 30)), rng.normal(size=30)]
    state = opt.init(params, rng=np.random.default_rng(1))
    lo, hi = math.log(1e-6), math.log(1e-2)
    for ts in state.tensors:
        assert lo <= ts.log_lr.min() and ts.log_lr.max() <= hi
        assert np.all(ts.inp_decay == 0) and np.all(ts.scl_decay == 0)
        np.testing.assert_array_equal(ts.h0[0, 5], opt.meta()["init/h0"][0])
    # The per-tensor offset makes tensors start at different mean learning rates.
    assert abs(state.tensors[0].log_lr.mean() - state.tensors[1].log_lr.mean()) > 0.05
    other = opt.init(params, rng=np.random.default_rng(2))
    assert not np.array_equal(other.tensors[0].log_lr, state.tensors[0].log_lr)
    grads = [rng.normal(size=p.shape) for p in params]
    _, new = opt.update(params, grads, state)
    ts = new.tensors[0]
    g = grads[0].ravel()
    for s in range(4):  # decays start at 0: every EMA is the raw gradient
        np.testing.assert_allclose(ts.gbar[s][0], g)
        np.testing.assert_allclose(ts.ms[s][0], g * g + 1e-12)
    # Learned decays after one step sit near sigmoid(3.2) and sigmoid(2.2).
    assert abs(ts.scl_decay.mean() - 1 / (1 + math.exp(-3.2))) < 0.1
    assert abs(ts.inp_decay.mean() - 1 / (1 + math.exp(-2.2))) < 0.1


def test_update_direction_is_rms_normalised_per_tensor() -> None:
    config = HRNNConfig(init_lr_range=(1e-2, 1e-2))
    opt = HierarchicalRNN(config)
    rng = np.random.default_rng(3)
    params = [rng.normal(size=50), rng.normal(size=7)]
    state = opt.init(params)
    for scale in (1e-4, 1e3):  # step size does not depend on the gradient's scale
        new, _ = opt.update(params, [scale * rng.normal(size=50), rng.normal(size=7)], state)
        delta = (params[0] - new[0]) / math.exp(math.log(1e-2) - 1.0)
        assert np.sqrt(np.mean(delta**2)) == pytest.approx(1.0, rel=1e-6)


def test_default_optimizer_descends_a_quadratic() -> None:
    opt = HierarchicalRNN(HRNNConfig(init_lr_range=(1e-1, 1e-1)))
    rng = np.random.default_rng(0)
    curv = [rng.uniform(0.5, 2.0, size=(6, 5)), rng.uniform(0.5, 2.0, size=5)]
    params = [rng.normal(size=(6, 5)), rng.normal(size=5)]
    state = opt.init(params)
    f0 = sum(float(np.sum(c * p * p)) for c, p in zip(curv, params))
    for _ in range(100):
        params, state = opt.update(params, [2 * c * p for c, p in zip(curv, params)], state)
    f = sum(float(np.sum(c * p * p)) for c, p in zip(curv, params))
    assert f < 0.05 * f0


def test_masked_tensor_is_frozen_and_dict_params_work() -> None:
    opt = HierarchicalRNN()
    params = {"w": np.ones((3, 2), dtype=np.float32), "b": np.zeros(2, dtype=np.float32)}
    state = opt.init(params)
    assert state.h2.dtype == np.float32
    grads = {"w": np.ones((3, 2), dtype=np.float32), "b": np.ones(2, dtype=np.float32)}
    new, new_state = opt.update(params, grads, state, mask={"w": False, "b": True})
    assert list(new) == ["w", "b"] and new["w"] is params["w"]
    assert new["b"].dtype == np.float32 and np.all(new["b"] < 0)
    assert new_state.tensors[0] is state.tensors[0]
    assert new_state.tensors[1] is not state.tensors[1]
    assert not np.array_equal(new_state.h2, state.h2)  # the global GRU advances every step


def test_float32_tracks_float64() -> None:
    opt = HierarchicalRNN(HRNNConfig(init_lr_range=(1e-2, 1e-1)))
    rng = np.random.default_rng(4)
    p64 = [rng.normal(size=(8, 4)), rng.normal(size=4)]
    p32 = [p.astype(np.float32) for p in p64]
    s64 = opt.init(p64, rng=np.random.default_rng(0))
    s32 = opt.init(p32, rng=np.random.default_rng(0))
    for _ in range(5):
        g = [rng.normal(size=p.shape) for p in p64]
        p64, s64 = opt.update(p64, g, s64)
        p32, s32 = opt.update(p32, [x.astype(np.float32) for x in g], s32)
    for a, b in zip(p32, p64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_set_flat_validates_and_changes_behaviour() -> None:
    opt = HierarchicalRNN(HRNNConfig(init_lr_range=(1e-2, 1e-2)))
    params = [np.ones(4)]
    grads = [np.array([1.0, -1.0, 0.5, 2.0])]
    before, _ = opt.update(params, grads, opt.init(params))
    flat = opt.get_flat()
    a, _, _ = opt.layout.slices["scalar/step_offset"]
    flat[a] += math.log(2.0)  # doubles every step
    opt.set_flat(flat)
    after, _ = opt.update(params, grads, opt.init(params))
    np.testing.assert_allclose(1 - after[0], 2 * (1 - before[0]), rtol=1e-9)
    with pytest.raises(ShapeError, match="8349"):
        opt.set_flat(flat[:10])
    flat[0] = np.nan
    with pytest.raises(ShapeError, match="non-finite"):
        opt.set_flat(flat)
    with pytest.raises(ConfigError, match="global_input"):
        HRNNConfig(global_input="first")


def test_cost_matches_halo_per_parameter_estimate() -> None:
    opt = HierarchicalRNN()
    big = opt.cost([100_000])
    per_param = big.macs / 100_000
    assert 660 + 44 <= per_param < 660 + 44 + 1  # level-0 GRU + readouts, tensor levels amortised
    assert big.state_floats // 100_000 == 21  # halo.md: ≈ 21 floats of state per parameter
    sparse = opt.cost([1000, 10, 1000, 10], [False, False, True, True])
    dense = opt.cost([1000, 10, 1000, 10])
    assert sparse.params_updated == 1010 and sparse.macs < 0.6 * dense.macs
