"""The adaptation problems meta-training measures the optimizer on: a network pretrained on a
task's source domain (HALO step 1: Adam), to be adapted on the target domain's training split.

Problem kinds mix the shipped tasks and optimizee shapes, so the optimizer sees tabular and
image inputs, MLPs and a CNN, a 4-class imbalanced task and balanced 4/5-class ones. Every
problem is built from a seed that picks the data split (thyroid, digits), the synthetic task
itself (drift) and the pretraining run; held-out seeds give unseen problems of the same kind.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Tuple

import numpy as np

from halo.adapt import start_point
from halo.errors import ConfigError
from halo.optimizees.network import Network
from halo.optimizees.zoo import cnn2d, mlp
from halo.tasks.base import DomainData, DomainShiftTask, stratified_split
from halo.tasks.digits import digits_task
from halo.tasks.drift import DriftSettings, drift_task
from halo.tasks.thyroid import thyroid_task


@dataclass
class MetaProblem:
    """``data.x_train`` is what the optimizee trains on; the meta-loss is measured on
    ``loss_x``/``loss_y`` -- rows of the target's training split held out from adaptation,
    so the optimizer is rewarded for what generalises, not for driving the training loss to
    zero (``heldout``), or the adaptation rows themselves (``train``, HALO's choice)."""

    name: str
    net: Network
    start: List[np.ndarray]  # pretrained parameters, head re-drawn where classes differ
    data: DomainData  # adaptation rows (train) and the task's untouched test split (test)
    loss_x: np.ndarray
    loss_y: np.ndarray
    batch_size: int
    # How many loss rows one truncation measures the meta-loss on, redrawn each truncation
    # (HALO uses a large random subset); 0 = the step's own minibatch.
    loss_rows: int


# kind -> (task builder, optimizee builder or None for the task's own, batch, loss rows).
# The CNN uses smaller batches (32, adaptation uses 64): its population pass dominates
# meta-training time.
_KINDS: Dict[str, Tuple[Callable[[int], DomainShiftTask], Callable[[], Network], int, int]] = {
    "thyroid-mlp": (lambda s: thyroid_task(seed=s), lambda: mlp((26, 30, 30, 4)), 64, 256),
    "digits-mlp": (lambda s: digits_task(seed=s), lambda: mlp((64, 30, 30, 5)), 64, 256),
    "digits-cnn": (lambda s: digits_task(seed=s), lambda: cnn2d((8, 8, 1), 5), 32, 64),
    "drift-mlp": (
        lambda s: drift_task(DriftSettings(seed=s)),
        lambda: mlp((16, 30, 30, 4)),
        64,
        256,
    ),
}
KINDS = tuple(_KINDS)


META_LOSS_SPLITS = ("heldout", "train")
HELDOUT_FRACTION = 0.2


def make_problem(
    kind: str, seed: int, pretrain_steps: int = 500, meta_loss: str = "heldout"
) -> MetaProblem:
    try:
        build_task, build_net, batch, rows = _KINDS[kind]
    except KeyError:
        raise ConfigError(f"unknown meta-training problem {kind!r}; choose from {KINDS}") from None
    if meta_loss not in META_LOSS_SPLITS:
        raise ConfigError(f"meta_loss must be one of {META_LOSS_SPLITS}, got {meta_loss!r}")
    task = build_task(seed)
    net = build_net()
    start = start_point(task, net, seed=seed, steps=pretrain_steps)
    target = task.target
    if meta_loss == "train":
        return MetaProblem(
            f"{kind}/seed{seed}", net, start, target, target.x_train, target.y_train, batch, rows
        )
    adapt_idx, loss_idx = stratified_split(
        target.y_train, HELDOUT_FRACTION, np.random.default_rng(seed + 31)
    )
    data = replace(target, x_train=target.x_train[adapt_idx], y_train=target.y_train[adapt_idx])
    loss_x, loss_y = target.x_train[loss_idx], target.y_train[loss_idx]
    return MetaProblem(f"{kind}/seed{seed}", net, start, data, loss_x, loss_y, batch, rows)
