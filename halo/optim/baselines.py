"""Hand-written baselines: SGD, SGD with momentum, Adam, Adagrad, RMSProp.

Each keeps its state per tensor, so a tensor skipped by a sparsity mask keeps its moments and its
own step counter (Adam's bias correction counts the tensor's updates, not the global steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from halo.errors import ConfigError, ShapeError
from halo.optim.base import OpCount, Optimizer, check_grad, effective_mask, leaves


@dataclass
class ElementwiseState:
    """One dict of slot arrays (and counters) per parameter tensor."""

    slots: List[Dict[str, Any]]


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")


def _fraction(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")


class _Elementwise(Optimizer):
    """Shared plumbing: masks, containers and per-element cost constants."""

    # Per updated element: multiply-accumulates, other arithmetic, transcendental ops, state floats.
    _per_element = (1, 0, 0, 0)
    # Array operations per updated tensor (the `_step` expressions plus the dtype cast).
    _calls_per_tensor = 3

    def _init_slot(self, p: np.ndarray) -> Dict[str, Any]:
        return {}

    def _step(self, p: np.ndarray, g: np.ndarray, slot: Dict[str, Any]) -> Tuple[Any, Dict]:
        raise NotImplementedError

    def init(self, params: Any, rng: Optional[np.random.Generator] = None) -> ElementwiseState:
        values, _ = leaves(params)
        return ElementwiseState([self._init_slot(np.asarray(p)) for p in values])

    def update(
        self, params: Any, grads: Any, state: ElementwiseState, mask: Any = None
    ) -> Tuple[Any, ElementwiseState]:
        values, rebuild = leaves(params)
        grad_list, flags = effective_mask(params, grads, mask)
        if len(state.slots) != len(values):
            raise ShapeError(
                f"optimizer state holds {len(state.slots)} tensors but {len(values)} parameters "
                f"were given; call init() with these parameters first"
            )
        new_values = list(values)
        new_slots = list(state.slots)
        for i, (p, g, slot) in enumerate(zip(values, grad_list, state.slots)):
            if not flags[i]:
                continue
            p = np.asarray(p)
            g = check_grad(i, p, g).astype(p.dtype, copy=False)
            new_p, new_slot = self._step(p, g, slot)
            new_values[i] = np.asarray(new_p, dtype=p.dtype)
            new_slots[i] = new_slot
        return rebuild(new_values), ElementwiseState(new_slots)

    def cost(self, sizes: Sequence[int], mask: Optional[Sequence[bool]] = None) -> OpCount:
        updated = [s for i, s in enumerate(sizes) if mask is None or mask[i]]
        n = sum(updated)
        macs, elementwise, transcendental, state = self._per_element
        calls = self._calls_per_tensor * len(updated)
        return OpCount(macs * n, elementwise * n, transcendental * n, state * n, n, calls)


@dataclass(frozen=True)
class SGD(_Elementwise):
    """θ ← θ − lr·g."""

    lr: float = 0.01
    name = "sgd"
    _per_element = (1, 0, 0, 0)

    def __post_init__(self) -> None:
        _positive("SGD lr", self.lr)

    def _step(self, p, g, slot):
        return p - self.lr * g, slot


@dataclass(frozen=True)
class Momentum(_Elementwise):
    """Heavy ball as in TF1's MomentumOptimizer and PyTorch: v ← μ·v + g; θ ← θ − lr·v."""

    lr: float = 0.01
    momentum: float = 0.9
    name = "momentum"
    _per_element = (2, 0, 0, 1)
    _calls_per_tensor = 5

    def __post_init__(self) -> None:
        _positive("Momentum lr", self.lr)
        _fraction("Momentum momentum", self.momentum)

    def _init_slot(self, p):
        return {"v": np.zeros_like(p)}

    def _step(self, p, g, slot):
        v = self.momentum * slot["v"] + g
        return p - self.lr * v, {"v": v}


@dataclass(frozen=True)
class Adam(_Elementwise):
    """Adam with bias correction: θ ← θ − lr·m̂/(√v̂ + eps), t counted per tensor."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    name = "adam"
    _per_element = (3, 4, 2, 2)
    _calls_per_tensor = 14

    def __post_init__(self) -> None:
        _positive("Adam lr", self.lr)
        _fraction("Adam beta1", self.beta1)
        _fraction("Adam beta2", self.beta2)
        _positive("Adam eps", self.eps)

    def _init_slot(self, p):
        return {"m": np.zeros_like(p), "v": np.zeros_like(p), "t": 0}

    def _step(self, p, g, slot):
        t = slot["t"] + 1
        m = self.beta1 * slot["m"] + (1.0 - self.beta1) * g
        v = self.beta2 * slot["v"] + (1.0 - self.beta2) * (g * g)
        m_hat = m / (1.0 - self.beta1**t)
        v_hat = v / (1.0 - self.beta2**t)
        return p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps), {"m": m, "v": v, "t": t}


@dataclass(frozen=True)
class Adagrad(_Elementwise):
    """acc ← acc + g²; θ ← θ − lr·g/(√acc + eps).

    The accumulator starts at 0.1 as in TF1's AdagradOptimizer (HALO's baselines ran on TF1);
    it also keeps the first steps bounded without relying on eps.
    """

    lr: float = 0.01
    initial_accumulator: float = 0.1
    eps: float = 1e-10
    name = "adagrad"
    _per_element = (2, 1, 2, 1)
    _calls_per_tensor = 7

    def __post_init__(self) -> None:
        _positive("Adagrad lr", self.lr)
        if not self.initial_accumulator >= 0:
            raise ConfigError("Adagrad initial_accumulator must be >= 0")
        _positive("Adagrad eps", self.eps)

    def _init_slot(self, p):
        return {"acc": np.full_like(p, self.initial_accumulator)}

    def _step(self, p, g, slot):
        acc = slot["acc"] + g * g
        return p - self.lr * g / (np.sqrt(acc) + self.eps), {"acc": acc}


@dataclass(frozen=True)
class RMSProp(_Elementwise):
    """ms ← ρ·ms + (1−ρ)·g²; θ ← θ − lr·g/(√ms + eps).

    ``initial_ms`` is 0 as in PyTorch/Keras; TF1 started it at 1.0, which damps the first steps.
    """

    lr: float = 1e-3
    decay: float = 0.9
    eps: float = 1e-8
    initial_ms: float = 0.0
    name = "rmsprop"
    _per_element = (3, 1, 2, 1)
    _calls_per_tensor = 8

    def __post_init__(self) -> None:
        _positive("RMSProp lr", self.lr)
        _fraction("RMSProp decay", self.decay)
        _positive("RMSProp eps", self.eps)
        if not self.initial_ms >= 0:
            raise ConfigError("RMSProp initial_ms must be >= 0")

    def _init_slot(self, p):
        return {"ms": np.full_like(p, self.initial_ms)}

    def _step(self, p, g, slot):
        ms = self.decay * slot["ms"] + (1.0 - self.decay) * (g * g)
        return p - self.lr * g / (np.sqrt(ms) + self.eps), {"ms": ms}


BASELINES = {"sgd": SGD, "momentum": Momentum, "adam": Adam, "adagrad": Adagrad, "rmsprop": RMSProp}


def make_baseline(name: str, **settings: Any) -> Optimizer:
    """A baseline optimizer by name (``sgd``, ``momentum``, ``adam``, ``adagrad``, ``rmsprop``)."""
    try:
        cls = BASELINES[name.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown optimizer {name!r}; choose one of {', '.join(sorted(BASELINES))}"
        ) from None
    return cls(**settings)
