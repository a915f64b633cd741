"""A feed-forward optimizee: a chain of layers ending in logits, softmax cross-entropy loss, and a
backward pass that can be truncated for layer-wise update sparsity.

Parameters are a list of arrays in depth order ``[W1, b1, W2, b2, ...]``; ``layer_of[t]`` is
tensor t's layer. ``loss_and_grads(..., need=mask)`` computes gradients only for the tensors the
mask selects and stops backprop below the shallowest selected layer; the returned
``BackwardInfo`` says which gradients exist and how many MACs the step spent and saved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from halo.errors import ShapeError
from halo.optimizees.layers import Shape, check_shape


@dataclass
class BackwardCost:
    """MACs of one (possibly truncated) backward pass for a batch."""

    per_tensor: List[int]  # weight/bias gradient MACs of each tensor (0 if not computed)
    input_grad: List[int]  # MACs propagating the gradient to each layer's input (0 if not)
    lowest_layer: Optional[int]  # shallowest layer reached; None = no backward at all

    @property
    def total(self) -> int:
        return sum(self.per_tensor) + sum(self.input_grad)


@dataclass
class BackwardInfo:
    computed: List[bool]  # which gradients were computed (the others are None)
    batch: int
    macs_forward: int
    backward: BackwardCost
    macs_backward_dense: int  # what a full backward pass would have cost

    @property
    def macs_backward(self) -> int:
        return self.backward.total


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> Tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient w.r.t. the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(z)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    loss = float(np.mean(np.log(total[:, 0]) - z[rows, y]))
    dlogits = exp / total
    dlogits[rows, y] -= 1.0
    return loss, dlogits / len(y)


class Network:
    """Layers in depth order. ``weight_decay`` adds wd · mean over tensors of ‖θ_t‖² to the loss
    (HALO's ``l2_reg_scale`` form); 0 by default."""

    def __init__(
        self, name: str, input_shape: Shape, layers: Sequence, weight_decay: float = 0.0
    ) -> None:
        self.name = name
        self.input_shape = tuple(int(s) for s in input_shape)
        self.layers = list(layers)
        self.weight_decay = float(weight_decay)
        shape = self.input_shape
        for i, layer in enumerate(self.layers):
            if int(np.prod(layer.in_shape)) != int(np.prod(shape)) or (
                layer.kind != "dense" and tuple(layer.in_shape) != shape
            ):
                raise ShapeError(
                    f"{name}: layer {i} ({layer.kind}) expects input {layer.in_shape}, "
                    f"the previous layer gives {shape}"
                )
            shape = layer.out_shape
        if len(shape) != 1:
            raise ShapeError(f"{name}: the last layer must output logits (n_classes,), got {shape}")
        self.n_classes = int(shape[0])
        self.tensor_names: List[str] = []
        self.layer_of: List[int] = []
        self.param_shapes: List[Shape] = []
        for i, layer in enumerate(self.layers):
            for suffix, p_shape in zip(("W", "b"), layer.param_shapes):
                self.tensor_names.append(f"{layer.kind}{i}.{suffix}")
                self.layer_of.append(i)
                self.param_shapes.append(tuple(p_shape))

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(s)) for s in self.param_shapes)

    @property
    def sizes(self) -> List[int]:
        return [int(np.prod(s)) for s in self.param_shapes]

    def init(self, seed: int = 0, dtype=np.float32) -> List[np.ndarray]:
        """He-normal weights for ReLU layers (unit-gain for linear ones), zero biases."""
        rng = np.random.default_rng(seed)
        params: List[np.ndarray] = []
        for layer in self.layers:
            w_shape, b_shape = layer.param_shapes
            gain = 2.0 if layer.relu else 1.0
            params.append(rng.normal(0.0, math.sqrt(gain / layer.fan_in), w_shape).astype(dtype))
            params.append(np.zeros(b_shape, dtype=dtype))
        return params

    def reinit_layer(
        self, params: Sequence[np.ndarray], layer: int, seed: int, std: float = 0.01
    ) -> List[np.ndarray]:
        """A copy of ``params`` with one layer re-drawn from N(0, std) (HALO re-initialises the
        classifier head when source and target classes differ)."""
        rng = np.random.default_rng(seed)
        out = list(params)
        for t, owner in enumerate(self.layer_of):
            if owner == layer:
                out[t] = rng.normal(0.0, std, np.shape(params[t])).astype(params[t].dtype)
        return out

    def _check(self, params: Sequence[np.ndarray]) -> None:
        if len(params) != len(self.param_shapes):
            raise ShapeError(
                f"{self.name} has {len(self.param_shapes)} parameter tensors, got {len(params)}; "
                f"create them with init()"
            )
        for name, p, shape in zip(self.tensor_names, params, self.param_shapes):
            check_shape(name, p, shape)

    def _inputs(self, x: np.ndarray, dtype) -> np.ndarray:
        x = np.asarray(x, dtype=dtype)
        if int(np.prod(x.shape[1:])) != int(np.prod(self.input_shape)):
            raise ShapeError(
                f"{self.name} takes inputs of shape {self.input_shape} "
                f"({int(np.prod(self.input_shape))} values), got batch shape {x.shape}"
            )
        return x.reshape((x.shape[0],) + self.input_shape)

    def _labels(self, y: np.ndarray, batch: int) -> np.ndarray:
        y = np.asarray(y)
        if y.shape != (batch,) or not np.issubdtype(y.dtype, np.integer):
            raise ShapeError(f"labels must be {batch} integers, got {y.dtype} {y.shape}")
        if batch and (y.min() < 0 or y.max() >= self.n_classes):
            raise ShapeError(f"labels must be in [0, {self.n_classes}), got {y.min()}..{y.max()}")
        return y

    def _forward(self, params: Sequence[np.ndarray], x: np.ndarray):
        self._check(params)
        h = self._inputs(x, params[0].dtype)
        caches = []
        for i, layer in enumerate(self.layers):
            h, cache = layer.forward(params[2 * i], params[2 * i + 1], h)
            caches.append(cache)
        return h, caches

    def logits(self, params: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
        return self._forward(params, x)[0]

    def predict(self, params: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(params, x), axis=1)

    def accuracy(self, params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(params, x) == np.asarray(y)))

    def balanced_accuracy(
        self, params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray
    ) -> float:
        """Mean per-class recall over the classes present in ``y``: on imbalanced data (thyroid:
        85 % one class) plain accuracy cannot tell a classifier from a constant."""
        y = np.asarray(y)
        pred = self.predict(params, x)
        return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))

    def _decay(self, params: Sequence[np.ndarray]) -> float:
        if not self.weight_decay:
            return 0.0
        return self.weight_decay * float(np.mean([np.sum(np.square(p)) for p in params]))

    def loss(self, params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
        logits, _ = self._forward(params, x)
        loss, _ = softmax_cross_entropy(logits, self._labels(y, logits.shape[0]))
        return loss + self._decay(params)

    def loss_and_grads(
        self,
        params: Sequence[np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        need: Optional[Sequence[bool]] = None,
    ) -> Tuple[float, List[Optional[np.ndarray]], BackwardInfo]:
        """Loss, gradients (``None`` where not needed) and what the pass cost."""
        need_list = self._need(need)
        logits, caches = self._forward(params, x)
        batch = logits.shape[0]
        loss, dy = softmax_cross_entropy(logits, self._labels(y, batch))
        loss += self._decay(params)
        grads: List[Optional[np.ndarray]] = [None] * len(params)
        lowest = self._lowest(need_list)
        if lowest is not None:
            for i in range(len(self.layers) - 1, lowest - 1, -1):
                dx, dw, db = self.layers[i].backward(
                    params[2 * i], caches[i], dy, need_list[2 * i], need_list[2 * i + 1], i > lowest
                )
                grads[2 * i], grads[2 * i + 1] = dw, db
                dy = dx
        if self.weight_decay:
            scale = 2.0 * self.weight_decay / len(params)
            grads = [g if g is None else g + scale * p for g, p in zip(grads, params)]
        info = BackwardInfo(
            computed=[g is not None for g in grads],
            batch=batch,
            macs_forward=self.macs_forward(batch),
            backward=self.macs_backward(batch, need_list),
            macs_backward_dense=self.macs_backward(batch).total,
        )
        return loss, grads, info

    def _need(self, need: Optional[Sequence[bool]]) -> List[bool]:
        if need is None:
            return [True] * len(self.param_shapes)
        flags = [bool(n) for n in need]
        if len(flags) != len(self.param_shapes):
            raise ShapeError(
                f"need/mask has {len(flags)} entries, {self.name} has {len(self.param_shapes)} "
                f"tensors"
            )
        return flags

    def _lowest(self, need: Sequence[bool]) -> Optional[int]:
        layers = [self.layer_of[t] for t, n in enumerate(need) if n]
        return min(layers) if layers else None

    def macs_forward(self, batch: int = 1) -> int:
        return batch * sum(layer.macs() for layer in self.layers)

    def macs_backward(self, batch: int = 1, need: Optional[Sequence[bool]] = None) -> BackwardCost:
        """Weight/bias-gradient MACs per tensor and input-gradient MACs per layer, truncated at
        the shallowest needed layer (the network input never gets a gradient)."""
        need_list = self._need(need)
        lowest = self._lowest(need_list)
        per_tensor = [0] * len(need_list)
        input_grad = [0] * len(self.layers)
        if lowest is not None:
            for i, layer in enumerate(self.layers):
                if need_list[2 * i]:
                    per_tensor[2 * i] = batch * layer.macs()
                if need_list[2 * i + 1]:
                    per_tensor[2 * i + 1] = batch * layer.bias_macs()
                if i > lowest:
                    input_grad[i] = batch * layer.macs()
        return BackwardCost(per_tensor, input_grad, lowest)
