"""Layer helpers shared by the search spaces: seeded weights and conv + batch norm, folded the way
the TFLite converter folds it (W' = W·γ/√(σ²+ε), b' = β − μ·γ/√(σ²+ε))."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from coordinator.errors import UserError
from coordinator.zoo.graph import Graph

BN_EPS = 1e-5


class ArchError(UserError, ValueError):
    """An architecture encoding, index or option does not belong to the space."""


@dataclass
class Built:
    """A space's float32 graph for one architecture, with what the manifest reports about it."""

    graph: Graph
    connected: bool = True
    folded: bool = False
    notes: list[str] = field(default_factory=list)


def seeded_rng(seed: int, *parts: object) -> np.random.Generator:
    """An RNG that depends only on the seed and the given identity, so files are reproducible."""
    key = "\x1f".join([str(seed), *map(str, parts)]).encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:16], "little"))


class Draw:
    """Seeded He-normal conv weights and plausible batch-norm statistics from one RNG stream."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def conv(self, cout: int, k: int, cin_per_group: int) -> np.ndarray:
        std = np.float32(np.sqrt(2.0 / (k * k * cin_per_group)))
        return self.rng.standard_normal((cout, k, k, cin_per_group), dtype=np.float32) * std

    def depthwise(self, channels: int, k: int) -> np.ndarray:
        std = np.float32(np.sqrt(2.0 / (k * k)))
        return self.rng.standard_normal((1, k, k, channels), dtype=np.float32) * std

    def dense(self, out_f: int, in_f: int, std: float | None = None) -> np.ndarray:
        std = np.float32(np.sqrt(1.0 / in_f) if std is None else std)
        return self.rng.standard_normal((out_f, in_f), dtype=np.float32) * std

    def batch_norm(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) of an inference-mode batch norm with random statistics."""
        r = self.rng
        gamma = r.uniform(0.5, 1.0, c).astype(np.float32)
        beta = 0.1 * r.standard_normal(c, dtype=np.float32)
        mean = 0.1 * r.standard_normal(c, dtype=np.float32)
        var = r.uniform(0.5, 1.5, c).astype(np.float32)
        scale = gamma / np.sqrt(var + np.float32(BN_EPS))
        return scale, beta - mean * scale


# Folded layer weights already drawn in this process, by (seed, scope, layer key). Bounded so a
# long generation of large models cannot grow without limit.
_CACHE: OrderedDict[tuple, tuple[np.ndarray, ...]] = OrderedDict()
_CACHE_MAX_BYTES = 256 << 20
_cache_bytes = 0


class Init:
    """Weights per layer: a layer's weights depend on the seed, the scope (space, dataset,
    resolution) and the layer's own key (name and shape) only, not on the rest of the
    architecture. Models that share a layer share its weights, as in a one-shot supernet, and a
    process generating many models draws each distinct layer once."""

    def __init__(self, seed: int = 0, *scope: object):
        self.seed = seed
        self.scope = scope

    def layer(self, *key: object) -> Draw:
        return Draw(seeded_rng(self.seed, *self.scope, *key))

    def cached(
        self, key: tuple, make: Callable[[Draw], tuple[np.ndarray, ...]]
    ) -> tuple[np.ndarray, ...]:
        """`make(self.layer(*key))`, computed once per process; the arrays come back read-only
        because every model holding them shares them."""
        global _cache_bytes
        full = (self.seed, *self.scope, *key)
        hit = _CACHE.get(full)
        if hit is not None:
            _CACHE.move_to_end(full)
            return hit
        arrays = tuple(make(self.layer(*key)))
        for a in arrays:
            a.setflags(write=False)
        _CACHE[full] = arrays
        _cache_bytes += sum(a.nbytes for a in arrays)
        while _cache_bytes > _CACHE_MAX_BYTES and len(_CACHE) > 1:
            _, old = _CACHE.popitem(last=False)
            _cache_bytes -= sum(a.nbytes for a in old)
        return arrays


def _conv_bn_weights(
    d: Draw, cout: int, k: int, cin_per_group: int, bn: bool
) -> tuple[np.ndarray, np.ndarray]:
    w = d.conv(cout, k, cin_per_group)
    if not bn:
        return w, np.zeros(cout, np.float32)
    scale, shift = d.batch_norm(cout)
    return w * scale[:, None, None, None], shift


