"""Seeded random input tensors, filled once outside the timed region (reference tflite.md §8.3).

Value ranges are those of TFLite ``benchmark_model``'s random inputs
(``BenchmarkTfLiteModel::CreateRandomTensorData``): floats uniform in [-0.5, 0.5), int8 in
[-127, 127], uint8 in [0, 254], int16/int32/uint32/int64 in [0, 99], bool 0/1. numpy's PCG64
replaces its mt19937, so values differ but ranges match. The same seed gives the same inputs.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np

# dtype -> inclusive integer range
INT_RANGES: Dict[Any, Tuple[int, int]] = {
    np.int8: (-127, 127),
    np.uint8: (0, 254),
    np.int16: (0, 99),
    np.int32: (0, 99),
    np.uint32: (0, 99),
    np.int64: (0, 99),
}
FLOATS = (np.float32, np.float16, np.float64)


class UnsupportedInput(ValueError):
    """An input tensor of a type the benchmark cannot fill (e.g. strings)."""


def random_input(detail: Dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """One array matching an ``Interpreter.get_input_details()`` entry."""
    dtype = np.dtype(detail["dtype"]).type
    shape = tuple(int(d) for d in detail["shape"])
    if dtype in FLOATS:
        return rng.uniform(-0.5, 0.5, shape).astype(dtype)
    if dtype in INT_RANGES:
        low, high = INT_RANGES[dtype]
        return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    if dtype is np.bool_:
        return rng.integers(0, 1, size=shape, endpoint=True).astype(np.bool_)
    raise UnsupportedInput(
        "input {!r} has type {}, which the benchmark cannot fill with random data".format(
            detail.get("name", ""), np.dtype(dtype).name
        )
    )


def random_inputs(details: List[Dict[str, Any]], seed: int) -> List[np.ndarray]:
    """Arrays for every input, in order, from one generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    return [random_input(d, rng) for d in details]
