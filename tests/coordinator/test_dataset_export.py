"""`halo-coord dataset export`: CSV, JSON Lines, Parquet and HW-NAS-Bench-style JSON, and the
lossless round trip export -> import -> export, for measured datasets and for the public
NAS-Bench-201 latency table."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest

from coordinator.dataset.rows import COLUMNS
from coordinator.dataset.select import load
from coordinator.store import Store
from coordinator.zoo.spaces import nb201
from tests.coordinator.test_dataset_support import (
    ENERGY,
    RUNTIME,
    RUNTIME_VERSION,
    coord,
    measure,
    nb201_model,
    runs,
)

RT = f"{RUNTIME}-{RUNTIME_VERSION}"
PI4 = f"nb201/cifar10/pi4-01/{RT}/t4/float32/xnnpack"
PI4_T1 = f"nb201/cifar10/pi4-01/{RT}/t1/float32/xnnpack"
TX2 = f"nb201/cifar10/tx2-01/{RT}/t4/float32/xnnpack"


@pytest.fixture
def farm(tmp_path: Path) -> Store:
    """pi4-01 in two configurations and tx2-01, over nb201 archs 0-3 (not all everywhere),
    with energy on the tx2, repetitions, and an fbnet-free, sorted-by-index layout."""
    with Store(tmp_path / "farm.sqlite") as store:
        shas = {i: nb201_model(store, i) for i in (0, 1, 2, 3)}
        for i in (3, 1, 0):
            for seed in (0, 1):
                measure(store, "pi4-01", shas[i], runs(2_000_000 + 100_000 * i, 25, seed=seed))
        measure(store, "pi4-01", shas[2], runs(9_000_000, 25), threads=1)
        for i in (2, 1):
            measure(store, "tx2-01", shas[i], runs(4_000_000 + 7 * i, 33), energy=dict(ENERGY))
        yield store


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_columns_order_and_values(farm: Store, tmp_path: Path) -> None:
    r = coord("export", "--format", "csv", "--store", farm.path)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == ",".join(COLUMNS)
    rows = read_csv(r.out)
    assert [(x["device"], x["threads"], x["index"]) for x in rows] == [
        ("pi4-01", "1", "2"),
        ("pi4-01", "4", "0"),
        ("pi4-01", "4", "1"),
        ("pi4-01", "4", "3"),
        ("tx2-01", "4", "1"),
        ("tx2-01", "4", "2"),
    ]
    (tx2_1,) = [x for x in rows if x["device"] == "tx2-01" and x["index"] == "1"]
    row = {d.id: d for d in load(farm)}[TX2].rows[0]
    # Floats exactly as repr() writes them; None as empty; booleans as true/false.
    assert tx2_1["latency_p50_ms"] == repr(row.figures.latency_p50_ms)
    assert float(tx2_1["latency_std_ms"]) == row.figures.latency_std_ms
    assert tx2_1["energy_mj"] == "4.0" and tx2_1["energy_method"] == "measured"
    assert tx2_1["arch"] == nb201.from_index(1) and tx2_1["macs"] == "2000000"
    assert tx2_1["drift_flagged"] == "false" and tx2_1["n_runs"] == "33"
    pi4 = [x for x in rows if x["device"] == "pi4-01"]
    assert all(x["energy_mj"] == "" and x["energy_method"] == "" for x in pi4)
    assert all(x["n_results"] == "2" for x in pi4 if x["threads"] == "4")

    # IDs (or prefixes) choose datasets; --out writes a file and says so on stderr.
    out = tmp_path / "tx2.csv"
    r = coord("export", "nb201/cifar10/tx2", "--format", "csv", "--out", out, "--store", farm.path)
    assert r.code == 0 and "2 rows of 1 datasets written" in r.err
    assert [x["device"] for x in read_csv(out.read_text())] == ["tx2-01", "tx2-01"]
    r = coord("export", "--device", "nobody", "--format", "csv", "--store", farm.path)
    assert r.code == 2 and "no dataset matches" in r.err


def test_jsonl_has_dataset_id_and_result_ids(farm: Store) -> None:
    r = coord("export", PI4, "--format", "jsonl", "--store", farm.path)
    rows = [json.loads(line) for line in r.out.splitlines()]
    assert [x["index"] for x in rows] == [0, 1, 3]
    assert list(rows[0]) == ["dataset_id", *COLUMNS, "result_ids"]
    assert all(x["dataset_id"] == PI4 and len(x["result_ids"]) == 2 for x in rows)
    stored = {r.result_id for r in farm.results(device="pi4-01")}
    assert {rid for x in rows for rid in x["result_ids"]} <= stored
    assert rows[0]["energy_mj"] is None and rows[0]["drift_flagged"] is False


def test_parquet_has_typed_columns(farm: Store, tmp_path: Path, monkeypatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "farm.parquet"
    r = coord("export", "--format", "parquet", "--out", out, "--store", farm.path)
    assert r.code == 0, r.err
    table = pq.read_table(out)
    assert table.column_names == list(COLUMNS)
    types = dict(zip(table.schema.names, table.schema.types, strict=True))
    assert types["index"] == pa.int64() and types["latency_p50_ms"] == pa.float64()
    assert types["drift_flagged"] == pa.bool_() and types["device"] == pa.string()
    csv_rows = read_csv(coord("export", "--format", "csv", "--store", farm.path).out)
    for got, want in zip(table.to_pylist(), csv_rows, strict=True):
        assert repr(got["latency_p50_ms"]) == want["latency_p50_ms"]
        assert got["energy_mj"] == (float(want["energy_mj"]) if want["energy_mj"] else None)
        assert (got["arch"], str(got["threads"])) == (want["arch"], want["threads"])

    r = coord("export", "--format", "parquet", "--store", farm.path)
    assert r.code == 2 and "give --out" in r.err
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an absent package looks like
    r = coord("export", "--format", "parquet", "--out", out, "--store", farm.path)
    assert r.code == 2
    assert "Parquet export needs pyarrow: pip install 'halofarm[parquet]'" in r.err


def test_hwnas_layout(farm: Store) -> None:
    r = coord("export", "--format", "hwnas", "--store", farm.path)
    data = json.loads(r.out)
    table = data["nb201"]["cifar10"]
    assert table["arch"] == [nb201.from_index(i) for i in range(4)]
    assert table["index"] == [0, 1, 2, 3]
    # pi4-01 has two configurations, so both are named; tx2-01 has one.
    assert sorted(table) == [
        "arch",
        "index",
        "pi4-01@t1-float32-xnnpack_latency",
        "pi4-01@t4-float32-xnnpack_latency",
        "tx2-01_energy",
        "tx2-01_latency",
    ]
    t4 = table["pi4-01@t4-float32-xnnpack_latency"]
    assert [v is None for v in t4] == [False, False, True, False]
    assert [v is None for v in table["pi4-01@t1-float32-xnnpack_latency"]] == [True] * 2 + [
        False,
        True,
    ]
    assert table["tx2-01_energy"] == [None, 4.0, 4.0, None]
    rows = {(x["device"], x["threads"], x["index"]): x for x in load_rows(farm)}
    assert t4[3] == rows[("pi4-01", 4, 3)]["latency_p50_ms"]


def load_rows(store: Store) -> list[dict]:
    return [r.values() for d in load(store) for r in d.rows]


def test_measured_round_trip_is_byte_identical(farm: Store, tmp_path: Path) -> None:
    first = tmp_path / "first.csv"
    coord("export", "--format", "csv", "--out", first, "--store", farm.path)
    r = coord("import", first, "--store", tmp_path / "fresh.sqlite")
    assert r.code == 0, r.err
    assert "note: ignored columns" not in r.err
    second = tmp_path / "second.csv"
    coord("export", "--format", "csv", "--out", second, "--store", tmp_path / "fresh.sqlite")
    assert second.read_bytes() == first.read_bytes()


def test_nb201_public_table_round_trip(shared_data: Path, tmp_path: Path) -> None:
    # Three devices, with the three kinds of values the table holds: GPU floats, pixel3's
    # 17-digit decimals and a phone's whole milliseconds.
    source = shared_data / "nb201" / "latency_ms.csv"
    columns = "1080ti_256,pixel3,essential_ph_1"
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    r = coord("import", source, "--device-columns", columns, "--json", "--store", a)
    assert r.code == 0, r.err
    counts = json.loads(r.out)
    assert counts["format"] == "wide"
    assert counts["total"] == {"imported": 3 * 15625, "replaced": 0, "skipped": 0}
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    assert coord("export", "--format", "csv", "--out", first, "--store", a).code == 0
    assert coord("import", first, "--store", b).code == 0
    assert coord("export", "--format", "csv", "--out", second, "--store", b).code == 0
    assert second.read_bytes() == first.read_bytes()

    rows = read_csv(first.read_text())
    pixel3 = [x for x in rows if x["device"] == "pixel3"]
    assert [x["index"] for x in pixel3[:3]] == ["0", "1", "2"]
    assert pixel3[0]["latency_p50_ms"] == "3.6058499999999998"  # the README's sanity value
    assert pixel3[1]["latency_p50_ms"] == "17.2381"
    assert {x["dataset"] for x in rows} == {"cifar10"}
    phone = next(x for x in rows if x["device"] == "essential_ph_1")
    assert phone["latency_p50_ms"] == "9.0" and phone["threads"] == "0"
    assert (phone["runtime"], phone["dtype"], phone["delegate"]) == ("unknown",) * 3

    again = coord("import", source, "--device-columns", "pixel3", "--json", "--store", a)
    assert json.loads(again.out)["total"] == {"imported": 0, "replaced": 15625, "skipped": 0}
