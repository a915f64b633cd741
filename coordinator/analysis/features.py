"""Architecture features computed from the encoding alone (no model files), for latency
predictors.

nb201 (39 columns, `NB201_COLUMNS`): one-hot of the 6 edges x 5 ops (30), per-op counts (5),
`connected` (the cell output depends on its input, data/README formula), the number of live
conv ops (convs whose result reaches the cell output; 0 when disconnected), the number of
dead-branch ops (computed but not reaching the output: they still cost time on TFLite), and
the analytic MACs in millions, which equal the zoo's `analytics.stats(graph).macs` for the
CIFAR skeleton: a constant stem/reduction/head part plus 5 cells x the per-edge costs of
reference/nas.md §1, and 0 for a disconnected cell (the zoo folds that network to a constant).

fbnet (208 columns): one-hot of the 22 layers x 9 blocks (198), per-block counts (9) and the
MACs in millions of the CIFAR-100 network (HELP's setting), summed from the zoo's per-layer
counts (`lut.macs`).

`features(space, archs)` takes canonical encodings (nb201 also takes indices or any accepted
spelling, at the cost of parsing); all 15625 nb201 archs take a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from coordinator.errors import UserError
from coordinator.zoo import lut
from coordinator.zoo.spaces import fbnet, nb201
from coordinator.zoo.spaces.common import ArchError

SPACES = ("nb201", "fbnet")

# nb201 MACs (CIFAR 32x32, C=16, N=5): H^2 C^2 is 262,144 in all three stages; sum of H*W*C
# over the stages is 28,672. The fixed part (stem, two reductions, classifier) is taken from the
# zoo-built arch 0 (16,962,176 MACs, of which 9,154,560 are its cells'); a test checks it.
NB201_HWC2 = 262_144
NB201_HWC = 28_672
NB201_FIXED_MACS = 7_807_616
_OP_MACS = {
    "none": 0,
    "skip_connect": 0,
    "nor_conv_1x1": 3 * NB201_HWC2,
    "nor_conv_3x3": 3 * 9 * NB201_HWC2,
    "avg_pool_3x3": 9 * NB201_HWC,
}  # per cell position, summed over the 3 stages
NB201_CONV = (nb201.OPS.index("nor_conv_1x1"), nb201.OPS.index("nor_conv_3x3"))

NB201_COLUMNS = (
    [f"e{s}{d}={op}" for s, d in nb201.EDGES for op in nb201.OPS]
    + [f"n_{op}" for op in nb201.OPS]
    + ["connected", "live_convs", "dead_ops", "mmacs"]
)
FBNET_COLUMNS = (
    [f"l{i}={b}" for i in range(fbnet.N_LAYERS) for b in fbnet.BLOCKS]
    + [f"n_{b}" for b in fbnet.BLOCKS]
    + ["mmacs"]
)


def check_space(space: str) -> None:
    if space not in SPACES:
        raise UserError(f"--space: latency prediction supports {', '.join(SPACES)}, not {space!r}")


@lru_cache(maxsize=1)
def _nb201_codes() -> dict[str, np.ndarray]:
    """canonical arch string -> its 6 op indices (edge order), for all 15625 archs."""
    out = {}
    for i in range(nb201.SIZE):
        arch = nb201.from_index(i)
        out[arch] = np.array([nb201.OPS.index(o) for o in nb201.parse_ops(arch)], np.int64)
    return out


def canonical(space: str, text: str) -> str:
    """The canonical encoding of `text` (nb201: an arch string or an index); ArchError if it is
    not an arch of the space."""
    check_space(space)
    if space == "nb201":
        return nb201.canonical(text)
    return fbnet.canonical(text)


def op_codes(space: str, archs: Sequence[str]) -> np.ndarray:
    """(n, positions) op indices: nb201 (n, 6), fbnet (n, 22)."""
    check_space(space)
    if space == "nb201":
        table = _nb201_codes()
        rows = []
        for a in archs:
            code = table.get(a)
            if code is None:
                try:
                    code = table[nb201.canonical(a)]
                except ArchError as exc:
                    raise UserError(str(exc)) from None
            rows.append(code)
        return np.array(rows, np.int64).reshape(len(rows), len(nb201.EDGES))
    try:
        return np.array([fbnet.parse(a) for a in archs], np.int64).reshape(
            len(archs), fbnet.N_LAYERS
        )
    except ArchError as exc:
        raise UserError(str(exc)) from None


def _onehot(codes: np.ndarray, n_ops: int) -> np.ndarray:
    n, positions = codes.shape
    out = np.zeros((n, positions * n_ops))
    out[np.arange(n)[:, None], np.arange(positions) * n_ops + codes] = 1.0
    return out


def onehot(space: str, archs: Sequence[str]) -> np.ndarray:
    """The one-hot encoding alone (nb201 30 columns, fbnet 198)."""
    codes = op_codes(space, archs)
    return _onehot(codes, len(nb201.OPS if space == "nb201" else fbnet.BLOCKS))


def _nb201_structure(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(connected, node-1 live, node-2 live) per arch; a node is live when a path of non-none
    edges leads from it to the cell output (nb201.dead_nodes, vectorised)."""
    n = codes != 0  # `none` is op 0
    e01, e02, e12, e03, e13, e23 = (n[:, i] for i in range(6))
    r1 = e01
    r2 = e02 | (r1 & e12)
    connected = e03 | (r1 & e13) | (r2 & e23)
    live2 = e23
    live1 = e13 | (e12 & live2)
    return connected, live1, live2


