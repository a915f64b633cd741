"""Per-layer lookup tables: the zoo's table of single-block models (`coordinator.zoo.lut`,
`halo-coord zoo lut`), the `lut` predictor, and `predict --method lut` / `predict eval` on a
real store holding an imported table and imported end-to-end latencies."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from coordinator.analysis import features as feat
from coordinator.analysis import predictors as pred
from coordinator.dataset import importer
from coordinator.errors import UserError
from coordinator.store import Store
from coordinator.zoo import lut
from coordinator.zoo.analytics import stats
from coordinator.zoo.cli import zoo
from coordinator.zoo.generate import build_graph, make_spec, read_manifest
from coordinator.zoo.spaces import fbnet
from tests.coordinator.test_predict import run


def zoo_macs(arch: str, dataset: str) -> int:
    return stats(build_graph(make_spec("fbnet", arch, dataset))[1]).macs


@pytest.mark.parametrize("dataset", ["cifar100", "imagenet"])
def test_table_entries_sum_to_the_network(dataset: str) -> None:
    rng = np.random.default_rng(7)
    archs = fbnet.sample(rng, 4) + ["-".join(["8"] * 22), "-".join(["7"] * 22)]
    ours = lut.macs("fbnet", archs, dataset)
    assert ours.tolist() == [zoo_macs(a, dataset) for a in archs]
    assert len(set(ours.tolist())) == len(archs)


def test_table_has_one_entry_per_shape_and_block() -> None:
    t = lut.table("fbnet", "cifar100")
    assert len(t) == 22 and all(len(row) == 9 for row in t)
    # identity skips: stride-1 layers whose channels do not change (the first layer, 16 -> 16,
    # and the last 3 of each 4-layer stage)
    assert sum(row[8] is None for row in t) == 16
    assert t[0][0] == "fbnet:32x32x16:b=k3_e1,s=1,cout=16"
    assert t[5][3] == "fbnet:32x32x24:b=k3_e6,s=2,cout=32"  # stage 3 starts with stride 2
    ops = lut.op_archs("fbnet", "cifar100")
    assert len(ops) == len(set(ops)) == 102  # later layers of a stage share a shape
    assert lut.op_archs("fbnet", "cifar10") == ops  # only the classifier differs
    assert lut.op_archs("fbnet", "imagenet")[0].startswith("fbnet:112x112x16:")


def test_fbnet_features_carry_the_zoo_macs() -> None:
    archs = fbnet.sample(np.random.default_rng(3), 3)
    x = feat.features("fbnet", archs)
    assert (x[:, feat.FBNET_COLUMNS.index("mmacs")] * 1e6).round().tolist() == [
        zoo_macs(a, "cifar100") for a in archs
    ]


def test_op_space_fbnet_kind_rejects_the_identity() -> None:
    from coordinator.zoo.spaces.common import ArchError

    with pytest.raises(ArchError, match="identity"):
        build_graph(make_spec("op", "fbnet:8x8x64:b=skip,s=1,cout=64"))
    with pytest.raises(ArchError, match="not in"):
        make_spec("op", "fbnet:8x8x64:b=k7_e6,s=1,cout=64")


def synthetic_table(seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {a: float(rng.uniform(0.01, 0.3)) for a in lut.op_archs("fbnet", "cifar100")}


def test_lut_predictor_fits_the_stem_head_constant_and_a_scale() -> None:
    table = synthetic_table()
    archs = fbnet.sample(np.random.default_rng(1), 60)
    s = lut.layer_sums(lut.entry_matrix("fbnet", "cifar100", table), "fbnet", archs)
    for y, scaled in ((s + 0.7, False), (1.4 * s + 0.2, True)):
        samples = dict(zip(archs[:10], y[:10], strict=True))
        p = pred.make("lut", "fbnet", table=table).fit({}).adapt(samples)
        mean, lo, hi = p.predict(archs[10:])
        assert np.allclose(mean, y[10:], rtol=1e-9)
        assert len(p.w) == 1 + scaled
        assert np.all(lo <= mean) and np.all(mean <= hi)


def test_lut_predictor_names_what_is_missing() -> None:
    table = synthetic_table()
    del table["fbnet:8x8x64:b=k5_e6,s=1,cout=64"]
    with pytest.raises(UserError, match=r"101 of the 102 fbnet/cifar100 .* `halo-coord zoo lut"):
        pred.make("lut", "fbnet", table=table)
    with pytest.raises(UserError, match="--lut DATASET"):
        pred.make("lut", "fbnet")


def test_zoo_lut_lists_and_writes_the_table(tmp_path: Path) -> None:
    r = CliRunner().invoke(zoo, ["lut", "--space", "fbnet"])
    assert r.exit_code == 0
    assert r.stdout.split() == lut.op_archs("fbnet", "cifar100")
    r = CliRunner().invoke(zoo, ["lut", "--space", "fbnet", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    rows = list(read_manifest(tmp_path).values())
    assert [row["arch"] for row in rows] == lut.op_archs("fbnet", "cifar100")
    assert all(row["space"] == "op" and (tmp_path / row["file"]).is_file() for row in rows)


@pytest.fixture(scope="module")
def lut_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """A store with device `box`: its table (op space) and 60 fbnet networks whose latency is
    1.2 x the table sum + 0.5 ms plus 2 % noise; device `other` has the same 60 networks."""
    tmp = tmp_path_factory.mktemp("lut")
    table = synthetic_table(5)
    archs = fbnet.sample(np.random.default_rng(2), 60)
    s = lut.layer_sums(lut.entry_matrix("fbnet", "cifar100", table), "fbnet", archs)
    rng = np.random.default_rng(4)
    box = 1.2 * s + 0.5 + rng.normal(0, 0.02 * s.mean(), len(s))
    other = 0.8 * s + rng.normal(0, 0.1 * s.mean(), len(s)) + 1.0
    path = tmp / "rows.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["device", "space", "dataset", "arch", "latency_ms"])
        for a, ms in table.items():
            w.writerow(["box", "op", "none", a, ms])
        for a, b, o in zip(archs, box, other, strict=True):
            w.writerow(["box", "fbnet", "cifar100", a, b])
            w.writerow(["other", "fbnet", "cifar100", a, o])
    parsed = importer.parse(path, layout="long")
    assert not parsed.problems
    store_path = tmp / "store.db"
    with Store(store_path) as store:
        importer.write(store, parsed.rows, path.name)
    return store_path, dict(zip(archs, map(float, box), strict=True)), table


def test_cli_predict_lut_needs_no_source(lut_store: tuple, tmp_path: Path) -> None:
    store_path, box, _ = lut_store
    archs = list(box)
    (tmp_path / "s.csv").write_text(
        "arch,latency_ms\n" + "".join(f"{a},{box[a]!r}\n" for a in archs[:10])
    )
    (tmp_path / "q.txt").write_text("\n".join(archs[10:]) + "\n")
    out = tmp_path / "p.csv"
    args = ["--space", "fbnet", "--store", store_path, "--samples", tmp_path / "s.csv",
            "--archs", tmp_path / "q.txt", "--out", out]  # fmt: skip
    r = run(*args, "--method", "lut", "--lut", "box")
    assert r.code == 0, r.err
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    y = np.array([box[row["arch"]] for row in rows])
    mean = np.array([float(row["latency_ms"]) for row in rows])
    assert [row["arch"] for row in rows] == archs[10:]
    assert np.mean(np.abs(mean - y) / y) < 0.05
    r = run(*args, "--method", "ridge", "--lut", "box", "--source", "other")
    assert r.code == 2 and "--lut is used by --method lut and auto, not ridge" in r.err
    r = run(*args, "--method", "lut", "--lut", "other")
    assert r.code == 2 and "--lut: no dataset 'other'" in r.err


def test_cli_eval_reports_lut_beside_the_baselines(lut_store: tuple) -> None:
    store_path, _, _ = lut_store
    r = run("eval", "--space", "fbnet", "--target", "box", "--source", "other", "--samples",
            "10", "--draws", "3", "--method", "lut", "--lut", "box", "--store", store_path,
            "--json")  # fmt: skip
    assert r.code == 0, r.err
    report = {m["method"]: m for m in json.loads(r.out)["methods"]}
    assert list(report) == ["flops", "ridge", "nnls", "lut"]
    assert report["lut"]["spearman"] > 0.95 and report["lut"]["mape"] < 5
    assert report["lut"]["spearman"] > report["flops"]["spearman"]
