"""Pretraining on the source domain and the on-device adaptation loop on the target domain,
with optional layer-wise update sparsity and a per-step account of the work done."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from halo.errors import ConfigError, Stopped
from halo.optim.base import OpCount, Optimizer
from halo.optim.baselines import Adam
from halo.optimizees.network import BackwardCost, Network
from halo.sparsity import SparsitySchedule
from halo.tasks.base import DomainData, DomainShiftTask


@dataclass(frozen=True)
class AdaptSettings:
    steps: int = 100
    batch_size: int = 64
    seed: int = 0
    eval_every: int = 0  # 0: evaluate only before and after

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.eval_every < 0:
            raise ConfigError("steps and eval_every must be >= 0 and batch_size >= 1")


@dataclass
class StepRecord:
    """The work and time of one adaptation step (the energy account's input)."""

    batch: int
    macs_forward: int
    backward: BackwardCost  # truncated backward pass: per-tensor and input-gradient MACs
    computed: List[bool]  # which gradients the step computed
    ops: OpCount  # the optimizer update
    step_ns: int  # minibatch, forward, backward and update (perf_counter_ns)
    optimizer_ns: int  # the update alone


@dataclass
class AdaptResult:
    losses: List[float]  # minibatch training loss at each step (before its update)
    updated: np.ndarray  # (steps, tensors) bool: which tensors each step updated
    eval_steps: List[int] = field(default_factory=list)
    test_accuracy: List[float] = field(default_factory=list)  # on the test split, at eval_steps
    test_balanced_accuracy: List[float] = field(default_factory=list)
    test_loss: List[float] = field(default_factory=list)
    train_loss: List[float] = field(default_factory=list)  # whole training split, at eval_steps
    steps: List[StepRecord] = field(default_factory=list)
    # time.monotonic_ns windows (the power sampler's clock): the whole loop, and each
    # evaluation inside it (not adaptation work; a measured energy leaves them out).
    window_ns: Tuple[int, int] = (0, 0)
    eval_windows_ns: List[Tuple[int, int]] = field(default_factory=list)
    macs_forward: int = 0
    macs_backward: int = 0
    macs_backward_dense: int = 0  # what the same steps would have cost without truncation
    optimizer_ops: OpCount = field(default_factory=OpCount)

    @property
    def initial_accuracy(self) -> float:
        return self.test_accuracy[0]

    @property
    def final_accuracy(self) -> float:
        return self.test_accuracy[-1]


def minibatches(rng: np.random.Generator, n: int, batch: int):
    """Endless minibatches: shuffled epochs, the last partial batch dropped when n > batch."""
    size = min(batch, n)
    while True:
        order = rng.permutation(n)
        for start in range(0, n - size + 1, size):
            yield order[start : start + size]


def balanced_minibatches(rng: np.random.Generator, y: np.ndarray, batch: int):
    """Endless minibatches over re-sampled epochs: each holds every row of the largest class
    once and as many rows of every other class, drawn with replacement, shuffled together."""
    groups = [np.flatnonzero(y == c) for c in np.unique(y)]
    n = max(len(g) for g in groups)
    size = min(batch, n * len(groups))
    while True:
        epoch = [g if len(g) == n else rng.choice(g, n) for g in groups]
        order = rng.permutation(np.concatenate(epoch))
        for start in range(0, len(order) - size + 1, size):
            yield order[start : start + size]


def training_batches(rng: np.random.Generator, data: DomainData, batch: int):
    """The minibatch indices into ``data``'s training split: class-balanced if it says so."""
    if data.class_balanced:
        return balanced_minibatches(rng, data.y_train, batch)
    return minibatches(rng, len(data.x_train), batch)


def run_adaptation(
    net: Network,
    params: Sequence[np.ndarray],
    optimizer: Optimizer,
    data: DomainData,
    settings: AdaptSettings = AdaptSettings(),
    sparsity: Optional[SparsitySchedule] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> Tuple[List[np.ndarray], AdaptResult]:
    """Train ``params`` on ``data.x_train`` for ``settings.steps`` steps; seeded throughout
    (minibatches, sparsity masks and the optimizer's initial state have separate streams).
    ``should_stop`` is asked before every step; when it says yes, :class:`Stopped` is raised."""
    batch_seq, mask_seq, opt_seq = np.random.SeedSequence(settings.seed).spawn(3)
    batch_rng = np.random.default_rng(batch_seq)
    mask_rng = np.random.default_rng(mask_seq)
    params = list(params)
    state = optimizer.init(params, rng=np.random.default_rng(opt_seq))
    batches = training_batches(batch_rng, data, settings.batch_size)
    n_tensors = len(params)
    result = AdaptResult([], np.zeros((settings.steps, n_tensors), dtype=bool))

    def evaluate(step: int) -> None:
        t0 = time.monotonic_ns()
        result.eval_steps.append(step)
        result.test_accuracy.append(net.accuracy(params, data.x_test, data.y_test))
        result.test_balanced_accuracy.append(
            net.balanced_accuracy(params, data.x_test, data.y_test)
        )
        result.test_loss.append(net.loss(params, data.x_test, data.y_test))
        result.train_loss.append(net.loss(params, data.x_train, data.y_train))
        result.eval_windows_ns.append((t0, time.monotonic_ns()))

    start_ns = time.monotonic_ns()
    evaluate(0)
    for t in range(settings.steps):
        if should_stop is not None and should_stop():
            raise Stopped(f"stopped at step {t} of {settings.steps}")
        t0 = time.perf_counter_ns()
        idx = next(batches)
        if sparsity is None:
            mask = np.ones(n_tensors, dtype=bool)
        else:
            mask = sparsity.draw(net.layer_of, mask_rng)
        loss, grads, info = net.loss_and_grads(params, data.x_train[idx], data.y_train[idx], mask)
        t1 = time.perf_counter_ns()
        params, state = optimizer.update(params, grads, state, list(mask))
        t2 = time.perf_counter_ns()
        ops = optimizer.cost(net.sizes, list(mask))
        result.losses.append(loss)
        result.updated[t] = mask
        result.macs_forward += info.macs_forward
        result.macs_backward += info.macs_backward
        result.macs_backward_dense += info.macs_backward_dense
        result.optimizer_ops = result.optimizer_ops + ops
        result.steps.append(
            StepRecord(
                info.batch, info.macs_forward, info.backward, info.computed, ops, t2 - t0, t2 - t1
            )
        )
        done = t + 1
        if (settings.eval_every and done % settings.eval_every == 0) or done == settings.steps:
            evaluate(done)
    result.window_ns = (start_ns, time.monotonic_ns())
    return params, result


def pretrain(
    net: Network,
    data: DomainData,
    steps: int = 500,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    dtype=np.float32,
    should_stop: Optional[Callable[[], bool]] = None,
) -> List[np.ndarray]:
    """A source-domain model trained with Adam from a seeded initialisation (HALO step 1)."""
    params = net.init(seed, dtype=dtype)
    settings = AdaptSettings(steps, batch_size, seed + 1)
    params, _ = run_adaptation(net, params, Adam(lr=lr), data, settings, should_stop=should_stop)
    return params


def start_point(
    task: DomainShiftTask,
    net: Network,
    seed: int = 0,
    steps: int = 500,
    lr: float = 1e-3,
    batch_size: int = 64,
    dtype=np.float32,
    should_stop: Optional[Callable[[], bool]] = None,
) -> List[np.ndarray]:
    """Where on-device adaptation starts: ``net`` pretrained on the source domain with Adam,
    its classifier head re-drawn when the target's classes are different ones (digits)."""
    params = pretrain(net, task.source, steps, lr, batch_size, seed, dtype, should_stop)
    if task.reinit_head:
        # A seed stream apart from pretraining's, so the head does not repeat its init draw.
        params = net.reinit_layer(params, len(net.layers) - 1, seed=seed + 7919)
    return params
