"""The vectorised learned optimizer equals the element-by-element reference of halo.md §2.3."""

from __future__ import annotations

import numpy as np
import pytest

from halo.optim import HierarchicalRNN
from halo.optim.hrnn import HRNNState, TensorState, init_state, step
from halo.optim.hrnn_config import HRNNConfig
from tests.halo.hrnn_reference import as_lists, reference_step, state_to_lists

SHAPES = [(3, 4), (4,), (2, 3, 2), (5,)]
# Includes steps where the last tensor is skipped (the "last" global input then reads a carried
# state) and a step where nothing is updated.
MASKS = [
    [True, True, True, True],
    [True, False, True, False],
    [False, False, False, False],
    [False, True, False, True],
    [True, True, False, True],
    [True, True, True, True],
]


def perturbed(config: HRNNConfig, seed: int, scale: float = 0.3) -> HierarchicalRNN:
    """An optimizer away from its initialisation, so every weight (w_lr = 0 at init) matters."""
    opt = HierarchicalRNN(config, seed=seed)
    rng = np.random.default_rng(seed + 1000)
    opt.set_flat(opt.get_flat() + rng.normal(0.0, scale, size=opt.n_meta))
    return opt


def assert_states_close(state: HRNNState, ref: dict, atol: float) -> None:
    got = state_to_lists(state)
    np.testing.assert_allclose(got["h2"], ref["h2"], rtol=0, atol=atol)
    for a, b in zip(got["tensors"], ref["tensors"]):
        for key in ("h0", "gbar", "ms", "beta", "gamma", "ll", "h1"):
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol, err_msg=key)


@pytest.mark.parametrize("global_input", ["last", "mean"])
@pytest.mark.parametrize("masked", [False, True])
def test_vectorised_matches_reference(global_input: str, masked: bool) -> None:
    # Larger initial learning rates than HALO's (1e-6, 1e-2) make parameter steps ~0.1, so a
    # wrong direction could not hide under the tolerance.
    config = HRNNConfig(global_input=global_input, init_lr_range=(1e-2, 1.0))
    opt = perturbed(config, seed=3)
    rng = np.random.default_rng(11)
    params = [rng.normal(size=s) for s in SHAPES]
    state = opt.init(params, rng=np.random.default_rng(5))
    ref_params = [p.ravel().tolist() for p in params]
    ref_state = state_to_lists(state)
    meta = as_lists(opt.meta(np.float64))
    for k, mask in enumerate(MASKS):
        mask = mask if masked else [True] * len(SHAPES)
        # Gradient scales spanning 1e-3..10 exercise the mean-square normalisation.
        grads = [rng.normal(size=s) * 10.0 ** rng.uniform(-3, 1) for s in SHAPES]
        # Skipped tensors need no gradient at all.
        given = [g if m else None for g, m in zip(grads, mask)]
        params, state = opt.update(params, given, state, mask)
        ref_params, ref_state = reference_step(
            meta,
            ref_params,
            [g.ravel().tolist() for g in grads],
            ref_state,
            mask,
            global_input=global_input,
        )
        for p, r in zip(params, ref_params):
            np.testing.assert_allclose(p.ravel(), r, rtol=0, atol=1e-10, err_msg=f"step {k}")
        assert_states_close(state, ref_state, atol=1e-10)
    assert state.step == len(MASKS)


def test_clipped_log_learning_rate_matches_reference() -> None:
    config = HRNNConfig(max_log_lr=-4.0)
    opt = perturbed(config, seed=4, scale=0.1)
    flat = opt.get_flat()
    a, _, _ = opt.layout.slices["readout/b_lr"]
    flat[a] = 3.0  # push every step's log-lr above the clip
    opt.set_flat(flat)
    rng = np.random.default_rng(2)
    params = [rng.normal(size=s) for s in SHAPES[:2]]
    state = opt.init(params, rng=np.random.default_rng(1))
    ref_params, ref_state = [p.ravel().tolist() for p in params], state_to_lists(state)
    meta = as_lists(opt.meta(np.float64))
    for _ in range(3):
        grads = [rng.normal(size=p.shape) for p in params]
        params, state = opt.update(params, grads, state)
        ref_params, ref_state = reference_step(
            meta,
            ref_params,
            [g.ravel().tolist() for g in grads],
            ref_state,
            [True, True],
            max_log_lr=-4.0,
        )
        for p, r in zip(params, ref_params):
            np.testing.assert_allclose(p.ravel(), r, rtol=0, atol=1e-10)
        assert_states_close(state, ref_state, atol=1e-10)
    # The stored log-lr moves towards the clip with momentum, never past it.
    assert all(ts.log_lr.max() <= -4.0 + 1e-12 for ts in state.tensors)


def _member(state: HRNNState, k: int) -> HRNNState:
    def row(a: np.ndarray) -> np.ndarray:
        return a[k : k + 1].copy()

    tensors = [
        TensorState(
            row(t.h0),
            [row(g) for g in t.gbar],
            [row(m) for m in t.ms],
            row(t.inp_decay),
            row(t.scl_decay),
            row(t.log_lr),
            row(t.h1),
        )
        for t in state.tensors
    ]
    return HRNNState(tensors, row(state.h2), state.shapes, state.step)


def test_population_rows_match_single_optimizers() -> None:
    config = HRNNConfig(global_input="mean")
    opts = [perturbed(config, seed=s) for s in range(3)]
    meta = opts[0].population_meta(np.stack([o.get_flat() for o in opts]))
    rng = np.random.default_rng(9)
    shapes = SHAPES[:3]
    sizes = [int(np.prod(s)) for s in shapes]
    thetas = [rng.normal(size=(3, n)) for n in sizes]
    pop_state = init_state(meta, config, shapes, 3, np.random.default_rng(0))
    singles = [
        ([thetas[j][k].reshape(shapes[j]) for j in range(3)], _member(pop_state, k))
        for k in range(3)
    ]
    for _ in range(4):
        grads = [rng.normal(size=(3, n)) for n in sizes]
        active = rng.random((3, 3)) < 0.7
        thetas, pop_state = step(meta, config, thetas, grads, pop_state, active)
        for k, opt in enumerate(opts):
            params, st = singles[k]
            g = [grads[j][k].reshape(shapes[j]) for j in range(3)]
            singles[k] = opt.update(params, g, st, list(active[k]))
    for k in range(3):
        params, st = singles[k]
        for j in range(3):
            np.testing.assert_allclose(thetas[j][k], params[j].ravel(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(pop_state.h2[k], st.h2[0], rtol=0, atol=1e-12)
