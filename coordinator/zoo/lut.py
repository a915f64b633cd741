"""Per-layer lookup tables (Single-Path NAS / FBNet style) for layer-wise spaces.

A network of a layer-wise space is a fixed stem and head around searchable layers, each one of a
few blocks at a shape fixed by its position. The table holds, per (layer, block), the `op`-space
arch of that block at that shape (`None` where the block is the identity and costs nothing).
Measuring those single-op models on a device and summing the layers' entries gives a network's
latency up to the stem and head, which are the same for every arch (fitted by the `lut`
predictor, coordinator/analysis/predictors.py). Their MACs sum to the network's exactly, which
is how the table is checked.

fbnet's cifar10 and cifar100 settings share every searchable layer (only the classifier
differs), so their tables are the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from coordinator.errors import UserError
from coordinator.zoo.analytics import stats
from coordinator.zoo.generate import build_graph, make_spec
from coordinator.zoo.spaces import fbnet

SPACES = ("fbnet",)
STEM_CHANNELS = 16


def check_space(space: str) -> None:
    if space not in SPACES:
        raise UserError(
            f"lookup tables are built for layer-wise spaces ({', '.join(SPACES)}), not {space!r}"
        )


def check_dataset(space: str, dataset: str) -> None:
    check_space(space)
    if dataset not in fbnet.DATASETS:
        raise UserError(f"{space} datasets are {', '.join(fbnet.DATASETS)}, not {dataset!r}")


@lru_cache(maxsize=8)
def table(space: str, dataset: str) -> tuple[tuple[str | None, ...], ...]:
    """table[layer][block] = the canonical op arch of that block at that layer's input shape,
    or None for the identity."""
    check_dataset(space, dataset)
    size, _, _, stem_stride, _ = fbnet.DATASETS[dataset]
    hw = -(-size // stem_stride)
    rows = []
    for cin, cout, stride in fbnet.layer_plan(dataset):
        row = []
        for block in fbnet.BLOCKS:
            if block == "skip" and stride == 1 and cin == cout:
                row.append(None)
            else:
                row.append(f"fbnet:{hw}x{hw}x{cin}:b={block},s={stride},cout={cout}")
        rows.append(tuple(row))
        hw = -(-hw // stride)
    return tuple(rows)


def op_archs(space: str, dataset: str) -> list[str]:
    """Every op arch of the table once, in layer-then-block order: what a device measures."""
    return list(dict.fromkeys(a for row in table(space, dataset) for a in row if a is not None))


def _choices(space: str, archs: Sequence[str]) -> np.ndarray:
    return np.array([fbnet.parse(a) for a in archs], dtype=np.intp).reshape(-1, fbnet.N_LAYERS)


def entry_matrix(space: str, dataset: str, values: Mapping[str, float]) -> np.ndarray:
    """(layers, blocks) array of the table's entries looked up in `values` (op arch -> number);
    identities are 0, entries missing from `values` are NaN."""
    return np.array(
        [
            [0.0 if a is None else float(values.get(a, np.nan)) for a in row]
            for row in table(space, dataset)
        ]
    )


def layer_sums(entries: np.ndarray, space: str, archs: Sequence[str]) -> np.ndarray:
    """Per arch, the sum over its layers of the chosen blocks' entries."""
    choices = _choices(space, archs)
    return entries[np.arange(entries.shape[0]), choices].sum(axis=1)


def missing(space: str, dataset: str, values: Mapping[str, float]) -> list[str]:
    return [a for a in op_archs(space, dataset) if a not in values]


def covered_dataset(space: str, values: Mapping[str, float]) -> str:
    """The space's dataset whose whole table `values` covers, else a UserError that says how
    many entries are missing and how to measure them."""
    check_space(space)
    order = [fbnet.DEFAULT_DATASET, *(d for d in fbnet.DATASETS if d != fbnet.DEFAULT_DATASET)]
    gaps = {d: missing(space, d, values) for d in order}
    for dataset, gap in gaps.items():
        if not gap:
            return dataset
    best = min(gaps, key=lambda d: len(gaps[d]))
    n, total = len(gaps[best]), len(op_archs(space, best))
    raise UserError(
        f"the lookup table has {total - n} of the {total} {space}/{best} layer entries "
        f"(missing e.g. {gaps[best][0]}); write them with `halo-coord zoo lut --space {space} "
        f"--dataset {best} --out DIR` and measure that directory on the device"
    )


@lru_cache(maxsize=8)
def macs_table(space: str, dataset: str) -> tuple[np.ndarray, int]:
    """(per-(layer, block) MACs, MACs of the fixed stem + head) counted on the zoo's graphs.
    Building the ~190 single-block graphs takes about a second, once per process."""
    entries = {a: stats(build_graph(make_spec("op", a))[1]).macs for a in op_archs(space, dataset)}
    matrix = entry_matrix(space, dataset, entries)
    all_skip = "-".join(["8"] * fbnet.N_LAYERS)
    network = stats(build_graph(make_spec(space, all_skip, dataset))[1]).macs
    fixed = network - int(layer_sums(matrix, space, [all_skip])[0])
    return matrix, fixed


def macs(space: str, archs: Sequence[str], dataset: str = fbnet.DEFAULT_DATASET) -> np.ndarray:
    """Analytic MACs of whole networks from the per-layer table (equal to the zoo's count)."""
    matrix, fixed = macs_table(space, dataset)
    return layer_sums(matrix, space, archs) + fixed
