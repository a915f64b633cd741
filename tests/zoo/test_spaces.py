"""Encodings of the fbnet, mbv2 and op spaces round-trip; bad encodings are rejected."""

import csv

import numpy as np
import pytest

from coordinator.zoo.generate import build_model, make_spec
from coordinator.zoo.spaces import fbnet, mbv2, op
from coordinator.zoo.spaces.common import ArchError


def test_fbnet_encodings_of_the_published_archs_round_trip(shared_data):
    with open(shared_data / "fbnet" / "latency_ms.csv", newline="") as f:
        archs = [r["arch"] for r in csv.DictReader(f)]
    assert len(archs) == 5000
    for a in archs:
        assert fbnet.canonical(a) == a


def test_fbnet_layer_plan_matches_the_benchmark():
    plan = fbnet.layer_plan("cifar100")
    assert len(plan) == 22
    assert [s for _, _, s in plan if s == 2] == [2, 2, 2]
    assert plan[-1][1] == 352


@pytest.mark.parametrize("space", [fbnet, mbv2, op])
def test_samples_are_canonical_and_deterministic(space):
    a = space.sample(np.random.default_rng(7), 20)
    assert a == space.sample(np.random.default_rng(7), 20)
    assert all(space.canonical(x) == x for x in a)


def test_mbv2_depths_and_resolution_shape_the_model():
    arch = "r160:k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3"
    _, row, graph = build_model(make_spec("mbv2", arch))
    assert row["input_shape"] == [1, 160, 160, 3]
    deeper = arch.replace("r160:k3e3,k3e3|", "r160:k3e3,k3e3,k7e6|")
    assert build_model(make_spec("mbv2", deeper))[1]["macs"] > row["macs"]


def test_op_canonical_fills_defaults():
    assert op.canonical("conv:8x8x16") == "conv:8x8x16:k=3,s=1,cout=16,g=1,act=relu,pad=same"


@pytest.mark.parametrize(
    "space,text",
    [
        ("fbnet", "0-1-2"),
        ("fbnet", "-".join(["9"] * 22)),
        ("fbnet", "-".join(["a"] * 22)),
        ("mbv2", "r100:k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3"),
        ("mbv2", "r160:k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3"),
        ("mbv2", "r160:k4e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3"),
        ("op", "bogus:8x8x8"),
        ("op", "conv:8x8"),
        ("op", "conv:8x8x8:k=x"),
        ("op", "conv:8x8x8:zz=1"),
        ("op", "pool:8x8x8:type=min"),
    ],
)
def test_bad_encodings_are_rejected(space, text):
    with pytest.raises(ArchError):
        make_spec(space, text)


def test_same_seed_same_bytes_and_dtype_shares_weights():
    spec = make_spec("fbnet", "-".join(["3"] * 22), seed=5)
    assert build_model(spec)[0] == build_model(spec)[0]
    other = make_spec("fbnet", "-".join(["3"] * 22), seed=6)
    assert build_model(spec)[0] != build_model(other)[0]
    q = make_spec("fbnet", "-".join(["3"] * 22), seed=5, dtype="int8")
    assert build_model(q)[0] == build_model(q)[0]
