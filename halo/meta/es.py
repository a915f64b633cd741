"""Populations of learned optimizers run side by side, and the evolution-strategies estimators of
the meta-gradient built on them (no autodiff anywhere).

:class:`Unroll` advances P copies of an adaptation problem, member i driven by the learned
optimizer with meta-parameters ``flats[i]``: one batched optimizee pass
(:class:`~halo.optimizees.population.PopulationNetwork`) and one batched optimizer step
(:func:`halo.optim.hrnn.step`) per step for the whole population. Members share every random
draw -- minibatches, sparsity masks, the meta-loss rows, the optimizer's initial learning rates
-- so two members differ only by their meta-parameters (common random numbers).

Antithetic layout: member 0 runs the current meta-parameters θ (its objective is the reported
meta-loss), members 1..N run θ + ε_i and N+1..2N run θ − ε_i.

Estimators over truncations of T steps:

* ``es`` -- truncated antithetic ES: every truncation starts all members from member 0's state
  (optimizee and optimizer), so g = Σ ε_i (J⁺_i − J⁻_i) / (2Nσ²). Low variance, but blind to
  effects beyond the truncation (short-horizon bias); with T = the episode length it is plain
  full-unroll antithetic ES, unbiased for the Gaussian-smoothed objective.
* ``pes`` -- persistent ES (Vicol et al. 2021): members keep their own trajectories over the
  whole episode and ξ_i, the sum of the perturbations member i ran with so far this episode,
  replaces ε_i: g = Σ ξ_i (J⁺_i − J⁻_i) / (2Nσ²). Unbiased for the episode objective although
  each update sees only T steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from halo.adapt import training_batches
from halo.errors import ConfigError, ShapeError
from halo.meta.objective import MetaObjective
from halo.meta.problems import MetaProblem
from halo.optim.hrnn import HierarchicalRNN, HRNNState, TensorState, init_state, step
from halo.optimizees.population import PopulationNetwork
from halo.sparsity import SparsitySchedule

ESTIMATORS = ("pes", "es")


@dataclass(frozen=True)
class ESSettings:
    pairs: int = 8
    sigma: float = 0.01
    estimator: str = "pes"
    truncation: int = 20

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.pairs < 1 or self.truncation < 1:
            raise ConfigError("ES needs >= 1 antithetic pair and truncations of >= 1 step")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ConfigError(f"ES sigma must be > 0, got {self.sigma!r}")


def antithetic_population(center: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """(2N + 1, n): θ, then θ + ε_1..N, then θ − ε_1..N."""
    return np.concatenate([center[None, :], center + eps, center - eps], axis=0)


def antithetic_gradient(directions: np.ndarray, objectives: np.ndarray, sigma: float) -> np.ndarray:
    """Σ_i d_i (J⁺_i − J⁻_i) / (2Nσ²) for the antithetic layout of :func:`antithetic_population`;
    ``directions`` are the ε_i (ES) or the accumulated ξ_i (PES)."""
    n_pairs = directions.shape[0]
    if objectives.shape != (2 * n_pairs + 1,):
        raise ShapeError(
            f"{n_pairs} pairs need {2 * n_pairs + 1} objectives (centre, plus, minus), "
            f"got {objectives.shape}"
        )
    diff = objectives[1 : n_pairs + 1] - objectives[n_pairs + 1 :]
    return directions.T @ diff / (2.0 * n_pairs * sigma * sigma)


def _repeat_first(a: np.ndarray, pop: int) -> np.ndarray:
    return np.repeat(a[:1], pop, axis=0)


def broadcast_member0(state: HRNNState) -> HRNNState:
    """The optimizer state with every member's entries replaced by member 0's."""
    pop = state.population
    tensors = [
        TensorState(
            h0=_repeat_first(ts.h0, pop),
            gbar=[_repeat_first(a, pop) for a in ts.gbar],
            ms=[_repeat_first(a, pop) for a in ts.ms],
            inp_decay=_repeat_first(ts.inp_decay, pop),
            scl_decay=_repeat_first(ts.scl_decay, pop),
            log_lr=_repeat_first(ts.log_lr, pop),
            h1=_repeat_first(ts.h1, pop),
        )
        for ts in state.tensors
    ]
    return HRNNState(tensors, _repeat_first(state.h2, pop), state.shapes, state.step)


class Unroll:
    """P members adapting problems drawn from ``problems``, one episode at a time.

    An episode draws a problem, a horizon from ``horizons`` and -- with probability
    ``sparse_fraction`` -- the layer-wise update sparsity ``sparsity`` for all its steps; it
    starts when :meth:`run` is first called after the previous one ended, with the optimizer
    state initialised from that call's meta-parameters.
    """

    def __init__(
        self,
        problems: Sequence[MetaProblem],
        optimizer: HierarchicalRNN,
        objective: MetaObjective,
        population: int,
        seed: int,
        horizons: Sequence[int],
        sparsity: Optional[SparsitySchedule] = None,
        sparse_fraction: float = 0.0,
        dtype=np.float32,
    ) -> None:
        if not problems:
            raise ConfigError("an unroll needs at least one problem")
        if not horizons or min(horizons) < 1:
            raise ConfigError("episode horizons must be >= 1 step")
        self.problems = list(problems)
        self.optimizer = optimizer
        self.objective = objective
        self.population = int(population)
        self.rng = np.random.default_rng(seed)
        self.horizons = [int(h) for h in horizons]
        self.sparsity = sparsity
        self.sparse_fraction = float(sparse_fraction)
        self.dtype = dtype
        self.needs_reset = True
        self.episodes = 0
        # Set by _reset:
        self.problem: MetaProblem = self.problems[0]
        self.pop_net = PopulationNetwork(self.problem.net)
        self.params: List[np.ndarray] = []
        self.state: Optional[HRNNState] = None
        self.horizon = 0
        self.t = 0
        self.loss0: Optional[float] = None
        self.sparse: Optional[SparsitySchedule] = None
        self.episode_objective = np.zeros(self.population)
        self.xi: Optional[np.ndarray] = None  # PES: perturbations accumulated this episode
        self._batches = iter(())

    def _reset(self, flats: np.ndarray) -> None:
        rng = self.rng
        self.problem = self.problems[int(rng.integers(len(self.problems)))]
        self.pop_net = PopulationNetwork(self.problem.net)
        self.horizon = self.horizons[int(rng.integers(len(self.horizons)))]
        use_sparse = self.sparsity is not None and rng.random() < self.sparse_fraction
        self.sparse = self.sparsity if use_sparse else None
        start = [np.asarray(p, dtype=self.dtype) for p in self.problem.start]
        self.params = self.pop_net.replicate(start, self.population)
        meta = self.optimizer.population_meta(flats, self.dtype)
        shapes = [tuple(s) for s in self.problem.net.param_shapes]
        state = init_state(meta, self.optimizer.config, shapes, self.population, rng, self.dtype)
        for ts in state.tensors:
            ts.log_lr[:] = ts.log_lr[:1]  # every member starts from the same learning rates
        self.state = state
        self.t = 0
        self.loss0 = None
        self.episode_objective = np.zeros(self.population)
        self.xi = np.zeros((max((self.population - 1) // 2, 0), flats.shape[1]))
        self._batches = training_batches(rng, self.problem.data, self.problem.batch_size)
        self.needs_reset = False
        self.episodes += 1

    def broadcast_member0(self) -> None:
        """Start the next truncation of every member from member 0's state (``es``)."""
        if self.needs_reset or self.state is None:
            return
        self.params = [_repeat_first(p, self.population) for p in self.params]
        self.state = broadcast_member0(self.state)

    def run(self, flats: np.ndarray, steps: int) -> Tuple[np.ndarray, bool]:
        """Advance every member up to ``steps`` steps (not past the episode's end); returns the
        members' objective over these steps and whether the episode ended."""
        flats = np.asarray(flats, dtype=np.float64)
        if flats.shape != (self.population, self.optimizer.n_meta):
            raise ShapeError(
                f"expected ({self.population}, {self.optimizer.n_meta}) meta-parameters, "
                f"got {flats.shape}"
            )
        if self.needs_reset:
            self._reset(flats)
        assert self.state is not None
        meta = self.optimizer.population_meta(flats, self.dtype)
        config = self.optimizer.config
        problem = self.problem
        data = problem.data
        net = problem.net
        rows = None
        if problem.loss_rows:
            rows = loss_rows(self.rng, problem.loss_y, problem.loss_rows, data.class_balanced)
        total = np.zeros(self.population)
        all_on = np.ones(len(self.params), dtype=bool)
        with np.errstate(all="ignore"):  # a diverging member is capped by the objective
            for _ in range(min(steps, self.horizon - self.t)):
                idx = next(self._batches)
                mask = self.sparse.draw(net.layer_of, self.rng) if self.sparse else all_on
                losses, grads, _ = self.pop_net.loss_and_grads(
                    self.params, data.x_train[idx], data.y_train[idx], mask
                )
                if rows is not None:
                    losses = self.pop_net.loss(
                        self.params, problem.loss_x[rows], problem.loss_y[rows]
                    )
                if self.loss0 is None:
                    self.loss0 = float(losses[0])
                total += self.objective.step_terms(losses, self.loss0, grads, self.horizon)
                thetas = [p.reshape(self.population, -1) for p in self.params]
                flat_grads = [None if g is None else g.reshape(self.population, -1) for g in grads]
                active = np.broadcast_to(mask, (self.population, len(mask)))
                new, self.state = step(meta, config, thetas, flat_grads, self.state, active)
                self.params = [a.reshape(p.shape) for a, p in zip(new, self.params)]
                self.t += 1
        self.episode_objective += total
        done = self.t >= self.horizon
        if done:
            self.needs_reset = True
        return total, done


