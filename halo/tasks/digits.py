"""Digits even → odd: the offline stand-in for HALO's MNIST-B → MNIST-A (halo.md §11), from
scikit-learn's bundled ``load_digits`` (1797 8x8 images). scikit-learn is optional (the
``analysis`` extra), so it is imported only when this task is built."""

from __future__ import annotations

import numpy as np

from halo.errors import TaskDependencyError
from halo.optimizees.zoo import cnn2d
from halo.tasks.base import DomainShiftTask, split_domain


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise TaskDependencyError(
            "the digits task needs scikit-learn, which is not installed: "
            "pip install 'halofarm[analysis]' (or use the thyroid, drift or CSV tasks)"
        ) from None
    return load_digits()


def digits_task(seed: int = 0, test_fraction: float = 0.25) -> DomainShiftTask:
    """Source B = even digits, target A = odd digits, each relabelled 0–4 (so the classifier
    head is re-initialised before adaptation, as HALO does for its 5-class head)."""
    digits = _load_digits()
    x = np.asarray(digits.data, dtype=np.float64) / 16.0  # pixel intensities are 0..16
    y = np.asarray(digits.target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    even, odd = y % 2 == 0, y % 2 == 1
    source = split_domain(x[even], y[even] // 2, test_fraction, rng)
    target = split_domain(x[odd], y[odd] // 2, test_fraction, rng)
    return DomainShiftTask(
        name="digits",
        source=source,
        target=target,
        n_classes=5,
        input_shape=(8, 8, 1),
        feature_names=[f"pixel{i}" for i in range(64)],
        class_names=["0/1", "2/3", "4/5", "6/7", "8/9"],
        reinit_head=True,
        info={
            "domains": "source B = even digits {0,2,4,6,8}, target A = odd {1,3,5,7,9}, "
            "labels digit // 2",
            "split": f"stratified by label, test fraction {test_fraction}, seed {seed}",
            "normalisation": "pixels / 16",
            "data": "sklearn.datasets.load_digits (bundled with scikit-learn)",
        },
        make_optimizee=lambda: cnn2d((8, 8, 1), 5),
    )
