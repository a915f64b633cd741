"""`halo-coord dataset import`: every bad row reported with the file's own line numbers and nothing
imported, --skip-bad, header problems, wide files (nb201 and fbnet), re-imports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator.dataset import importer
from coordinator.dataset.select import load
from coordinator.errors import UserError
from coordinator.store import Store
from coordinator.zoo.spaces import fbnet, nb201
from tests.coordinator.test_dataset_support import coord

HEADER = "device,space,arch,index,latency_ms,dataset,threads,energy_mj,comment"
# Line numbers as an editor shows them: the header is line 1, line 13 is blank and the quoted
# device on line 15 spans two lines, so the last row is line 17.
BAD = f"""{HEADER}
pi4-01,nb201,0,,2.5,cifar10,4,1.0,good
pi4-01,nb999,0,,2.5,,,,
pi4-01,nb201,|bogus|,,2.5,,,,
pi4-01,nb201,1,,abc,,,,
pi4-01,nb201,2,,nan,,,,
pi4-01,nb201,3,,0,,,,
pi4-01,nb201,10,11,2.5,,,,
pi4-01,nb201,5,,2.5,,,-0.1,
pi4-01,nb201,6,,2.5,,four,,
pi 4,nb201,7,,2.5,,,,
pi4-01,nb201,8,,2.5,imagenet,,,

