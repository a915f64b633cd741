"""HALO's gradient-norm ("Jacobian") regularizer for the meta-objective (halo.md §3).

R(θ_t) is the squared norm of the optimizee-loss gradient: the paper's ‖J‖²_F (``"sum"``) or the
released code's mean over all coordinates of all tensors (``"mean"``, default); the two differ by
a factor of the parameter count N. The meta-objective adds ``weight · R(θ_t)`` at every unrolled
step and sums over the truncation (the code's accumulation, not an average).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from halo.errors import ConfigError, ShapeError
from halo.optim.base import leaves

REDUCTIONS = ("mean", "sum")


def squared_grad_norm(
    grads: Any, reduction: str = "mean", mask: Optional[Sequence[bool]] = None
) -> float:
    """Σ g² over the selected tensors (``"sum"``), or divided by their element count (``"mean"``).

    ``mask`` restricts the penalty to the tensors whose gradients were computed (sparse steps).
    """
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    values, _ = leaves(grads, "grads")
    if mask is not None and len(mask) != len(values):
        raise ShapeError(f"mask has {len(mask)} entries for {len(values)} gradient tensors")
    total = 0.0
    count = 0
    for i, g in enumerate(values):
        if (mask is not None and not mask[i]) or g is None:
            continue
        g = np.asarray(g, dtype=np.float64)
        total += float(np.dot(g.ravel(), g.ravel()))
        count += g.size
    if reduction == "sum":
        return total
    return total / count if count else 0.0


def squared_grad_norm_population(
    grads: Sequence[Optional[np.ndarray]], reduction: str = "mean", population: int = 0
) -> np.ndarray:
    """:func:`squared_grad_norm` of each member of a population: ``grads`` are ``(P, ...)``
    stacks (``None`` = not computed this step); returns (P,), zeros when nothing was computed
    (``population`` gives P then)."""
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    present = [g for g in grads if g is not None]
    if not present:
        return np.zeros(population)
    pop = present[0].shape[0]
    total = np.zeros(pop)
    count = 0
    for g in present:
        flat = g.reshape(pop, -1)
        total += np.einsum("pi,pi->p", flat, flat, dtype=np.float64)
        count += flat.shape[1]
    return total if reduction == "sum" else total / count


@dataclass(frozen=True)
class GradNormPenalty:
    """λ·R(θ_t). Defaults are the released code's (α = 5e-4, mean); ``paper()`` gives λ1 = 1e-3
    with the Frobenius-norm sum."""

    weight: float = 5e-4
    reduction: str = "mean"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ConfigError(f"penalty weight must be a finite number >= 0, got {self.weight!r}")
        if self.reduction not in REDUCTIONS:
            raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")

    @classmethod
    def released_code(cls) -> GradNormPenalty:
        return cls(5e-4, "mean")

    @classmethod
    def paper(cls) -> GradNormPenalty:
        return cls(1e-3, "sum")

    def __call__(self, grads: Any, mask: Optional[Sequence[bool]] = None) -> float:
        return self.weight * squared_grad_norm(grads, self.reduction, mask)

    def population(self, grads: Sequence[Optional[np.ndarray]], population: int) -> np.ndarray:
        """λ·R for each member of a population of gradients (P, ...) -> (P,)."""
        return self.weight * squared_grad_norm_population(grads, self.reduction, population)

    def over_unroll(self, grads_per_step: Iterable[Any]) -> float:
        """Σ_t λ·R(θ_t) over one truncation's steps."""
        return float(sum(self(g) for g in grads_per_step))
