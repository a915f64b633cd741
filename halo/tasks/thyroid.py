"""HALO's TDP task: thyroid disease, pretrain on male patients, adapt on female patients,
MLP 26-30-30-4 (halo.md §7). The data ship inside the package (``halo/data/thyroid``, MIT
licence of the HALO release, records from the UCI Thyroid Disease set)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from halo.optimizees.zoo import mlp
from halo.tasks.base import DomainShiftTask, split_domain, standardise
from halo.tasks.tables import align_features, encode_labels, read_table

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "thyroid"
CLASS_NAMES = ["negative", "hypothyroid", "sick", "hyperthyroid"]


def thyroid_task(seed: int = 0, test_fraction: float = 0.25) -> DomainShiftTask:
    """Male (B) → female (A); each domain split 75/25 stratified by label with ``seed``, and
    trained on class-balanced minibatches (halo.md §7: "re-sampled")."""
    male = read_table(DATA_DIR / "male.csv")
    female = align_features(male, read_table(DATA_DIR / "female.csv"))
    (y_male, y_female), _ = encode_labels(male.labels, female.labels)
    rng = np.random.default_rng(seed)
    source = split_domain(male.x, y_male, test_fraction, rng)
    target = split_domain(female.x, y_female, test_fraction, rng)
    source, target, scaler = standardise(source, target)
    return DomainShiftTask(
        name="thyroid",
        source=replace(source, class_balanced=True),
        target=replace(target, class_balanced=True),
        n_classes=4,
        input_shape=(26,),
        feature_names=male.feature_names,
        class_names=list(CLASS_NAMES),
        info={
            "domains": "source B = male (986 rows), target A = female (2235 rows)",
            "split": f"stratified by label, test fraction {test_fraction}, seed {seed}",
            "sampling": "training minibatches class-balanced: each epoch re-samples every class "
            "to the majority's count (the paper's 're-sampled'); test splits as they are, "
            "scored also by balanced accuracy",
            "normalisation": "standardised with the male training split's mean and std "
            "(zero-variance columns only centred)",
            "data": str(DATA_DIR),
            "licence": "MIT (HALO release, GaTech-EIC); UCI Thyroid Disease records, "
            "Garavan Institute and J. R. Quinlan, 1987",
        },
        make_optimizee=lambda: mlp((26, 30, 30, 4)),
    )
