"""Adaptation smoke tests: pretrain on B with Adam, adapt on A, sparse steps cost less."""

from __future__ import annotations

import numpy as np
import pytest

from halo.adapt import AdaptSettings, balanced_minibatches, pretrain, run_adaptation
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
    # Class-balanced minibatches ("re-sampled", halo.md §7): the male model has learned the
    # rare classes (on the 85 % majority as it comes, it would predict "negative" for all,
    # balanced accuracy 0.25-0.35, and no optimizer could show anything).
    assert task.source.class_balanced and task.target.class_balanced
    assert net.balanced_accuracy(params, task.source.x_test, task.source.y_test) > 0.6
    _, result = run_adaptation(net, params, Adam(lr=3e-3), task.target, AdaptSettings(steps=100))
    # Scored by balanced accuracy (mean per-class recall): plain accuracy on the imbalanced
    # female test split falls as the rare classes get predicted.
    assert result.test_balanced_accuracy[-1] > result.test_balanced_accuracy[0] + 0.03
    assert np.mean(result.losses[-20:]) < np.mean(result.losses[:20])


def test_balanced_minibatches_resample_every_class_to_the_largest() -> None:
    y = np.array([0] * 90 + [1] * 7 + [2] * 3)
    batches = balanced_minibatches(np.random.default_rng(0), y, 30)
    epoch = np.concatenate([next(batches) for _ in range(9)])  # 3 classes x 90 rows
    np.testing.assert_array_equal(np.bincount(y[epoch]), [90, 90, 90])
    # The largest class is not re-sampled: every one of its rows once per epoch.
    assert sorted(epoch[y[epoch] == 0]) == list(range(90))
    assert set(epoch[y[epoch] == 2]) == {97, 98, 99}


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
