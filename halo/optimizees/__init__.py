"""Optimizees with manual backprop in NumPy (MLP, 1-D/2-D CNN, classifier head)."""

from __future__ import annotations

from halo.optimizees.network import BackwardCost, BackwardInfo, Network, softmax_cross_entropy
from halo.optimizees.zoo import classifier_head, cnn1d, cnn2d, mlp

__all__ = [
    "BackwardCost",
    "BackwardInfo",
    "Network",
    "classifier_head",
    "cnn1d",
    "cnn2d",
    "mlp",
    "softmax_cross_entropy",
]
