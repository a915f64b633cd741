"""Summary statistics of a raw per-run latency array (nanoseconds).

Percentiles use numpy's default ``method="linear"`` (Hyndman & Fan type 7: the value at rank
``(n - 1) * q / 100``, linearly interpolated between neighbours), the definition the
``litert-benchmark`` tool and most benchmark harnesses use. ``std`` is the population standard
deviation (``ddof=0``), as TFLite ``benchmark_model`` reports it; ``cv = std / mean``.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from protocol.bodies import BenchStats

PERCENTILES = (5, 50, 90, 95, 99)


def compute_stats(raw_ns: Union[Sequence[int], np.ndarray]) -> BenchStats:
    """Statistics of at least one non-negative per-run time in ns."""
    a = np.asarray(raw_ns, dtype=np.int64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError("need a non-empty 1-D array of per-run nanoseconds")
    # float64 is exact for any single run below 2**53 ns (104 days).
    x = a.astype(np.float64)
    p5, p50, p90, p95, p99 = (float(v) for v in np.percentile(x, PERCENTILES, method="linear"))
    mean = float(x.mean())
    std = float(x.std())
    return BenchStats(
        count=int(a.size),
        min=float(x.min()),
        p5=p5,
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        max=float(x.max()),
        mean=mean,
        std=std,
        cv=std / mean if mean > 0 else 0.0,
    )
