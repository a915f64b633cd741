"""HALO's gradient-norm regularizer: sum (paper) vs mean (released code)."""

from __future__ import annotations

import numpy as np
import pytest

from halo.errors import ConfigError
from halo.regularizer import GradNormPenalty, squared_grad_norm


def test_sum_and_mean_reductions() -> None:
    grads = [np.array([[1.0, 2.0], [3.0, 0.0]]), np.array([4.0])]
    assert squared_grad_norm(grads, "sum") == pytest.approx(30.0)
    assert squared_grad_norm(grads, "mean") == pytest.approx(6.0)  # 30 over 5 coordinates
    # Masked: only the computed tensors count, averaged over their own coordinates.
    assert squared_grad_norm(grads, "mean", mask=[True, False]) == pytest.approx(3.5)
    assert squared_grad_norm([None, np.array([2.0, 2.0])], "mean") == pytest.approx(4.0)
    assert squared_grad_norm({"w": np.ones(3)}, "sum") == pytest.approx(3.0)
    with pytest.raises(ConfigError, match="reduction"):
        squared_grad_norm(grads, "max")


def test_paper_and_code_penalties_differ_by_the_parameter_count() -> None:
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(30, 26)), rng.normal(size=30)]
    n = 30 * 26 + 30
    code, paper = GradNormPenalty.released_code(), GradNormPenalty.paper()
    assert (code.weight, code.reduction) == (5e-4, "mean")
    assert (paper.weight, paper.reduction) == (1e-3, "sum")
    ratio = (paper(grads) / paper.weight) / (code(grads) / code.weight)
    assert ratio == pytest.approx(n)
    # Accumulated over an unroll: a sum of per-step penalties, not an average.
    steps = [grads, [2 * g for g in grads]]
    assert code.over_unroll(steps) == pytest.approx(5 * code(grads))
    with pytest.raises(ConfigError, match="weight"):
        GradNormPenalty(weight=-1.0)
