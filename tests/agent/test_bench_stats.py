"""Summary statistics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.bench.stats import compute_stats


def test_ten_values_by_hand():
    # 100..1000 shuffled. Linear (type 7) percentile: value at rank (n-1)*q/100 = 9q/100.
    raw = [700, 100, 1000, 300, 200, 900, 500, 400, 800, 600]
    s = compute_stats(raw)
    assert s.count == 10
    assert s.min == 100.0 and s.max == 1000.0
    assert s.p5 == pytest.approx(145.0)  # rank 0.45
    assert s.p50 == pytest.approx(550.0)  # rank 4.5
    assert s.p90 == pytest.approx(910.0)  # rank 8.1
    assert s.p95 == pytest.approx(955.0)  # rank 8.55
    assert s.p99 == pytest.approx(991.0)  # rank 8.91
    assert s.mean == pytest.approx(550.0)
    # population variance of 1..10 is (10**2 - 1) / 12 = 8.25
    assert s.std == pytest.approx(100 * math.sqrt(8.25))
    assert s.cv == pytest.approx(100 * math.sqrt(8.25) / 550.0)


def test_single_run():
    s = compute_stats([1234])
    assert s.count == 1
    assert s.min == s.p5 == s.p50 == s.p99 == s.max == s.mean == 1234.0
    assert s.std == 0.0 and s.cv == 0.0


def test_numpy_input_and_validity():
    raw = np.array([5, 1, 3], dtype=np.int64)
    s = compute_stats(raw)
    assert (s.count, s.p50, s.mean) == (3, 3.0, 3.0)
    s.validate()  # a valid BenchStats body on the wire
    assert all(isinstance(getattr(s, k), float) for k in ("min", "p50", "std", "cv"))


@pytest.mark.parametrize("bad", [[], [[1, 2], [3, 4]]])
def test_rejects_empty_or_nested(bad):
    with pytest.raises(ValueError):
        compute_stats(bad)