def _dwconv_bn_weights(d: Draw, c: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    w = d.depthwise(c, k)
    scale, shift = d.batch_norm(c)
    return w * scale[None, None, None, :], shift


def conv_bn(
    g: Graph,
    init: Init,
    x: int,
    cout: int,
    k: int,
    stride: int = 1,
    groups: int = 1,
    act: str = "NONE",
    name: str = "",
    bn: bool = True,
) -> int:
    cin = g.shape(x)[3]
    w, shift = init.cached(
        ("conv_bn", name, cout, k, cin, groups, bn),
        lambda d: _conv_bn_weights(d, cout, k, cin // groups, bn),
    )
    return g.conv2d(x, w, shift, stride, "SAME", act, name=name)


def dwconv_bn(
    g: Graph, init: Init, x: int, k: int, stride: int = 1, act: str = "NONE", name: str = ""
) -> int:
    c = g.shape(x)[3]
    w, shift = init.cached(("dwconv_bn", name, c, k), lambda d: _dwconv_bn_weights(d, c, k))
    return g.depthwise_conv2d(x, w, shift, stride, "SAME", act, name=name)


def batch_norm(g: Graph, init: Init, x: int, act: str = "NONE", name: str = "") -> int:
    """A batch norm with no conv before it becomes MUL + ADD, as the converter lowers it."""
    c = g.shape(x)[3]
    scale, shift = init.cached(("batch_norm", name, c), lambda d: d.batch_norm(c))
    s = g.const(scale.reshape(1, 1, 1, c), f"{name}/scale")
    b = g.const(shift.reshape(1, 1, 1, c), f"{name}/shift")
    return g.add(g.mul(x, s, name=f"{name}/mul"), b, act, name=f"{name}/add")


def classifier(g: Graph, init: Init, x: int, classes: int, name: str = "head") -> int:
    """Global average pool → fully connected → softmax."""
    pooled = g.mean(x, (1, 2), keep_dims=False, name=f"{name}/gap")
    cin = g.shape(pooled)[1]
    # std 0.001 as HW-NAS-Bench initialises its classifiers; keeps the softmax off saturation
    # for untrained weights, so its output still reflects every layer before it.
    (w,) = init.cached(("dense", name, classes, cin), lambda d: (d.dense(classes, cin, 1e-3),))
    logits = g.fully_connected(pooled, w, np.zeros(classes, np.float32), name=f"{name}/fc")
    return g.softmax(logits, name=f"{name}/softmax")


def channel_shuffle(g: Graph, x: int, groups: int, name: str) -> int:
    n, h, w, c = g.shape(x)
    y = g.reshape(x, (n, h, w, groups, c // groups), name=f"{name}/split")
    y = g.transpose(y, (0, 1, 2, 4, 3), name=f"{name}/swap")
    return g.reshape(y, (n, h, w, c), name=f"{name}/merge")


def mbconv(
    g: Graph,
    init: Init,
    x: int,
    cout: int,
    k: int,
    expand: int,
    stride: int,
    groups: int = 1,
    act: str = "RELU",
    se: bool = False,
    always_expand: bool = False,
    name: str = "",
) -> int:
    """Inverted residual: 1×1 expand → k×k depthwise → [squeeze-excite] → 1×1 project
    (+ residual when shapes allow). FBNet blocks expand even at e=1 (`always_expand`) and use
    grouped 1×1 convs with a channel shuffle; MobileNetV2 skips the expansion at e=1."""
    cin = g.shape(x)[3]
    mid = cin * expand
    y = x
    if expand != 1 or always_expand:
        y = _activated(
            g, conv_bn(g, init, y, mid, 1, 1, groups, name=f"{name}/expand"), act, f"{name}/expand"
        )
        if groups > 1:
            y = channel_shuffle(g, y, groups, f"{name}/shuffle")
    y = _activated(g, dwconv_bn(g, init, y, k, stride, name=f"{name}/dw"), act, f"{name}/dw")
    if se:
        y = squeeze_excite(g, init, y, name=f"{name}/se")
    y = conv_bn(g, init, y, cout, 1, 1, groups, name=f"{name}/project")
    if stride == 1 and cin == cout:
        y = g.add(y, x, name=f"{name}/residual")
    return y


def squeeze_excite(g: Graph, init: Init, x: int, ratio: int = 4, name: str = "se") -> int:
    c = g.shape(x)[3]
    r = max(1, c // ratio)
    w_reduce, w_expand = init.cached(
        ("squeeze_excite", name, c, r), lambda d: (d.conv(r, 1, c), d.conv(c, 1, r))
    )
    s = g.mean(x, (1, 2), keep_dims=True, name=f"{name}/pool")
    s = g.conv2d(s, w_reduce, np.zeros(r, np.float32), act="RELU", name=f"{name}/reduce")
    s = g.conv2d(s, w_expand, np.zeros(c, np.float32), name=f"{name}/expand")
    s = g.unary("LOGISTIC", s, name=f"{name}/gate")
    return g.mul(x, s, name=f"{name}/scale")


def _activated(g: Graph, x: int, act: str, name: str) -> int:
    """Apply an activation as its own op; `fuse_activations` later folds RELU/RELU6 into the
    producer exactly where the converter would."""
    if act == "NONE":
        return x
    kind = {"RELU": "RELU", "RELU6": "RELU6", "HSWISH": "HARD_SWISH"}[act]
    return g.unary(kind, x, name=f"{name}/{kind.lower()}")


def parse_kv(text: str, allowed: dict[str, tuple], what: str) -> dict[str, str]:
    """Parse `k=v,k=v` against allowed keys; every error names the key."""
    out: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        if "=" not in item:
            raise ArchError(f"{what}: {item!r} is not key=value")
        key, value = item.split("=", 1)
        if key not in allowed:
            raise ArchError(f"{what}: unknown key {key!r} (allowed: {', '.join(allowed)})")
        out[key] = value
    return out
