"""The one interface every optimizer has: ``init(params) -> state`` and
``update(params, grads, state, mask=None) -> (params, state)`` over plain containers of arrays.

Parameters are a list/tuple of arrays (depth order: first layer first) or a dict whose insertion
order is the depth order. A tensor is updated only where the mask says so *and* a gradient was
given: a skipped tensor keeps its value and its optimizer state, exactly as if the step had not
happened for it (HALO's ``copy_previous``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from halo.errors import ShapeError


def leaves(tree: Any, what: str = "params") -> Tuple[List[Any], Callable[[List[Any]], Any]]:
    """The arrays of ``tree`` in order, and a function that rebuilds the same container type."""
    if isinstance(tree, Mapping):
        keys = list(tree.keys())
        return [tree[k] for k in keys], lambda values: dict(zip(keys, values))
    if isinstance(tree, tuple):
        return list(tree), tuple
    if isinstance(tree, list):
        return list(tree), list
    raise ShapeError(
        f"{what} must be a list, tuple or dict of numpy arrays, got {type(tree).__name__}"
    )


def aligned(params: Any, other: Any, what: str) -> List[Any]:
    """``other`` (grads or mask) as a list in the order of ``params``."""
    if isinstance(params, Mapping) and isinstance(other, Mapping):
        missing = [k for k in params if k not in other]
        extra = [k for k in other if k not in params]
        if missing or extra:
            raise ShapeError(
                f"{what} keys differ from the parameter keys (missing {missing}, extra {extra}); "
                f"pass one entry per parameter tensor"
            )
        return [other[k] for k in params]
    values, _ = leaves(other, what)
    n = len(params)
    if len(values) != n:
        raise ShapeError(
            f"{what} has {len(values)} entries but there are {n} parameter tensors; "
            f"pass one entry per tensor, in the parameters' order"
        )
    return values


def effective_mask(params: Any, grads: Any, mask: Any) -> Tuple[List[Any], List[bool]]:
    """Gradients as a list, and which tensors this step updates (masked in and has a gradient)."""
    grad_list = aligned(params, grads, "grads")
    if mask is None:
        flags = [True] * len(grad_list)
    else:
        flags = [bool(m) for m in aligned(params, mask, "mask")]
    return grad_list, [f and g is not None for f, g in zip(flags, grad_list)]


def check_grad(index: int, param: np.ndarray, grad: np.ndarray) -> np.ndarray:
    grad = np.asarray(grad)
    if grad.shape != np.shape(param):
        raise ShapeError(
            f"gradient {index} has shape {grad.shape} but its parameter has shape "
            f"{np.shape(param)}; pass gradients in the parameters' order"
        )
    return grad


@dataclass
class OpCount:
    """Work one optimizer step does, for the energy account (counts, not timings).

    ``macs`` are multiply-accumulates of matrix products and weighted sums; ``elementwise`` the
    other arithmetic operations (approximate: one per add/multiply/compare in the update rule);
    ``transcendental`` exp/log/sqrt/asinh/sigmoid/tanh/division evaluations; ``state_floats`` the
    optimizer-state floats read and rewritten; ``params_updated`` the parameters that changed;
    ``calls`` the array operations dispatched (approximate): in NumPy each costs microseconds
    of interpreter overhead whatever its size, which dominates for small tensors.
    """

    macs: int = 0
    elementwise: int = 0
    transcendental: int = 0
    state_floats: int = 0
    params_updated: int = 0
    calls: int = 0

    def __add__(self, other: OpCount) -> OpCount:
        return OpCount(
            self.macs + other.macs,
            self.elementwise + other.elementwise,
            self.transcendental + other.transcendental,
            self.state_floats + other.state_floats,
            self.params_updated + other.params_updated,
            self.calls + other.calls,
        )


class Optimizer:
    """Base class: subclasses implement ``init``, ``update`` and ``cost``."""

    name = "optimizer"

    def init(self, params: Any, rng: Optional[np.random.Generator] = None) -> Any:
        raise NotImplementedError

    def update(self, params: Any, grads: Any, state: Any, mask: Any = None) -> Tuple[Any, Any]:
        raise NotImplementedError

    def cost(self, sizes: Sequence[int], mask: Optional[Sequence[bool]] = None) -> OpCount:
        """Operations of one step on tensors of ``sizes`` elements, skipped tensors excluded."""
        raise NotImplementedError


def tensor_sizes(params: Any) -> List[int]:
    values, _ = leaves(params)
    return [int(np.size(v)) for v in values]