def nb201_macs(codes: np.ndarray) -> np.ndarray:
    """MACs of the zoo-built CIFAR network for each arch (int64)."""
    per_op = np.array([_OP_MACS[o] for o in nb201.OPS], np.int64)
    variable = 5 * per_op[codes].sum(axis=1)
    connected, _, _ = _nb201_structure(codes)
    return np.where(connected, NB201_FIXED_MACS + variable, 0)


def macs(space: str, archs: Sequence[str]) -> np.ndarray:
    """Analytic MACs per arch: nb201 CIFAR, fbnet CIFAR-100 (the settings of the public data)."""
    codes = op_codes(space, archs)
    if space == "nb201":
        return nb201_macs(codes)
    return fbnet_macs(codes)


def fbnet_macs(codes: np.ndarray) -> np.ndarray:
    matrix, fixed = lut.macs_table("fbnet", fbnet.DEFAULT_DATASET)
    return (matrix[np.arange(fbnet.N_LAYERS), codes].sum(axis=1) + fixed).astype(np.int64)


def features(space: str, archs: Sequence[str]) -> np.ndarray:
    """(n, d) float feature matrix; columns `NB201_COLUMNS` or `FBNET_COLUMNS`."""
    codes = op_codes(space, archs)
    if space == "fbnet":
        oh = _onehot(codes, len(fbnet.BLOCKS))
        counts = oh.reshape(len(codes), fbnet.N_LAYERS, len(fbnet.BLOCKS)).sum(axis=1)
        return np.hstack([oh, counts, fbnet_macs(codes)[:, None] / 1e6])
    n_ops = len(nb201.OPS)
    oh = _onehot(codes, n_ops)
    counts = oh.reshape(len(codes), 6, n_ops).sum(axis=1)
    connected, live1, live2 = _nb201_structure(codes)
    dst = np.array([d for _, d in nb201.EDGES])
    # an edge's result reaches the output when its destination is node 3 or a live node
    edge_live = np.column_stack(
        [np.ones(len(codes), bool) if d == 3 else (live1 if d == 1 else live2) for d in dst]
    )
    edge_live &= connected[:, None]
    is_conv = np.isin(codes, NB201_CONV)
    live_convs = (is_conv & edge_live).sum(axis=1)
    dead_ops = ((codes != 0) & ~edge_live & connected[:, None]).sum(axis=1)
    mmacs = nb201_macs(codes) / 1e6
    return np.column_stack([oh, counts, connected, live_convs, dead_ops, mmacs]).astype(float)
