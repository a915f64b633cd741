"""Seeded random inputs: dtype, shape, value ranges of benchmark_model, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from agent.bench.inputs import UnsupportedInput, random_inputs


def detail(dtype, shape=(2, 64, 64)):
    return {"name": "x", "index": 0, "dtype": dtype, "shape": np.array(shape, dtype=np.int32)}


@pytest.mark.parametrize(
    "dtype, lo, hi",
    [
        (np.float32, -0.5, 0.5),
        (np.float16, -0.5, 0.5),
        (np.int8, -127, 127),
        (np.uint8, 0, 254),
        (np.int16, 0, 99),
        (np.int32, 0, 99),
        (np.int64, 0, 99),
        (np.bool_, 0, 1),
    ],
)
def test_dtype_shape_and_range(dtype, lo, hi):
    (a,) = random_inputs([detail(dtype)], seed=0)
    assert a.dtype == np.dtype(dtype) and a.shape == (2, 64, 64)
    assert a.min() >= lo and a.max() <= hi
    if np.issubdtype(dtype, np.integer):
        assert (a.min(), a.max()) == (lo, hi)  # 8192 draws reach both ends of <= 255 values


def test_same_seed_same_inputs_other_seed_other_inputs():
    details = [detail(np.float32, (1, 8)), detail(np.int8, (1, 16))]
    a = random_inputs(details, seed=3)
    b = random_inputs(details, seed=3)
    c = random_inputs(details, seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_string_input_is_rejected_with_its_name():
    with pytest.raises(UnsupportedInput, match="'x'.*cannot fill"):
        random_inputs([detail(np.bytes_, (1,))], seed=0)
