"""Single-layer models for per-layer latency lookup tables (Single-Path NAS / FBNet style).

Encoding: `<kind>:<H>x<W>x<C>:<key>=<value>,...` with every key present in canonical form, e.g.
`conv:32x32x16:k=3,s=1,cout=32,g=1,act=relu,pad=same` or
`mbconv:16x16x24:k=5,e=6,s=2,cout=32,g=1,act=relu6,se=0`. `pad=explicit` writes a PAD op and a
VALID conv (what a converted PyTorch model contains) instead of SAME padding. `fbnet` is one
FBNet block exactly as the fbnet space builds it (`fbnet:32x32x16:b=k3_e1_g2,s=1,cout=24`), so a
lookup table of them sums to the network (`coordinator/zoo/lut.py`).
"""

from __future__ import annotations

import numpy as np

from coordinator.zoo.graph import Graph, fuse_activations
from coordinator.zoo.kernels import same_padding
from coordinator.zoo.spaces import fbnet
from coordinator.zoo.spaces.common import (
    ArchError,
    Built,
    Init,
    conv_bn,
    dwconv_bn,
    mbconv,
    parse_kv,
)

NAME = "op"
SUMMARY = "single layers for per-layer lookup tables"
DATASETS = {"none": None}
DEFAULT_DATASET = "none"
SIZE = None  # not enumerable

_ACTS = {"none": "NONE", "relu": "RELU", "relu6": "RELU6", "hswish": "HSWISH"}
# kind → ordered {key: (default, allowed values or type)}
KINDS: dict[str, dict[str, tuple]] = {
    "conv": {
        "k": ("3", int),
        "s": ("1", (1, 2)),
        "cout": ("", int),
        "g": ("1", int),
        "act": ("relu", ("none", "relu", "relu6")),
        "pad": ("same", ("same", "explicit")),
    },
    "dwconv": {
        "k": ("3", int),
        "s": ("1", (1, 2)),
        "m": ("1", int),
        "act": ("relu", ("none", "relu", "relu6")),
    },
    "mbconv": {
        "k": ("3", (3, 5, 7)),
        "e": ("6", int),
        "s": ("1", (1, 2)),
        "cout": ("", int),
        "g": ("1", (1, 2)),
        "act": ("relu6", tuple(_ACTS)),
        "se": ("0", (0, 1)),
    },
    "skip": {"s": ("1", (1, 2)), "cout": ("", int)},
    "fbnet": {"b": ("k3_e1", fbnet.BLOCKS), "s": ("1", (1, 2)), "cout": ("", int)},
    "pool": {"type": ("avg", ("avg", "max")), "k": ("3", int), "s": ("1", (1, 2))},
    "gap": {},
    "fc": {"cout": ("10", int)},
    "concat": {"n": ("2", int)},
    "act": {"fn": ("relu", ("relu", "relu6", "hswish", "logistic", "softmax"))},
}


