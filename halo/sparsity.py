"""Layer-wise stochastic update sparsity (HALO §3.2, halo.md §4).

Each step, every *unit* draws u ~ U(0, 1) and is updated iff u < p: the numbers of a schedule are
**update probabilities** ("0.1,0.3,0.5" updates the first third of the network 10 % of the time
and the last third 50 %; "1.0" is dense). A skipped tensor gets no gradient, no parameter change
and frozen optimizer state; the optimizee's backward pass stops below the shallowest updated layer.

Two released-code quirks are switchable:

* ``unit``: ``"tensor"`` — W and b of a layer draw independently (released code, default);
  ``"layer"`` — they share one draw (the paper's wording).
* ``assignment``: ``"contiguous"`` — the schedule is spread over depth in contiguous blocks
  (released adaptation code, ``expand_list``; default); ``"interleaved"`` — cycled over the
  units (released meta-training code, ``itertools.cycle``).

Contiguous blocks: unit i of n takes the entry of the depth band that contains its centre,
``probs[floor((i + ½)·k / n)]``. When n is a multiple of k this equals ``expand_list``; unlike it,
it never drops the last entry when n is not (e.g. n = 6, k = 4).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from halo.errors import ConfigError

UNITS = ("tensor", "layer")
ASSIGNMENTS = ("contiguous", "interleaved")


@dataclass(frozen=True)
class SparsitySchedule:
    probs: Tuple[float, ...] = (1.0,)
    unit: str = "tensor"
    assignment: str = "contiguous"

    def __post_init__(self) -> None:
        probs = tuple(float(p) for p in self.probs)
        if not probs or not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in probs):
            raise ConfigError(
                f"sparsity schedule {list(self.probs)} must be update probabilities in [0, 1], "
                f"e.g. 0.1,0.3,0.5 (1.0 = dense)"
            )
        object.__setattr__(self, "probs", probs)
        if self.unit not in UNITS:
            raise ConfigError(f"sparsity unit must be one of {UNITS}, got {self.unit!r}")
        if self.assignment not in ASSIGNMENTS:
            raise ConfigError(
                f"sparsity assignment must be one of {ASSIGNMENTS}, got {self.assignment!r}"
            )

    @classmethod
    def parse(cls, text: str, unit: str = "tensor", assignment: str = "contiguous"):
        """``"0.1,0.3,0.5"`` or ``"0.1 0.3 0.5"`` (HALO's ``--random_sparse_prob``)."""
        parts = [p for p in re.split(r"[,\s]+", str(text).strip()) if p]
        try:
            probs = tuple(float(p) for p in parts)
        except ValueError:
            raise ConfigError(
                f"sparsity schedule {text!r} is not a list of numbers; write update "
                f"probabilities like 0.1,0.3,0.5"
            ) from None
        return cls(probs, unit=unit, assignment=assignment)

    @property
    def dense(self) -> bool:
        return all(p >= 1.0 for p in self.probs)

    def units(self, layer_of: Sequence[int]) -> List[int]:
        """Unit index of each tensor (tensors of a layer share a unit when ``unit="layer"``)."""
        if self.unit == "tensor":
            return list(range(len(layer_of)))
        order: List[int] = []
        for layer in layer_of:
            if layer not in order:
                order.append(layer)
        return [order.index(layer) for layer in layer_of]

    def unit_probs(self, n_units: int) -> np.ndarray:
        k = len(self.probs)
        if self.assignment == "interleaved":
            idx = [i % k for i in range(n_units)]
        else:
            idx = [min(k - 1, int(math.floor((i + 0.5) * k / n_units))) for i in range(n_units)]
        return np.array([self.probs[i] for i in idx], dtype=np.float64)

    def tensor_probs(self, layer_of: Sequence[int]) -> np.ndarray:
        """Update probability of each tensor; ``layer_of[t]`` is tensor t's layer (depth order)."""
        units = self.units(layer_of)
        probs = self.unit_probs(max(units) + 1 if units else 0)
        return probs[units] if units else np.zeros(0)

    def draw(self, layer_of: Sequence[int], rng: np.random.Generator) -> np.ndarray:
        """One step's mask (True = update), one uniform draw per unit."""
        units = self.units(layer_of)
        if not units:
            return np.zeros(0, dtype=bool)
        n_units = max(units) + 1
        # u < p, so p = 0 never and p = 1 always updates (the code's u <= p differs only on a
        # measure-zero event).
        updated = rng.random(n_units) < self.unit_probs(n_units)
        return updated[units]

    def p_no_backward(self, layer_of: Sequence[int]) -> float:
        """Probability that a step updates nothing (no backward pass at all)."""
        units = self.units(layer_of)
        if not units:
            return 1.0
        return float(np.prod(1.0 - self.unit_probs(max(units) + 1)))


DENSE = SparsitySchedule()
