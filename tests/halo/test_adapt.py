"""Adaptation smoke tests: pretrain on B with Adam, adapt on A, sparse steps cost less."""

from __future__ import annotations

import numpy as np
import pytest

from halo.adapt import AdaptSettings, pretrain, run_adaptation
from halo.optim import Adam, HierarchicalRNN
from halo.sparsity import SparsitySchedule
from halo.tasks import DriftSettings, drift_task, thyroid_task


@pytest.fixture(scope="module")
def thyroid():
    task = thyroid_task(seed=0)
    net = task.optimizee()
    return task, net, pretrain(net, task.source, steps=300, lr=1e-3, seed=0)


def test_thyroid_adam_adaptation_improves_the_target_domain(thyroid) -> None:
    task, net, params = thyroid
    majority = np.bincount(task.target.y_test).max() / len(task.target.y_test)
    _, result = run_adaptation(net, params, Adam(lr=3e-3), task.target, AdaptSettings(steps=100))
    # The female test split is 85 % "negative"; the male model already sits at that majority
    # rate and Adam stays there, so plain accuracy cannot show adaptation. Test loss and
    # balanced accuracy (mean per-class recall) can.
    assert result.initial_accuracy == pytest.approx(majority, abs=0.01)
    assert result.final_accuracy >= majority - 0.03
    assert result.test_loss[-1] < 0.85 * result.test_loss[0]
    assert result.test_balanced_accuracy[-1] > result.test_balanced_accuracy[0] + 0.03
    assert np.mean(result.losses[-20:]) < np.mean(result.losses[:20])


def test_drift_adaptation_recovers_accuracy() -> None:
    task = drift_task(DriftSettings(seed=1))
    net = task.optimizee()
    params = pretrain(net, task.source, steps=300, seed=1)
    assert net.accuracy(params, task.source.x_test, task.source.y_test) > 0.85
    _, result = run_adaptation(net, params, Adam(lr=1e-3), task.target, AdaptSettings(100, seed=1))
    assert result.initial_accuracy < 0.6
    assert result.final_accuracy > result.initial_accuracy + 0.3


def test_sparse_learned_optimizer_adaptation_accounts_its_work(thyroid) -> None:
    task, net, params = thyroid
    settings = AdaptSettings(steps=60, seed=2, eval_every=20)
    sparse = SparsitySchedule.parse("0.1,0.3,0.5")
    new, res = run_adaptation(net, params, HierarchicalRNN(), task.target, settings, sparse)
    _, dense = run_adaptation(net, params, HierarchicalRNN(), task.target, settings)
    assert res.eval_steps == [0, 20, 40, 60] and len(res.test_loss) == 4
    np.testing.assert_allclose(res.updated.mean(axis=0), [0.1, 0.1, 0.3, 0.3, 0.5, 0.5], atol=0.2)
    # Never-updated tensors are bit-identical to the pretrained ones.
    for t in np.flatnonzero(~res.updated.any(axis=0)):
        np.testing.assert_array_equal(new[t], params[t])
    assert res.macs_forward == dense.macs_forward
    assert res.macs_backward < 0.5 * dense.macs_backward
    assert res.macs_backward_dense == dense.macs_backward
    assert res.optimizer_ops.params_updated < 0.5 * dense.optimizer_ops.params_updated
    assert res.optimizer_ops.macs < 0.5 * dense.optimizer_ops.macs
    assert np.isfinite(res.losses).all() and res.final_accuracy > 0.5


def test_adaptation_is_reproducible(thyroid) -> None:
    task, net, params = thyroid
    settings = AdaptSettings(steps=10, seed=5)
    sched = SparsitySchedule.parse("0.5")
    a, ra = run_adaptation(net, params, HierarchicalRNN(), task.target, settings, sched)
    b, rb = run_adaptation(net, params, HierarchicalRNN(), task.target, settings, sched)
    assert ra.losses == rb.losses
    np.testing.assert_array_equal(ra.updated, rb.updated)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
