"""Fuzzing the coordinator's parsers of outside bytes (campaign TOML, dataset CSV import, the
zoo's .tflite reader behind `halo-coord zoo info`, a zoo directory's manifest.jsonl): arbitrary
bytes and mutated valid files give a value or the documented UserError as one line, nothing
else. The targets are shared with the atheris harness (fuzz/run.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given

from coordinator.zoo.graph import Graph
from coordinator.zoo.reader import TFLiteFormatError
from coordinator.zoo.writer import write_model
from fuzz import targets
from tests.fuzzing import fuzz_settings, inputs


@pytest.fixture(scope="module")
def campaign():
    with targets.campaign_toml() as run:
        yield run


@pytest.fixture(scope="module")
def dataset():
    with targets.dataset_csv() as run:
        yield run


@pytest.fixture(scope="module")
def tflite():
    with targets.tflite_info() as run:
        yield run


@pytest.fixture(scope="module")
def manifest():
    with targets.zoo_manifest() as run:
        yield run


@fuzz_settings(250)
@given(inputs(targets.CAMPAIGN_SEEDS))
# Was accepted: nan passed every bound check.
@example(b"[devices]\nall_online = true\n[models]\nreference = true\n[canary]\nthreshold = nan\n")
# The error was two lines: the key and the path are quoted now.
@example(b'"a\\nb" = 1\n[devices]\nall_online = true\n[models]\nreference = true\n')
@example(b'[devices]\nall_online = true\n[models]\ndir = "a\\nb"\n')
@example(b"[devices]\nall_online = true\n[models]\nzoo = 5\n")  # was TypeError (atheris)
def test_campaign_toml(campaign, data: bytes) -> None:
    campaign(data)


FBNET_ARCH = b"0-1-2-3-4-5-6-7-8-0-1-2-3-4-5-6-7-8-0-1-2-3"


@fuzz_settings(150)
@given(inputs(targets.DATASET_SEEDS))
# Were OverflowError from SQLite: integers past int64 passed validation.
@example(
    b"device,space,arch,latency_ms,macs\npi,fbnet," + FBNET_ARCH + b",1.0," + b"9" * 20 + b"\n"
)
@example(
    b"device,space,arch,latency_ms,index\npi,fbnet," + FBNET_ARCH + b",1.0," + b"9" * 20 + b"\n"
)
# Found by atheris: a quoted column name with a line break made a problem line two lines.
@example(b'index,arch_str,"pixel\n3"\n0,|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|'
         b'nor_conv_1x1~0|skip_connect~1|skip_connect~2|,7.2\n')  # fmt: skip
def test_dataset_csv_import(dataset, data: bytes) -> None:
    dataset(data)


TFLITE_SEEDS = targets.tflite_seeds()


@fuzz_settings(200)
@given(inputs(TFLITE_SEEDS, max_size=64))
def test_tflite_info(tflite, data: bytes) -> None:
    tflite(data)


def _fc_graph() -> Graph:
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.input((1, 8))
    g.mark_output(g.fully_connected(x, rng.standard_normal((4, 8)), np.zeros(4), name="fc"))
    return g


def test_tflite_operator_without_output(tflite) -> None:
    # Found by atheris: `zoo info` died with IndexError in the MAC count (analytics.op_macs).
    g = _fc_graph()
    g.ops[0].outputs = []
    err = tflite(write_model(g))
    assert isinstance(err, TFLiteFormatError)
    assert str(err) == "operator 0 (FULLY_CONNECTED) has no output tensor"


def test_tflite_weights_of_the_wrong_rank(tflite) -> None:
    g = _fc_graph()
    weights = g.tensors[g.ops[0].inputs[1]]
    weights.shape, weights.data = (32,), weights.data.reshape(32)
    err = tflite(write_model(g))
    assert str(err) == "operator 0 (FULLY_CONNECTED): weights of shape (32,), expected rank 2"


@fuzz_settings(100)
@given(inputs(targets.MANIFEST_SEEDS))
@example(b"\x80")  # was UnicodeDecodeError: read_manifest read the file in the locale's encoding
def test_zoo_manifest(manifest, data: bytes) -> None:
    manifest(data)
