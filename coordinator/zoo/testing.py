"""Tiny models for tests of code that needs any valid .tflite (the runtime shim, the agent)."""

from __future__ import annotations

import numpy as np

from coordinator.zoo.graph import Graph
from coordinator.zoo.writer import write_model


def tiny_model_bytes(seed: int = 0) -> bytes:
    """A float32 FULLY_CONNECTED model: x[1, 8] -> y[1, 4]."""
    rng = np.random.default_rng(seed)
    g = Graph()
    x = g.input((1, 8))
    y = g.fully_connected(x, rng.standard_normal((4, 8)), rng.standard_normal(4), name="fc")
    g.mark_output(y)
    return write_model(g)
