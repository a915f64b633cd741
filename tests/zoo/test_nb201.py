"""NB201 encoding, index order, connectivity and MACs against the benchmark's published data."""

import csv

import pytest

from coordinator.zoo.analytics import stats
from coordinator.zoo.spaces import nb201
from coordinator.zoo.spaces.common import ArchError, Init


@pytest.fixture(scope="module")
def published(shared_data):
    with open(shared_data / "nb201" / "latency_ms.csv", newline="") as f:
        return [(int(r["index"]), r["arch_str"]) for r in csv.DictReader(f)]


def test_index_and_arch_round_trip_for_all_15625(published):
    assert len(published) == nb201.SIZE
    for index, arch in published:
        assert nb201.from_index(index) == arch
        assert nb201.index_of(arch) == index
        assert nb201.canonical(str(index)) == arch


def test_disconnected_cells_are_the_341_of_the_benchmark(published):
    disconnected = [i for i, a in published if not nb201.is_connected(nb201.parse_ops(a))]
    assert len(disconnected) == 341
    assert 10 in disconnected and 105 in disconnected


def _macs(arch: str) -> int:
    return stats(nb201.build(arch, "cifar10", None, Init(0)).graph).macs


HWC2 = 262_144  # H²C² of every stage: 32·32·16², 16·16·32², 8·8·64²
POOL = 9 * (32 * 32 * 16 + 16 * 16 * 32 + 8 * 8 * 64)


@pytest.mark.parametrize("edge", range(6))
def test_macs_rise_by_the_exact_cost_of_each_edge_op(edge):
    base = ["skip_connect"] * 6
    costs = {}
    for op in ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"):
        ops = list(base)
        ops[edge] = op
        costs[op] = _macs(nb201.ops_to_string(tuple(ops)))
    cells = 5
    assert costs["nor_conv_1x1"] - costs["skip_connect"] == cells * 3 * HWC2
    assert costs["nor_conv_3x3"] - costs["skip_connect"] == cells * 3 * 9 * HWC2
    assert costs["avg_pool_3x3"] - costs["skip_connect"] == cells * POOL
    assert (
        costs["skip_connect"]
        < costs["avg_pool_3x3"]
        < costs["nor_conv_1x1"]
        < costs["nor_conv_3x3"]
    )


def test_macs_grow_with_conv_count():
    macs = []
    for n in range(7):
        ops = ["nor_conv_3x3"] * n + ["skip_connect"] * (6 - n)
        macs.append(_macs(nb201.ops_to_string(tuple(ops))))
    assert all(b - a == 15 * 9 * HWC2 for a, b in zip(macs, macs[1:], strict=False))


def test_graph_structure_follows_the_arch_string():
    # index 1: |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+
    #          |skip_connect~0|nor_conv_3x3~1|skip_connect~2|
    g = nb201.build(nb201.from_index(1), "cifar10", None, Init(0)).graph
    kinds = [op.kind for op in g.ops]
    assert kinds.count("CONV_2D") == 1 + 3 * 3 * 5 + 2 * 3  # stem, 3 convs × 15 cells, reductions
    assert kinds.count("AVERAGE_POOL_2D") == 15 + 2  # one per cell + reduction shortcuts
    assert g.tensors[g.inputs[0]].shape == (1, 32, 32, 3)
    assert g.tensors[g.outputs[0]].shape == (1, 10)


def test_zero_node_read_by_a_conv_is_computed_not_folded():
    # node 1 has only a none input, yet a conv reads it: a MUL by zero keeps it at run time
    arch = "|none~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    g = nb201.build(arch, "cifar10", None, Init(0)).graph
    assert sum(op.kind == "MUL" for op in g.ops) == 15 + 1  # one per cell + lowered last BN


def test_dead_nodes_stay_computed_as_extra_outputs():
    # node 1 = conv(node 0) but nothing on the way to the cell output reads it; node 2 = sum of
    # two convs that nothing reads either. Both are computed in the published graphs, so they
    # must survive XNNPACK's removal of unused ops: each is a model output.
    arch = "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|"
    assert nb201.dead_nodes(nb201.parse_ops(arch)) == {1, 2}
    g = nb201.build(arch, "cifar10", None, Init(0)).graph
    assert g.tensors[g.outputs[0]].shape == (1, 10)  # class probabilities stay output 0
    extra = [g.tensors[t].name for t in g.outputs[1:]]
    assert len(extra) == 2 * 15
    assert "s1c2/e01_conv" in extra and "s1c2/n2_sum" in extra
    kinds = [op.kind for op in g.ops]
    assert kinds.count("CONV_2D") == 1 + 3 * 15 + 2 * 3


def test_live_nodes_are_not_outputs():
    arch = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
    assert nb201.dead_nodes(nb201.parse_ops(arch)) == set()
    assert len(nb201.build(arch, "cifar10", None, Init(0)).graph.outputs) == 1


def test_disconnected_arch_is_folded_to_a_constant():
    built = nb201.build(nb201.from_index(10), "cifar10", None, Init(0))
    assert not built.connected and built.folded and not built.graph.ops
    assert built.graph.tensors[built.graph.outputs[0]].is_const


@pytest.mark.parametrize(
    "text",
    [
        "|nor_conv_3x3~0|+|none~0|",
        "|bogus~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
        "15625",
        "-1",
        "",
    ],
)
def test_bad_archs_are_rejected(text):
    with pytest.raises(ArchError):
        nb201.canonical(text)