def parse(text: str) -> tuple[str, tuple[int, int, int], dict]:
    parts = text.strip().split(":")
    if len(parts) not in (2, 3):
        raise ArchError(f"op arch {text!r}: expected <kind>:<H>x<W>x<C>[:key=value,...]")
    kind, dims = parts[0], parts[1]
    if kind not in KINDS:
        raise ArchError(f"op arch {text!r}: unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
    try:
        h, w, c = (int(d) for d in dims.split("x"))
    except ValueError:
        raise ArchError(f"op arch {text!r}: shape {dims!r} must be <H>x<W>x<C>") from None
    if min(h, w, c) < 1 or h * w * c > 1 << 26:
        raise ArchError(f"op arch {text!r}: shape {dims!r} out of range")
    given = parse_kv(parts[2] if len(parts) == 3 else "", KINDS[kind], f"op arch {text!r}")
    params: dict = {}
    for key, (default, allowed) in KINDS[kind].items():
        raw = given.get(key, default if key != "cout" or default else str(c))
        if allowed is int or (isinstance(allowed, tuple) and isinstance(allowed[0], int)):
            if not raw.isdigit() or int(raw) < 1 and key != "se":
                raise ArchError(f"op arch {text!r}: {key}={raw!r} must be a positive integer")
            value: object = int(raw)
        else:
            value = raw
        if isinstance(allowed, tuple) and value not in allowed:
            raise ArchError(f"op arch {text!r}: {key}={raw} not in {allowed}")
        params[key] = value
    return kind, (h, w, c), params


def format_arch(kind: str, shape: tuple[int, int, int], params: dict) -> str:
    body = ",".join(f"{k}={params[k]}" for k in KINDS[kind])
    dims = "x".join(map(str, shape))
    return f"{kind}:{dims}:{body}" if body else f"{kind}:{dims}"


def canonical(text: str) -> str:
    return format_arch(*parse(text))


_SHAPES = (
    (32, 32, 16),
    (16, 16, 32),
    (8, 8, 64),
    (56, 56, 24),
    (28, 28, 40),
    (14, 14, 80),
    (7, 7, 160),
)


def sample(rng: np.random.Generator, n: int) -> list[str]:
    """Random layers over typical shapes (for coverage; LUTs name their layers explicitly)."""
    out = []
    for _ in range(n):
        shape = _SHAPES[int(rng.integers(len(_SHAPES)))]
        kind = list(KINDS)[int(rng.integers(len(KINDS)))]
        params = {}
        for key, (default, allowed) in KINDS[kind].items():
            if key == "cout":
                params[key] = str(int(rng.choice((16, 24, 32, 64))))
            elif isinstance(allowed, tuple):
                params[key] = str(allowed[int(rng.integers(len(allowed)))])
            else:
                params[key] = default
        text = f"{kind}:{'x'.join(map(str, shape))}:" + ",".join(
            f"{k}={v}" for k, v in params.items()
        )
        out.append(canonical(text))
    return out


def build(arch: str, dataset: str, resolution: int | None, init: Init) -> Built:
    kind, (h, w, c), p = parse(arch)
    if resolution:
        h = w = resolution
    g = Graph()
    x = g.input((1, h, w, c))
    y = _layer(g, init, x, kind, p, c)
    g.mark_output(y)
    return Built(fuse_activations(g))


def _layer(g: Graph, init: Init, x: int, kind: str, p: dict, c: int) -> int:
    if kind == "conv":
        if c % p["g"] or p["cout"] % p["g"]:
            raise ArchError(f"conv: groups {p['g']} must divide cin {c} and cout {p['cout']}")
        act = _ACTS[p["act"]]
        if p["pad"] == "explicit":
            (_, hb, ha), (_, wb, wa) = (same_padding(d, p["k"], p["s"]) for d in g.shape(x)[1:3])
            x = g.pad(x, [[0, 0], [hb, ha], [wb, wa], [0, 0]], name="pad")
            wts = init.layer("conv").conv(p["cout"], p["k"], c // p["g"])
            return g.conv2d(
                x, wts, np.zeros(p["cout"], np.float32), p["s"], "VALID", act, name="conv"
            )
        return conv_bn(g, init, x, p["cout"], p["k"], p["s"], p["g"], act, name="conv")
    if kind == "dwconv":
        if p["m"] == 1:
            return dwconv_bn(g, init, x, p["k"], p["s"], _ACTS[p["act"]], name="dwconv")
        wts = init.layer("dwconv").depthwise(c * p["m"], p["k"])
        return g.depthwise_conv2d(
            x,
            wts,
            np.zeros(c * p["m"], np.float32),
            p["s"],
            "SAME",
            _ACTS[p["act"]],
            p["m"],
            name="dwconv",
        )
    if kind == "mbconv":
        if p["g"] > 1 and (c % p["g"] or p["cout"] % p["g"]):
            raise ArchError(f"mbconv: groups {p['g']} must divide cin {c} and cout {p['cout']}")
        return mbconv(
            g,
            init,
            x,
            p["cout"],
            p["k"],
            p["e"],
            p["s"],
            p["g"],
            _ACTS[p["act"]],
            se=bool(p["se"]),
            always_expand=p["g"] > 1,
            name="mbconv",
        )
    if kind == "skip":
        if p["s"] == 1 and p["cout"] == c:
            raise ArchError("skip: an identity layer has no op to measure (use s=2 or cout≠cin)")
        return conv_bn(g, init, x, p["cout"], 1, p["s"], act="RELU", name="skip")
    if kind == "fbnet":
        if p["b"] == "skip" and p["s"] == 1 and p["cout"] == c:
            raise ArchError("fbnet: skip at s=1, cout=cin is the identity; nothing to measure")
        return fbnet.block(g, init, x, fbnet.BLOCKS.index(p["b"]), p["cout"], p["s"], "fbnet")
    if kind == "pool":
        return g.pool2d(x, p["type"], p["k"], p["s"], name="pool")
    if kind == "gap":
        return g.mean(x, (1, 2), keep_dims=False, name="gap")
    if kind == "fc":
        flat = g.reshape(x, (1, -1), name="flatten")
        n_in = g.shape(flat)[1]
        return g.fully_connected(
            flat,
            init.layer("fc").dense(p["cout"], n_in),
            np.zeros(p["cout"], np.float32),
            name="fc",
        )
    if kind == "concat":
        branches = [conv_bn(g, init, x, c, 1, act="RELU", name=f"branch{i}") for i in range(p["n"])]
        return g.concat(branches, axis=3, name="concat")
    fn = p["fn"]
    if fn == "softmax":
        return g.softmax(x, name="softmax")
    return g.unary(
        {"relu": "RELU", "relu6": "RELU6", "hswish": "HARD_SWISH", "logistic": "LOGISTIC"}[fn],
        x,
        name=fn,
    )
