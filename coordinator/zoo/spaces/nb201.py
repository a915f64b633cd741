"""NAS-Bench-201: the 5^6 cell space on the TinyNetwork skeleton (C=16, N=5), exactly as the
benchmark defines it, with the benchmark's own architecture index.

Cell: node j = Σ_{i<j} op_ij(node i); edges in string order 0→1, 0→2, 1→2, 0→3, 1→3, 2→3.
`nor_conv_k` = ReLU → k×k conv → BN; `avg_pool_3x3` counts only in-bounds cells (TF SAME
padding, like PyTorch's count_include_pad=False); `none` is zero. A node whose inputs are all
`none` is zero but still computed at run time when something reads it, and ops on dead branches
(nodes no path leads from to the cell output) are computed too: the published TFLite latencies
include them (reference/nas.md §1, §3a). XNNPACK would drop an op whose result nothing reads, so
each dead node's tensor is an extra model output (after the class probabilities, which stay
output 0). Measured against the published columns (benchmarks/nb201_rank.py), keeping dead
nodes raises Spearman rho on the phone and CPU columns from 0.74-0.91 to 0.80-0.96.
A cell whose output does not depend on its input makes the whole network constant; the
converter folds such a network to a constant output, and so do we (`connected: false`).
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from coordinator.zoo.graph import Graph, evaluate, fuse_activations
from coordinator.zoo.spaces.common import ArchError, Built, Init, batch_norm, classifier, conv_bn

NAME = "nb201"
SUMMARY = "NAS-Bench-201 cells on the TinyNetwork skeleton"
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (from, to) in string order
SIZE = len(OPS) ** len(EDGES)
DATASETS = {"cifar10": (32, 10), "cifar100": (32, 100), "imagenet16-120": (16, 120)}
DEFAULT_DATASET = "cifar10"
C, N = 16, 5

_codes: np.ndarray | None = None
_index_of: dict[int, int] | None = None


def _table() -> tuple[np.ndarray, dict[int, int]]:
    """index → base-5 code of the six ops, in the benchmark's order (shipped as package data)."""
    global _codes, _index_of
    if _codes is None:
        raw = resources.files("coordinator.zoo").joinpath("nb201_index.bin").read_bytes()
        _codes = np.frombuffer(raw, "<u2").astype(np.int64)
        _index_of = {int(c): i for i, c in enumerate(_codes)}
    return _codes, _index_of


def ops_to_string(ops: tuple[str, ...]) -> str:
    e = [f"{op}~{src}" for op, (src, _) in zip(ops, EDGES, strict=True)]
    return f"|{e[0]}|+|{e[1]}|{e[2]}|+|{e[3]}|{e[4]}|{e[5]}|"


def parse_ops(text: str) -> tuple[str, ...]:
    """Ops of a `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` string; errors say what is wrong where."""
    groups = text.strip().split("+")
    if len(groups) != 3:
        raise ArchError(
            f"nb201 arch {text!r}: expected 3 '+'-separated node groups, got {len(groups)}"
        )
    ops = []
    for node, group in enumerate(groups, start=1):
        if not (group.startswith("|") and group.endswith("|")):
            raise ArchError(f"nb201 arch {text!r}: node {node} group {group!r} must be |...|")
        items = group[1:-1].split("|")
        if len(items) != node:
            raise ArchError(
                f"nb201 arch {text!r}: node {node} needs {node} inputs, got {len(items)}"
            )
        for src, item in enumerate(items):
            op, sep, idx = item.partition("~")
            if not sep or idx != str(src):
                raise ArchError(f"nb201 arch {text!r}: {item!r} must be op~{src}")
            if op not in OPS:
                raise ArchError(f"nb201 arch {text!r}: unknown op {op!r} (ops: {', '.join(OPS)})")
            ops.append(op)
    return tuple(ops)


def code_of(ops: tuple[str, ...]) -> int:
    c = 0
    for op in ops:
        c = c * len(OPS) + OPS.index(op)
    return c


def ops_of_code(code: int) -> tuple[str, ...]:
    out = []
    for _ in EDGES:
        code, r = divmod(code, len(OPS))
        out.append(OPS[r])
    return tuple(reversed(out))


def from_index(index: int) -> str:
    if not 0 <= index < SIZE:
        raise ArchError(f"nb201 index {index} out of range 0..{SIZE - 1}")
    return ops_to_string(ops_of_code(int(_table()[0][index])))


def index_of(arch: str) -> int:
    return _table()[1][code_of(parse_ops(arch))]


def canonical(text: str) -> str:
    """Canonical arch string for an arch string or a decimal index."""
    t = text.strip()
    if t.lstrip("-").isdigit():
        return from_index(int(t))
    return ops_to_string(parse_ops(t))


def enumerate_all() -> list[str]:
    return [from_index(i) for i in range(SIZE)]


def sample(rng: np.random.Generator, n: int) -> list[str]:
    if n > SIZE:
        raise ArchError(f"cannot sample {n} distinct nb201 archs from {SIZE}")
    return [from_index(int(i)) for i in rng.choice(SIZE, size=n, replace=False)]


