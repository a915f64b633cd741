"""P copies of one optimizee evaluated in one batched pass per layer.

Evolution strategies run P perturbed learned optimizers on P copies of the same network; looping
over the copies in Python would cost P times the per-call overhead, which dominates for the
small optimizees of the adaptation tasks. Here every parameter carries a leading population
axis, ``(P, *shape)``, and each layer runs one batched matrix product for all members.

The minibatch is shared by all members (common random numbers: antithetic pairs then differ
only by their perturbation), so the first layer's input -- and a convolution's im2col columns
-- are computed once. Later layers see per-member activations ``(P, B, ...)``. Masks are shared
too: one backward pass, truncated at the shallowest selected layer, for the whole population.
Gradients match :meth:`Network.loss_and_grads` member by member.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from halo.errors import ShapeError
from halo.optimizees.network import BackwardInfo, Network


def _dense_forward(layer: Any, w: np.ndarray, b: np.ndarray, x: np.ndarray, shared: bool):
    pop = w.shape[0]
    xf = x.reshape(x.shape[0], -1) if shared else x.reshape(pop, x.shape[1], -1)
    z = np.matmul(xf, w) + b[:, None, :]  # (B, I) or (P, B, I) @ (P, I, O) -> (P, B, O)
    on = z > 0 if layer.relu else None
    return (z * on if on is not None else z), (x.shape, xf, on, shared)


def _dense_backward(layer, w, cache, dy, need_w, need_b, need_x):
    shape, xf, on, shared = cache
    dz = dy * on if on is not None else dy
    dw = None
    if need_w:
        dw = np.matmul(xf.T if shared else xf.transpose(0, 2, 1), dz)
    db = dz.sum(axis=1) if need_b else None
    dx = None
    if need_x:
        member_shape = shape if shared else shape[1:]
        dx = np.matmul(dz, w.transpose(0, 2, 1)).reshape((w.shape[0],) + tuple(member_shape))
    return dx, dw, db


def _conv2d_forward(conv: Any, w: np.ndarray, b: np.ndarray, x: np.ndarray, shared: bool):
    pop = w.shape[0]
    k = conv.fan_in
    if shared:
        batch = x.shape[0]
        cols, padded = conv.im2col(x)  # (B·Ho·Wo, K), once for every member
    else:
        batch = x.shape[1]
        cols, padded = conv.im2col(x.reshape((pop * batch,) + x.shape[2:]))
        cols = cols.reshape(pop, -1, k)
    z = np.matmul(cols, w.reshape(pop, k, conv.cout)) + b[:, None, :]
    z = z.reshape(pop, batch, conv.ho, conv.wo, conv.cout)
    on = z > 0 if conv.relu else None
    return (z * on if on is not None else z), (cols, padded, on, shared, batch)


def _conv2d_backward(conv, w, cache, dy, need_w, need_b, need_x):
    cols, padded, on, shared, batch = cache
    pop = w.shape[0]
    dz = (dy * on if on is not None else dy).reshape(pop, -1, conv.cout)
    dw = None
    if need_w:
        dw = np.matmul(cols.T if shared else cols.transpose(0, 2, 1), dz).reshape(w.shape)
    db = dz.sum(axis=1) if need_b else None
    dx = None
    if need_x:
        if shared:
            raise ShapeError("the shared network input never gets a gradient")
        dcols = np.matmul(dz, w.reshape(pop, -1, conv.cout).transpose(0, 2, 1))
        dx = conv.col2im(dcols.reshape(-1, conv.fan_in), padded)
        dx = dx.reshape((pop, batch) + dx.shape[1:])
    return dx, dw, db


def _forward(layer: Any, w: np.ndarray, b: np.ndarray, x: np.ndarray, shared: bool):
    if layer.kind == "dense":
        return _dense_forward(layer, w, b, x, shared)
    if layer.kind == "conv2d":
        return _conv2d_forward(layer, w, b, x, shared)
    if layer.kind == "conv1d":
        # A 1-D convolution is a 2-D one of height 1 (as in the layer itself).
        x2 = x[:, None] if shared else x[:, :, None]
        y, cache = _conv2d_forward(layer._conv, w[:, None], b, x2, shared)
        return y[:, :, 0], cache
    raise ShapeError(f"no population pass for layer kind {layer.kind!r}")


def _backward(layer, w, cache, dy, need_w, need_b, need_x):
    if layer.kind == "dense":
        return _dense_backward(layer, w, cache, dy, need_w, need_b, need_x)
    if layer.kind == "conv2d":
        return _conv2d_backward(layer, w, cache, dy, need_w, need_b, need_x)
    dx, dw, db = _conv2d_backward(
        layer._conv, w[:, None], cache, dy[:, :, None], need_w, need_b, need_x
    )
    return (dx[:, :, 0] if dx is not None else None), (dw[:, 0] if dw is not None else None), db


def softmax_cross_entropy_population(
    logits: np.ndarray, y: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """Per-member mean cross-entropy (P,) and its gradient w.r.t. the (P, B, C) logits."""
    z = logits - logits.max(axis=2, keepdims=True)
    exp = np.exp(z)
    total = exp.sum(axis=2, keepdims=True)
    rows = np.arange(len(y))
    loss = np.mean(np.log(total[:, :, 0]) - z[:, rows, y], axis=1)
    dlogits = exp / total
    dlogits[:, rows, y] -= 1.0
    return loss.astype(np.float64), dlogits / len(y)


class PopulationNetwork:
    """A :class:`Network` whose parameters are ``(P, *shape)`` stacks of P members."""

    def __init__(self, net: Network) -> None:
        self.net = net

    def replicate(self, params: Sequence[np.ndarray], population: int) -> List[np.ndarray]:
        """P identical copies of one member's parameters."""
        self.net._check(params)
        return [np.repeat(np.asarray(p)[None], population, axis=0) for p in params]

    @staticmethod
    def member(params: Sequence[np.ndarray], i: int) -> List[np.ndarray]:
        return [np.array(p[i]) for p in params]

    def _check(self, params: Sequence[np.ndarray]) -> int:
        net = self.net
        if len(params) != len(net.param_shapes):
            raise ShapeError(
                f"{net.name} has {len(net.param_shapes)} parameter tensors, got {len(params)}"
            )
        pop = int(np.shape(params[0])[0]) if np.ndim(params[0]) else 0
        for name, p, shape in zip(net.tensor_names, params, net.param_shapes):
            if tuple(np.shape(p)) != (pop,) + tuple(shape):
                raise ShapeError(
                    f"population parameter {name} has shape {np.shape(p)}, expected "
                    f"(P, {', '.join(map(str, shape))}) with P = {pop}"
                )
        return pop

    def _forward(self, params: Sequence[np.ndarray], x: np.ndarray):
        self._check(params)
        h = self.net._inputs(x, params[0].dtype)
        caches = []
        for i, layer in enumerate(self.net.layers):
            h, cache = _forward(layer, params[2 * i], params[2 * i + 1], h, shared=i == 0)
            caches.append(cache)
        return h, caches

    def logits(self, params: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
        return self._forward(params, x)[0]

    def _decay(self, params: Sequence[np.ndarray]) -> np.ndarray:
        net = self.net
        if not net.weight_decay:
            return np.zeros(params[0].shape[0])
        sums = [np.sum(np.square(p.reshape(p.shape[0], -1)), axis=1) for p in params]
        return net.weight_decay * np.mean(sums, axis=0)

    def loss(self, params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
        logits, _ = self._forward(params, x)
        loss, _ = softmax_cross_entropy_population(logits, self.net._labels(y, logits.shape[1]))
        return loss + self._decay(params)

    def loss_and_grads(
        self,
        params: Sequence[np.ndarray],
        x: np.ndarray,
        y: np.ndarray,
        need: Optional[Sequence[bool]] = None,
    ) -> Tuple[np.ndarray, List[Optional[np.ndarray]], BackwardInfo]:
        """Per-member losses (P,), gradients ``(P, *shape)`` (``None`` where not needed) and
        the cost of one member's pass (every member does the same work)."""
        net = self.net
        need_list = net._need(need)
        logits, caches = self._forward(params, x)
        batch = logits.shape[1]
        loss, dy = softmax_cross_entropy_population(logits, net._labels(y, batch))
        loss = loss + self._decay(params)
        grads: List[Optional[np.ndarray]] = [None] * len(params)
        lowest = net._lowest(need_list)
        if lowest is not None:
            for i in range(len(net.layers) - 1, lowest - 1, -1):
                dx, dw, db = _backward(
                    net.layers[i],
                    params[2 * i],
                    caches[i],
                    dy,
                    need_list[2 * i],
                    need_list[2 * i + 1],
                    i > lowest,
                )
                grads[2 * i], grads[2 * i + 1] = dw, db
                dy = dx
        if net.weight_decay:
            scale = 2.0 * net.weight_decay / len(params)
            grads = [g if g is None else g + scale * p for g, p in zip(grads, params)]
        info = BackwardInfo(
            computed=[g is not None for g in grads],
            batch=batch,
            macs_forward=net.macs_forward(batch),
            backward=net.macs_backward(batch, need_list),
            macs_backward_dense=net.macs_backward(batch).total,
        )
        return loss, grads, info
