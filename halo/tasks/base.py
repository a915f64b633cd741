"""Domain-shift tasks: pretrain on domain B (``source``) with Adam, adapt on domain A
(``target``), report accuracy on A's test split (halo.md §7)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from halo.errors import TaskDataError
from halo.optimizees.network import Network
from halo.optimizees.zoo import mlp


@dataclass
class DomainData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    # Draw training minibatches class-balanced (halo.adapt.training_batches): HALO's thyroid
    # task is "re-sampled" (halo.md §7); trained on its 85 % majority class as it comes, a
    # model never learns the rare classes and no optimizer can show anything on them.
    class_balanced: bool = False

    def __post_init__(self) -> None:
        for x, y, split in (
            (self.x_train, self.y_train, "train"),
            (self.x_test, self.y_test, "test"),
        ):
            if len(x) != len(y):
                raise TaskDataError(f"{split} split has {len(x)} inputs but {len(y)} labels")
        if len(self.x_train) == 0:
            raise TaskDataError("the training split is empty; the domain needs more rows")


@dataclass
class DomainShiftTask:
    name: str
    source: DomainData  # domain B: pretraining
    target: DomainData  # domain A: on-device adaptation
    n_classes: int
    input_shape: Tuple[int, ...]
    feature_names: List[str]
    class_names: List[str]
    reinit_head: bool = False  # source and target classes differ: re-draw the classifier head
    info: Dict[str, Any] = field(default_factory=dict)  # provenance, normalisation, split seed
    make_optimizee: Optional[Callable[[], Network]] = field(default=None, repr=False)

    def optimizee(self) -> Network:
        """The task's default model; an MLP d-30-30-C (HALO's tabular shape) unless set."""
        if self.make_optimizee is not None:
            return self.make_optimizee()
        return mlp([int(np.prod(self.input_shape)), 30, 30, self.n_classes])


def stratified_split(
    y: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> Tuple[np.ndarray, np.ndarray]:
    """Train/test indices with every class split in the same proportion."""
    if not 0.0 < test_fraction < 1.0:
        raise TaskDataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    train: List[np.ndarray] = []
    test: List[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclass
class Standardizer:
    """Per-feature (x − mean)/std; a zero-variance feature is only centred."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        return cls(mean, np.where(std > 1e-12, std, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def split_domain(
    x: np.ndarray, y: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> DomainData:
    train, test = stratified_split(y, test_fraction, rng)
    return DomainData(x[train], y[train], x[test], y[test])


def standardise(
    source: DomainData, target: DomainData
) -> Tuple[DomainData, DomainData, Standardizer]:
    """Both domains scaled with the source training split's statistics: the pretrained model
    expects them, and the board adapting on A does not get to refit them."""
    scaler = Standardizer.fit(source.x_train)

    def apply(d: DomainData) -> DomainData:
        return replace(d, x_train=scaler(d.x_train), x_test=scaler(d.x_test))

    return apply(source), apply(target), scaler