def loss_rows(rng: np.random.Generator, y: np.ndarray, k: int, balanced: bool) -> np.ndarray:
    """The rows one truncation's meta-loss is measured on: ``k`` distinct random ones, or for
    a class-balanced task an equal share of every class (with replacement) -- the loss its
    adaptation minibatches estimate."""
    if not balanced:
        return rng.choice(len(y), size=min(k, len(y)), replace=False)
    classes = np.unique(y)
    per = max(1, k // len(classes))
    return np.concatenate([rng.choice(np.flatnonzero(y == c), per) for c in classes])


def episode_objective(
    flats: np.ndarray,
    optimizer: HierarchicalRNN,
    problem: MetaProblem,
    horizon: int,
    seed: int,
    objective: Optional[MetaObjective] = None,
    sparsity: Optional[SparsitySchedule] = None,
    dtype=np.float64,
) -> np.ndarray:
    """J of one whole episode for each row of ``flats`` (P, n), with shared randomness fixed by
    ``seed``: a deterministic function of the meta-parameters (validation, finite differences)."""
    flats = np.atleast_2d(flats)
    unroll = Unroll(
        [problem],
        optimizer,
        objective or MetaObjective(),
        flats.shape[0],
        seed,
        [horizon],
        sparsity,
        1.0 if sparsity is not None else 0.0,
        dtype,
    )
    total, done = unroll.run(flats, horizon)
    assert done
    return total
