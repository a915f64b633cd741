"""User tasks from two CSV files (one per domain): feature columns plus a label column."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from halo.tasks.base import DomainData, DomainShiftTask, split_domain, standardise
from halo.tasks.tables import align_features, encode_labels, read_table


def csv_task(
    source_csv: Union[str, Path],
    target_csv: Union[str, Path],
    label: str = "label",
    test_fraction: float = 0.25,
    seed: int = 0,
    name: Optional[str] = None,
    reinit_head: bool = False,
) -> DomainShiftTask:
    """Pretrain on ``source_csv`` (domain B), adapt on ``target_csv`` (domain A).

    Both files need the same feature columns (any order) and a ``label`` column; labels are
    integers or class names shared by the two files. Features are standardised with the source
    training split's statistics.
    """
    source_table = read_table(source_csv, label)
    target_table = align_features(source_table, read_table(target_csv, label))
    (y_b, y_a), class_names = encode_labels(source_table.labels, target_table.labels)
    rng = np.random.default_rng(seed)
    source = split_domain(source_table.x, y_b, test_fraction, rng)
    target = split_domain(target_table.x, y_a, test_fraction, rng)
    source, target, _ = standardise(source, target)
    return DomainShiftTask(
        name=name or Path(str(target_csv)).stem,
        source=source,
        target=target,
        n_classes=len(class_names),
        input_shape=(len(source_table.feature_names),),
        feature_names=source_table.feature_names,
        class_names=class_names,
        reinit_head=reinit_head,
        info={
            "source": str(source_csv),
            "target": str(target_csv),
            "split": f"stratified by label, test fraction {test_fraction}, seed {seed}",
            "normalisation": "standardised with the source training split's mean and std",
        },
    )


def csv_files_task(
    source_csv: Union[str, Path],
    target_train_csv: Union[str, Path],
    target_test_csv: Union[str, Path],
    label: str = "label",
    name: Optional[str] = None,
    reinit_head: bool = False,
) -> DomainShiftTask:
    """Pretrain on every row of ``source_csv``; adapt on ``target_train_csv``; test on
    ``target_test_csv`` (the board's own split). The three files need the same feature columns
    and share one label coding; features are standardised with the source's statistics."""
    source_table = read_table(source_csv, label)
    train_table = align_features(source_table, read_table(target_train_csv, label))
    test_table = align_features(source_table, read_table(target_test_csv, label))
    (y_b, y_a, y_t), class_names = encode_labels(
        source_table.labels, train_table.labels, test_table.labels
    )
    # Pretraining reports on its own rows: there is no source test file.
    source = DomainData(source_table.x, y_b, source_table.x, y_b)
    target = DomainData(train_table.x, y_a, test_table.x, y_t)
    source, target, _ = standardise(source, target)
    return DomainShiftTask(
        name=name or Path(str(target_train_csv)).stem,
        source=source,
        target=target,
        n_classes=len(class_names),
        input_shape=(len(source_table.feature_names),),
        feature_names=source_table.feature_names,
        class_names=class_names,
        reinit_head=reinit_head,
        info={
            "source": str(source_csv),
            "target_train": str(target_train_csv),
            "target_test": str(target_test_csv),
            "normalisation": "standardised with the source file's mean and std",
        },
    )
