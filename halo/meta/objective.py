"""The meta-objective of one adaptation run (halo.md §3, §5).

J = mean_t log(L_t / (L_0 + ε) + ε) + Σ_t λ·R(θ_t)

L_t is the optimizee's loss after t updates, L_0 the loss where the run started, R the squared
gradient norm (:mod:`halo.regularizer`; mean over coordinates with λ = 5e-4 by default, the
released code's form, or the paper's sum). The log ratio makes tasks with very different loss
scales count alike; the penalty favours flat minima. Both are accumulated step by step, so a
run cut into truncations sums to the same J.

A perturbed optimizer can diverge: its log ratio is capped (``max_log_ratio``) and a
non-finite loss counts as the cap, so one runaway member cannot swamp a gradient estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from halo.errors import ConfigError
from halo.regularizer import GradNormPenalty


@dataclass(frozen=True)
class MetaObjective:
    eps: float = 1e-6
    penalty: GradNormPenalty = field(default_factory=GradNormPenalty)
    max_log_ratio: float = 5.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise ConfigError(f"meta-objective eps must be > 0, got {self.eps!r}")
        if not (math.isfinite(self.max_log_ratio) and self.max_log_ratio > 0):
            raise ConfigError(f"max_log_ratio must be > 0, got {self.max_log_ratio!r}")

    def log_ratio(self, losses: np.ndarray, loss0: float) -> np.ndarray:
        """log(L_t / (L_0 + ε) + ε) per member, capped; non-finite losses count as the cap."""
        losses = np.asarray(losses, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            ratio = np.log(np.maximum(losses, 0.0) / (loss0 + self.eps) + self.eps)
        ratio = np.where(np.isfinite(ratio), ratio, self.max_log_ratio)
        return np.minimum(ratio, self.max_log_ratio)

    def step_terms(
        self,
        losses: np.ndarray,
        loss0: float,
        grads: Sequence[Optional[np.ndarray]],
        horizon: int,
    ) -> np.ndarray:
        """One step's share of J for every member: log ratio / horizon + λ·R(θ_t)."""
        pop = len(losses)
        penalty = self.penalty.population(grads, pop) if self.penalty.weight else np.zeros(pop)
        penalty = np.where(np.isfinite(penalty), penalty, 0.0)
        return self.log_ratio(losses, loss0) / horizon + penalty
