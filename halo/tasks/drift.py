"""Synthetic drifting gas-sensor task, a stand-in for HALO's gas-sensor-drift (GSAD) setting:
a sensor array answers each analyte with its own response pattern scaled by concentration;
between the source and the target campaign every sensor's gain and baseline drift."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np

from halo.errors import ConfigError
from halo.tasks.base import DomainShiftTask, split_domain, standardise


@dataclass(frozen=True)
class DriftSettings:
    n_sensors: int = 16
    n_classes: int = 4
    n_source: int = 800
    n_target: int = 800
    drift: float = 1.5  # scale of the per-sensor gain/baseline drift (0 = no shift)
    noise: float = 0.3  # multiplicative sensor noise (log-normal sigma)
    separation: float = 0.25  # log-scale spread of the analytes' response patterns
    seed: int = 0
    test_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.n_sensors < 1 or self.n_classes < 2:
            raise ConfigError("drift task needs >= 1 sensor and >= 2 classes")
        if min(self.n_source, self.n_target) < 4 * self.n_classes:
            raise ConfigError("drift task needs at least 4 samples per class in each domain")
        if self.drift < 0 or self.noise < 0 or self.separation <= 0:
            raise ConfigError("drift and noise must be >= 0 and separation > 0")


def _responses(
    rng: np.random.Generator, patterns: np.ndarray, n: int, noise: float
) -> Tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, patterns.shape[0], size=n)
    concentration = np.exp(rng.uniform(np.log(0.5), np.log(2.0), size=(n, 1)))
    jitter = np.exp(noise * rng.standard_normal((n, patterns.shape[1])))
    return concentration * patterns[y] * jitter, y


def drift_task(settings: Optional[DriftSettings] = None) -> DomainShiftTask:
    """Features are log sensor responses; the target campaign sees gain g_k·r + baseline o_k."""
    s = settings if settings is not None else DriftSettings()
    rng = np.random.default_rng(s.seed)
    # Analytes share most of the array's response and differ by a modest per-sensor factor,
    # so a drift of similar size confuses them (as real metal-oxide arrays do).
    base = rng.uniform(0.2, 1.0, size=s.n_sensors)
    patterns = base * np.exp(s.separation * rng.standard_normal((s.n_classes, s.n_sensors)))
    raw_b, y_b = _responses(rng, patterns, s.n_source, s.noise)
    raw_a, y_a = _responses(rng, patterns, s.n_target, s.noise)
    gain = np.exp(0.5 * s.drift * rng.standard_normal(s.n_sensors))
    baseline = 0.3 * s.drift * np.abs(rng.standard_normal(s.n_sensors)) * patterns.mean()
    raw_a = gain * raw_a + baseline
    source = split_domain(np.log(raw_b), y_b, s.test_fraction, rng)
    target = split_domain(np.log(raw_a), y_a, s.test_fraction, rng)
    source, target, _ = standardise(source, target)
    return DomainShiftTask(
        name="drift",
        source=source,
        target=target,
        n_classes=s.n_classes,
        input_shape=(s.n_sensors,),
        feature_names=[f"sensor{i}" for i in range(s.n_sensors)],
        class_names=[f"analyte{i}" for i in range(s.n_classes)],
        info={
            "settings": asdict(s),
            "normalisation": "log responses standardised with the source training split",
        },
    )