def is_connected(ops: tuple[str, ...]) -> bool:
    live = [o != "none" for o in ops]
    r1 = live[0]
    r2 = live[1] or (r1 and live[2])
    return live[3] or (r1 and live[4]) or (r2 and live[5])


def build(arch: str, dataset: str, resolution: int | None, init: Init) -> Built:
    if dataset not in DATASETS:
        raise ArchError(f"nb201 supports datasets {', '.join(DATASETS)}, not {dataset!r}")
    ops = parse_ops(arch)
    size, classes = DATASETS[dataset]
    size = resolution or size
    if size < 4:
        raise ArchError(
            f"nb201 needs an input of at least 4x4 (two stride-2 reductions), got {size}"
        )
    g = Graph()
    x = g.input((1, size, size, 3))
    h = conv_bn(g, init, x, C, 3, name="stem")
    kept: list[int] = []
    for stage, channels in enumerate((C, 2 * C, 4 * C)):
        if stage:
            h = _reduction(g, init, h, channels, f"reduce{stage}")
        for cell in range(N):
            h = _cell(g, init, h, ops, f"s{stage}c{cell}", kept)
    h = batch_norm(g, init, h, act="RELU", name="lastact")
    g.mark_output(classifier(g, init, h, classes))
    for t in kept:
        g.mark_output(t)
    fuse_activations(g)
    if is_connected(ops):
        return Built(g)
    return Built(
        _folded(g),
        connected=False,
        folded=True,
        notes=[
            "cell output is disconnected from its input: the network is constant and "
            "was folded to its output, as the TFLite converter does"
        ],
    )


def dead_nodes(ops: tuple[str, ...]) -> set[int]:
    """Intermediate nodes (1, 2) from which no path reaches the cell output."""
    e = dict(zip(EDGES, ops, strict=True))
    live2 = e[(2, 3)] != "none"
    live1 = e[(1, 3)] != "none" or (e[(1, 2)] != "none" and live2)
    return {j for j, live in ((1, live1), (2, live2)) if not live}


def _cell(g: Graph, init: Init, x: int, ops: tuple[str, ...], name: str, kept: list[int]) -> int:
    """One cell. A dead node's tensor is appended to `kept`: the model outputs it, so it is
    computed whatever the runtime prunes (XNNPACK drops ops whose result nothing reads)."""
    channels = g.shape(x)[3]
    dead = dead_nodes(ops)
    nodes = [x]
    relu: dict[int, int] = {}  # one ReLU per node however many convs read it (converter CSE)
    for j in (1, 2, 3):
        edges = [(src, op) for (src, dst), op in zip(EDGES, ops, strict=True) if dst == j]
        edges = [(src, op) for src, op in edges if op != "none"]
        terms = []
        for src, op in edges:
            inp = nodes[src]
            if inp is None:  # a zero node that something reads: computed, not folded
                inp = nodes[src] = _zero(g, x, f"{name}/n{src}")
            if op == "skip_connect":
                terms.append(inp)
            elif op == "avg_pool_3x3":
                terms.append(g.pool2d(inp, "avg", 3, 1, name=f"{name}/e{src}{j}_pool"))
            else:
                k = 3 if op == "nor_conv_3x3" else 1
                if src not in relu:
                    relu[src] = g.unary("RELU", inp, name=f"{name}/n{src}_relu")
                terms.append(
                    conv_bn(g, init, relu[src], channels, k, name=f"{name}/e{src}{j}_conv")
                )
        node = terms[0] if terms else None
        for t in terms[1:]:
            node = g.add(node, t, name=f"{name}/n{j}_sum")
        nodes.append(node)
        if j in dead and node is not None and node not in nodes[:j] and node not in kept:
            kept.append(node)
    return nodes[3] if nodes[3] is not None else _zero(g, x, f"{name}/n3")


def _zero(g: Graph, like: int, name: str) -> int:
    return g.mul(like, g.const(np.zeros(1, np.float32), f"{name}/zero"), name=f"{name}_zero")


def _reduction(g: Graph, init: Init, x: int, channels: int, name: str) -> int:
    """ResNet basic block, stride 2: ReLUConvBN 3×3/2 → ReLUConvBN 3×3, plus avg-pool 2×2 →
    1×1 conv (no BN) on the shortcut."""
    a = conv_bn(
        g, init, g.unary("RELU", x, name=f"{name}/a_relu"), channels, 3, 2, name=f"{name}/a"
    )
    b = conv_bn(
        g, init, g.unary("RELU", a, name=f"{name}/b_relu"), channels, 3, 1, name=f"{name}/b"
    )
    shortcut = g.pool2d(x, "avg", 2, 2, "VALID", name=f"{name}/down_pool")
    shortcut = conv_bn(g, init, shortcut, channels, 1, bn=False, name=f"{name}/down_conv")
    return g.add(b, shortcut, name=f"{name}/sum")


def _folded(g: Graph) -> Graph:
    inp = g.inputs[0]
    value = evaluate(g, {inp: np.zeros(g.tensors[inp].shape)})[g.outputs[0]]
    folded = Graph(g.name)
    folded.input(g.tensors[inp].shape)
    folded.mark_output(folded.const(value.astype(np.float32), "output"))
    return folded
