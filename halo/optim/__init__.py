"""Optimizers behind one functional interface: ``init(params) -> state`` and
``update(params, grads, state, mask=None) -> (params, state)``."""

from __future__ import annotations

from halo.optim.base import OpCount, Optimizer
from halo.optim.baselines import SGD, Adagrad, Adam, Momentum, RMSProp, make_baseline
from halo.optim.checkpoint import load_checkpoint, save_checkpoint
from halo.optim.hrnn import HierarchicalRNN, HRNNState
from halo.optim.hrnn_config import HRNNConfig, MetaLayout, init_meta

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "HRNNConfig",
    "HRNNState",
    "HierarchicalRNN",
    "MetaLayout",
    "Momentum",
    "OpCount",
    "Optimizer",
    "RMSProp",
    "init_meta",
    "load_checkpoint",
    "make_baseline",
    "save_checkpoint",
]
