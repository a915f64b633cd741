"""Layer-wise stochastic update sparsity: schedules, assignment, draws."""

from __future__ import annotations

import numpy as np
import pytest

from halo.errors import ConfigError
from halo.sparsity import SparsitySchedule

MLP_LAYERS = [0, 0, 1, 1, 2, 2]  # W1 b1 W2 b2 W3 b3


def test_parse_and_validate() -> None:
    assert SparsitySchedule.parse("0.1,0.3,0.5").probs == (0.1, 0.3, 0.5)
    assert SparsitySchedule.parse(" 0.1 0.3  0.5 ").probs == (0.1, 0.3, 0.5)
    assert SparsitySchedule.parse("1.0").dense
    with pytest.raises(ConfigError, match="update probabilities"):
        SparsitySchedule.parse("0.1,1.5")
    with pytest.raises(ConfigError, match="not a list of numbers"):
        SparsitySchedule.parse("low,high")
    with pytest.raises(ConfigError, match="unit"):
        SparsitySchedule((0.5,), unit="filter")


def test_contiguous_thirds_match_halo_expand_list() -> None:
    sched = SparsitySchedule.parse("0.1,0.3,0.5")
    np.testing.assert_allclose(sched.tensor_probs(MLP_LAYERS), [0.1, 0.1, 0.3, 0.3, 0.5, 0.5])
    # Layer units: three layers, one probability each, shared by W and b.
    layer = SparsitySchedule.parse("0.1,0.3,0.5", unit="layer")
    np.testing.assert_allclose(layer.tensor_probs(MLP_LAYERS), [0.1, 0.1, 0.3, 0.3, 0.5, 0.5])
    # Interleaved (released meta-training code): cycled over tensors.
    inter = SparsitySchedule.parse("0.1,0.3,0.5", assignment="interleaved")
    np.testing.assert_allclose(inter.tensor_probs(MLP_LAYERS), [0.1, 0.3, 0.5, 0.1, 0.3, 0.5])
    # Depth bands by unit centre: 4 units, 3 bands -> first, middle, middle, last.
    np.testing.assert_allclose(sched.unit_probs(4), [0.1, 0.3, 0.3, 0.5])
    # More entries than units never drops the last band entirely for 2 units.
    np.testing.assert_allclose(sched.unit_probs(2), [0.1, 0.5])


def test_draws_are_seeded_and_have_the_scheduled_frequencies() -> None:
    sched = SparsitySchedule.parse("0.1,0.3,0.5")

    def sequence(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return np.array([sched.draw(MLP_LAYERS, rng) for _ in range(50)])

    np.testing.assert_array_equal(sequence(7), sequence(7))
    assert not np.array_equal(sequence(7), sequence(8))
    rng = np.random.default_rng(0)
    masks = np.array([sched.draw(MLP_LAYERS, rng) for _ in range(20000)])
    np.testing.assert_allclose(masks.mean(axis=0), [0.1, 0.1, 0.3, 0.3, 0.5, 0.5], atol=0.015)
    # Tensor units: W and b of one layer draw independently.
    both = np.mean(masks[:, 4] & masks[:, 5])
    assert both == pytest.approx(0.25, abs=0.015)


def test_layer_units_share_one_draw_and_predict_no_backward_probability() -> None:
    sched = SparsitySchedule.parse("0.1,0.3,0.5", unit="layer")
    rng = np.random.default_rng(1)
    masks = np.array([sched.draw(MLP_LAYERS, rng) for _ in range(20000)])
    np.testing.assert_array_equal(masks[:, 0], masks[:, 1])
    np.testing.assert_array_equal(masks[:, 4], masks[:, 5])
    # halo.md §4: with a shared draw P(no backward) = 0.9 * 0.7 * 0.5 = 0.315.
    assert sched.p_no_backward(MLP_LAYERS) == pytest.approx(0.315)
    assert np.mean(~masks.any(axis=1)) == pytest.approx(0.315, abs=0.015)
    separate = SparsitySchedule.parse("0.1,0.3,0.5")
    assert separate.p_no_backward(MLP_LAYERS) == pytest.approx(0.315**2)


def test_edge_probabilities_are_exact() -> None:
    rng = np.random.default_rng(2)
    for _ in range(100):
        assert SparsitySchedule((1.0,)).draw(MLP_LAYERS, rng).all()
        assert not SparsitySchedule((0.0,)).draw(MLP_LAYERS, rng).any()