pi4-01,nb201,0,,2.6,CIFAR10,4,,same key and arch as line 2
"pi4
01",nb201,9,,3.0,,,,
tx2-01,nb201,9,9,3.0,cifar100,1,,good
"""
EXPECTED = [
    "3: space: unknown space 'nb999'",
    "4: arch: nb201 arch '|bogus|'",
    "5: latency_ms: 'abc' is not a number",
    "6: latency_ms: 'nan' is not a finite number",
    "7: latency_ms: must be > 0, got 0",
    "8: index: 11 is not the index of the arch (that is 10)",
    "9: energy_mj: must be >= 0, got -0.1",
    "10: threads: 'four' is not an integer",
    "11: device: device id 'pi 4' must be",
    "12: dataset: space nb201 has no dataset 'imagenet'",
    "14: arch: duplicate of line 2",
    "15: device: device id 'pi4\\n01' must be",
]


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(BAD)
    return path


def imported_count(path: Path) -> int:
    with Store(path) as store:
        return store.query("SELECT count(*) FROM imported")[0][0]


def test_every_bad_row_is_reported_and_nothing_imported(bad_file: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    r = coord("import", bad_file, "--store", store)
    assert r.code == 2
    lines = r.err.splitlines()
    assert lines[0] == "note: ignored columns: comment"
    problems = lines[1:-1]
    assert len(problems) == len(EXPECTED)
    for line, expected in zip(problems, EXPECTED, strict=True):
        assert line.startswith(f"halo-coord: error: {bad_file}:{expected}"), line
    assert lines[-1].startswith("halo-coord: error: nothing imported: 12 problems")
    assert imported_count(store) == 0


def test_skip_bad_imports_the_good_rows(bad_file: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    r = coord("import", bad_file, "--skip-bad", "--json", "--store", store)
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["devices"] == {
        "?": {"imported": 0, "replaced": 0, "skipped": 2},
        "pi4-01": {"imported": 1, "replaced": 0, "skipped": 10},
        "tx2-01": {"imported": 1, "replaced": 0, "skipped": 0},
    }
    assert len(out["problems"]) == 12 and out["problems"][0] == f"{bad_file}:3: space: " + (
        "unknown space 'nb999' (spaces: nb201, fbnet, mbv2, op)"
    )
    assert sum("halo-coord: skipped: " in ln for ln in r.err.splitlines()) == 12
    with Store(store) as s:
        rows = {(r.key.device, r.index): r for d in load(s) for r in d.rows}
        source = s.query("SELECT source, line FROM imported ORDER BY line")
    assert rows[("pi4-01", 0)].figures.latency_p50_ms == 2.5
    assert rows[("pi4-01", 0)].figures.energy_mj == 1.0
    assert rows[("pi4-01", 0)].key.threads == 4
    assert rows[("tx2-01", 9)].key.dataset == "cifar100"
    assert source == [("bad.csv", 2), ("bad.csv", 17)]
    text = coord("import", bad_file, "--skip-bad", "--store", store)
    assert text.out.splitlines()[-1].split() == ["total", "0", "2", "12"]


def test_more_than_fifty_problems_are_cut(tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    path.write_text("device,space,arch,latency_ms\n" + "pi4-01,nb201,0,x\n" * 60)
    r = coord("import", path, "--store", tmp_path / "s.sqlite")
    lines = r.err.splitlines()
    assert r.code == 2 and len(lines) == 52
    assert lines[50] == "halo-coord: error: ... and 10 more"
    assert lines[49].startswith(f"halo-coord: error: {path}:51: latency_ms: 'x' is not")


@pytest.mark.parametrize(
    "text, message",
    [
        ("device,arch,latency_ms\npi4-01,0,1.0\n", ":1: header: missing required column space"),
        ("device,space,arch\npi4-01,nb201,0\n", ":1: header: missing required column latency_ms"),
        ("index,arch\n", ":1: header: a wide file starts with index,arch_str or index,arch"),
        ("index,arch,pi4\n0,abc,1.0\n", "cannot tell the search space of"),
        ("", "empty file"),
        ("device,Device,space,arch,latency_ms\n", "column 'Device' appears twice"),
    ],
)
def test_header_problems_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "h.csv"
    path.write_text(text)
    r = coord("import", path, "--store", tmp_path / "s.sqlite")
    assert r.code == 2 and len(r.err.splitlines()) == 1
    assert message in r.err


def test_latency_p50_alias_space_option_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "ours.csv"
    path.write_text(
        "device,arch,latency_p50_ms\npi4-01,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,4\n"
    )
    r = coord("import", path, "--space", "nb201", "--store", tmp_path / "s.sqlite")
    assert r.code == 0, r.err
    with Store(tmp_path / "s.sqlite") as s:
        (d,) = load(s)
    assert d.id == "nb201/cifar10/pi4-01/unknown-/t0/unknown/unknown"
    assert d.rows[0].index == nb201.index_of(d.rows[0].arch)
    assert d.rows[0].figures.latency_p50_ms == 4.0
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("device,space,arch,latency_ms\npi4-01,fbnet,0,1.0\n")
    r = coord("import", wrong, "--space", "nb201", "--store", tmp_path / "s.sqlite")
    assert r.code == 2 and f"{wrong}:2: space: fbnet is not --space nb201" in r.err


def test_wide_fbnet_is_detected_and_keeps_its_index(shared_data: Path, tmp_path: Path) -> None:
    lines = (shared_data / "fbnet" / "latency_ms.csv").read_text().splitlines()
    pixel3 = lines[0].split(",").index("pixel3")
    bad = lines[5].split(",")
    bad[pixel3] = f"-{bad[pixel3]}"
    path = tmp_path / "fbnet.csv"
    path.write_text("\n".join([*lines[:4], ",".join(bad)]) + "\n")
    parsed = importer.parse(path, device_columns=["pixel3", "samsung_s7"])
    assert (parsed.layout, parsed.space) == ("wide", "fbnet")
    assert [p.render("f") for p in parsed.problems] == [
        f"f:5: pixel3: must be > 0, got {bad[pixel3]}"
    ]
    assert len(parsed.rows) == 2 * 3 + 1
    first = parsed.rows[0]
    assert first.key.dataset == fbnet.DEFAULT_DATASET == "cifar100"
    assert (first.index, first.arch) == (0, lines[1].split(",")[1])
    with pytest.raises(UserError, match="--device-columns: nope not in"):
        importer.parse(path, device_columns=["nope"])
    with pytest.raises(UserError, match="for wide files"):
        importer.parse(path, layout="long", device_columns=["pixel3"])


def test_wide_bad_arch_and_index_skip_the_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    a0, a1 = nb201.from_index(0), nb201.from_index(1)
    path.write_text(
        f"index,arch_str,dev-a,bad device\n0,{a0},1.5,2\n7,{a1},1.5,2\n2,|x|,1,1\n0,{a0},1,\n"
    )
    parsed = importer.parse(path)
    assert [p.render("w") for p in parsed.problems] == [
        "w:1: bad device: device id 'bad device' must be 1-64 of A-Z a-z 0-9 _ . -",
        "w:3: index: 7 is not the index of the arch (that is 1)",
        "w:4: arch_str: nb201 arch '|x|': expected 3 '+'-separated node groups, got 1",
        "w:5: arch_str: duplicate of line 2",
    ]
    assert [(r.key.device, r.index) for r in parsed.rows] == [("dev-a", 0)]
    assert parsed.skipped == {"dev-a": 3}


def test_reimport_replaces_and_keeps_measured_numbers_first(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("device,space,arch,latency_ms\npi4-01,nb201,0,2.0\npi4-01,nb201,1,3.0\n")
    store = tmp_path / "s.sqlite"
    coord("import", path, "--store", store)
    path.write_text("device,space,arch,latency_ms\npi4-01,nb201,1,3.5\npi4-01,nb201,2,4.0\n")
    out = json.loads(coord("import", path, "--json", "--store", store).out)
    assert out["devices"]["pi4-01"] == {"imported": 1, "replaced": 1, "skipped": 0}
    with Store(store) as s:
        (d,) = load(s)
    assert [(r.index, r.figures.latency_p50_ms) for r in d.rows] == [(0, 2.0), (1, 3.5), (2, 4.0)]
