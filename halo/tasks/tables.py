"""Reading task tables from CSV (feature columns + a label column) with one-line errors."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence, Tuple, Union

import numpy as np

from halo.errors import (
    FeatureMismatchError,
    MissingLabelError,
    NonFiniteValueError,
    TaskDataError,
)

# Integer labels are class numbers and size the output layer (largest + 1 units).
MAX_CLASS_NUMBER = 9999


@dataclass
class Table:
    path: str
    feature_names: List[str]
    x: np.ndarray  # (rows, features) float64
    labels: List[str]  # raw label cells


def read_table(path: Union[str, Path], label: str = "label") -> Table:
    """All columns but ``label`` are features; every feature cell must be a finite number."""
    path = str(path)
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise TaskDataError(f"{path}: cannot open ({exc.strerror}); check the path") from None
    with f:
        reader = csv.reader(f)
        try:
            return _parse(path, reader, label)
        except UnicodeDecodeError as exc:
            raise TaskDataError(
                f"{path}: not UTF-8 text near line {reader.line_num + 1} ({exc.reason}); save "
                "it as UTF-8 CSV"
            ) from None
        except csv.Error as exc:  # e.g. a field past csv's size limit
            raise TaskDataError(f"{path} line {reader.line_num}: not CSV ({exc})") from None


def _shown(name: str) -> str:
    """A column name for a one-line message: quoted if it holds a line break or control."""
    return name if name.isprintable() else repr(name)


def _parse(path: str, reader: Any, label: str) -> Table:
    header = next(reader, None)
    if header is None:
        raise TaskDataError(f"{path}: file is empty; it needs a header row and data rows")
    header = [h.strip() for h in header]
    if label not in header:
        raise MissingLabelError(
            f"{path}: no {label!r} column (columns: {', '.join(map(_shown, header[:8]))}"
            f"{', ...' if len(header) > 8 else ''}); "
            f"add a {label!r} column with each row's class"
        )
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise TaskDataError(
            f"{path}: duplicate column names {dupes}; give each column a unique name"
        )
    li = header.index(label)
    names = [h for i, h in enumerate(header) if i != li]
    if not names:
        raise TaskDataError(f"{path}: only a {label!r} column; add feature columns")
    rows: List[List[float]] = []
    labels: List[str] = []
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue
        line = reader.line_num
        if len(row) != len(header):
            raise TaskDataError(
                f"{path} line {line}: {len(row)} cells but the header has {len(header)}; "
                f"every row needs one value per column"
            )
        cell = row[li].strip()
        if not cell:
            raise MissingLabelError(
                f"{path} line {line}: empty {label!r}; label every row or drop it"
            )
        values = []
        for name, raw in zip(names, row[:li] + row[li + 1 :]):
            raw = raw.strip()
            try:
                v = float(raw)
            except ValueError:
                raise NonFiniteValueError(
                    f"{path} line {line}, column {name!r}: {raw!r} is not a number; "
                    f"fill or drop the row"
                ) from None
            if not math.isfinite(v):
                raise NonFiniteValueError(
                    f"{path} line {line}, column {name!r}: {raw} is not finite; "
                    f"fill or drop the row"
                )
            values.append(v)
        rows.append(values)
        labels.append(cell)
    if not rows:
        raise TaskDataError(f"{path}: no data rows after the header")
    return Table(path, names, np.array(rows, dtype=np.float64), labels)


def align_features(source: Table, target: Table) -> Table:
    """``target`` with its columns in the source's order; the two must have the same features."""
    if source.feature_names == target.feature_names:
        return target
    src, tgt = set(source.feature_names), set(target.feature_names)
    if src != tgt or len(source.feature_names) != len(target.feature_names):
        only_s = sorted(src - tgt)[:5]
        only_t = sorted(tgt - src)[:5]
        raise FeatureMismatchError(
            f"{source.path} has {len(source.feature_names)} features, {target.path} has "
            f"{len(target.feature_names)} (only in source: {only_s}, only in target: {only_t}); "
            f"both domains need the same feature columns"
        )
    order = [target.feature_names.index(n) for n in source.feature_names]
    return Table(target.path, list(source.feature_names), target.x[:, order], target.labels)


def encode_labels(*label_lists: Sequence[str]) -> Tuple[List[np.ndarray], List[str]]:
    """Integer labels: used as they are when every label is a non-negative integer, otherwise
    the sorted distinct names across all domains are numbered 0, 1, ..."""
    cells = [c for labels in label_lists for c in labels]
    try:
        ints = [int(c) for c in cells]
    except ValueError:
        ints = None
    if ints is not None:
        if min(ints) < 0:
            raise TaskDataError(
                f"labels must be non-negative integers or class names, found {min(ints)}"
            )
        # A class number sizes the model's output layer: "1000000000" must not build one.
        if max(ints) > MAX_CLASS_NUMBER:
            raise TaskDataError(
                f"label {max(ints)} is no class number (0..{MAX_CLASS_NUMBER}); number the "
                "classes 0..N-1 or give them names"
            )
        n = max(ints) + 1
        encoded = [np.array([int(c) for c in labels], dtype=np.int64) for labels in label_lists]
        return encoded, [str(i) for i in range(n)]
    names = sorted(set(cells))
    index = {name: i for i, name in enumerate(names)}
    encoded = [np.array([index[c] for c in labels], dtype=np.int64) for labels in label_lists]
    return encoded, names
