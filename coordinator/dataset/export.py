"""Dataset rows out: CSV, JSON Lines, Parquet and a HW-NAS-Bench-style nested JSON.

CSV floats are written with repr() (the shortest text that reads back to the same double), so an
export imported and exported again is byte-identical.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from coordinator.dataset.rows import COLUMNS, Dataset, DatasetKey, Row, arch_order
from coordinator.errors import UserError

FORMATS = ("csv", "parquet", "jsonl", "hwnas")
_INT_COLUMNS = ("index", "n_runs", "n_results", "macs", "params", "threads")
_STR_COLUMNS = (
    "space", "dataset", "arch", "energy_method", "device", "runtime", "runtime_version", "dtype",
    "delegate",
)  # fmt: skip


def rows_of(datasets: Iterable[Dataset]) -> list[Row]:
    """Every row of the datasets, by dataset id, then index, then arch."""
    return sorted((r for d in datasets for r in d.rows), key=Row.sort_key)


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_csv(rows: Iterable[Row], fh: IO[str]) -> int:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(COLUMNS)
    n = 0
    for r in rows:
        writer.writerow(map(cell, r.cells()))
        n += 1
    return n


def row_dict(r: Row) -> dict[str, Any]:
    return {"dataset_id": r.dataset_id, **r.values(), "result_ids": list(r.result_ids)}


def write_jsonl(rows: Iterable[Row], fh: IO[str]) -> int:
    n = 0
    for r in rows:
        fh.write(json.dumps(row_dict(r)) + "\n")
        n += 1
    return n


def write_parquet(rows: Iterable[Row], path: Path) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("Parquet export needs pyarrow: pip install 'halofarm[parquet]'") from None

    def kind(column: str):
        if column in _INT_COLUMNS:
            return pa.int64()
        if column in _STR_COLUMNS:
            return pa.string()
        if column == "drift_flagged":
            return pa.bool_()
        return pa.float64()

    schema = pa.schema([(c, kind(c)) for c in COLUMNS])
    values = [r.values() for r in rows]
    table = pa.Table.from_pydict({c: [v[c] for v in values] for c in COLUMNS}, schema=schema)
    try:
        pq.write_table(table, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc}") from None
    return len(values)


def device_labels(keys: Iterable[DatasetKey]) -> dict[DatasetKey, str]:
    """Column prefixes for the datasets of one space and input dataset: the device id, or the
    device and its configuration when the device has several."""
    by_device: dict[str, list[DatasetKey]] = {}
    for k in sorted(set(keys)):
        by_device.setdefault(k.device, []).append(k)
    labels = {}
    for device, ks in by_device.items():
        if len(ks) == 1:
            labels[ks[0]] = device
            continue
        short = {k: f"{device}@{k.config}" for k in ks}
        clash = len(set(short.values())) < len(ks)  # configs differing only in the runtime
        for k in ks:
            labels[k] = (
                f"{device}@{k.runtime}-{k.runtime_version}-{k.config}" if clash else short[k]
            )
    return labels


def hwnas(rows: Iterable[Row]) -> dict[str, dict[str, dict[str, list]]]:
    """{space: {dataset: {"arch": [...], "index": [...], "<device>_latency": [...],
    "<device>_energy": [...]}}}, the layout of HW-NAS-Bench's pickle: one list per device,
    aligned to the union of the archs, None where a device lacks an arch."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.key.space, r.key.dataset), []).append(r)
    out: dict[str, dict[str, dict[str, list]]] = {}
    for (space, dataset), group in sorted(groups.items()):
        index: dict[str, int | None] = {}
        for r in group:
            if index.get(r.arch) is None:
                index[r.arch] = r.index
        archs = sorted(index, key=lambda a: arch_order(index[a], a))
        position = {a: i for i, a in enumerate(archs)}
        by_key: dict[DatasetKey, list[Row]] = {}
        for r in group:
            by_key.setdefault(r.key, []).append(r)
        table: dict[str, list] = {"arch": archs, "index": [index[a] for a in archs]}
        labels = device_labels(by_key)
        for key, label in sorted(labels.items(), key=lambda item: item[1]):
            latency: list[float | None] = [None] * len(archs)
            energy: list[float | None] = [None] * len(archs)
            for r in by_key[key]:
                latency[position[r.arch]] = r.figures.latency_p50_ms
                energy[position[r.arch]] = r.figures.energy_mj
            table[f"{label}_latency"] = latency
            if any(e is not None for e in energy):
                table[f"{label}_energy"] = energy
        out.setdefault(space, {})[dataset] = table
    return out


def write_hwnas(rows: Iterable[Row], fh: IO[str]) -> int:
    data = hwnas(rows)
    fh.write(json.dumps(data) + "\n")
    return sum(len(t["arch"]) for by_ds in data.values() for t in by_ds.values())
