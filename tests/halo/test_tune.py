"""Learning-rate tuning looks at a validation split of the training rows only."""

from __future__ import annotations

import numpy as np
import pytest

from halo.adapt import AdaptSettings, start_point
from halo.errors import ConfigError
from halo.tasks import DriftSettings, drift_task
from halo.tasks.base import DomainData
from halo.tune import RUNS_PER_LR, VALIDATION_FRACTION, tune_lr, validation_split


def test_tuning_picks_from_the_grid_without_the_test_split() -> None:
    task = drift_task(DriftSettings(seed=2))
    net = task.optimizee()
    start = start_point(task, net, seed=2, steps=50)
    settings = AdaptSettings(steps=30, seed=4)
    grid = (1e-4, 1e-2, 10.0)
    result = tune_lr(net, start, task.target, "sgd", settings, metric="accuracy", grid=grid)
    assert result.lr in grid and [s["lr"] for s in result.scores] == list(grid)
    assert result.lr != 10.0  # diverges
    best = max(result.scores, key=lambda s: (s["accuracy"], -s["loss"]))
    assert result.lr == best["lr"]
    # Each rate scores as the worse of its runs (two minibatch seeds).
    assert len(result.runs) == RUNS_PER_LR * len(grid) and RUNS_PER_LR == 2
    for score, pair in zip(result.scores, zip(result.runs[::2], result.runs[1::2])):
        assert score["accuracy"] == min(r.test_accuracy[-1] for r in pair)
    assert pair[0].losses != pair[1].losses
    assert result.as_dict()["runs_per_lr"] == RUNS_PER_LR
    # Scrambling the test split changes nothing: tuning never reads it.
    rng = np.random.default_rng(0)
    scrambled = DomainData(
        task.target.x_train,
        task.target.y_train,
        rng.normal(size=task.target.x_test.shape),
        rng.permutation(task.target.y_test),
    )
    again = tune_lr(net, start, scrambled, "sgd", settings, metric="accuracy", grid=grid)
    assert again.scores == result.scores
    split = validation_split(task.target, seed=4)
    n = len(task.target.y_train)
    assert len(split.y_test) == pytest.approx(VALIDATION_FRACTION * n, abs=task.n_classes)
    assert len(split.y_train) + len(split.y_test) == n
    with pytest.raises(ConfigError, match="hand-written"):
        tune_lr(net, start, task.target, "halo", settings)
