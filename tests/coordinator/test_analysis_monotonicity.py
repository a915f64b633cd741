"""`coordinator.analysis.monotonicity` and `halo-coord analyze monotonicity` on the public
NB201 latency table (a few device columns imported into a real store), checked against SciPy
run directly on the CSV columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from coordinator.analysis import features
from coordinator.analysis import monotonicity as mono
from coordinator.analysis.cli import analyze
from coordinator.dataset import importer
from coordinator.dataset.select import load
from coordinator.errors import UserError
from coordinator.store import Store
from tests.coordinator.test_dataset_support import Run

# ../shared/data next to the repository, as the shared_data fixture finds it
CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "nb201" / "latency_ms.csv"
DEVICES = ["pixel3", "samsung_s7", "gold_6240", "1080ti_1"]
N_WITH_MACS = 40  # archs given MACs through the models table (the rest have none)
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.skipif(not CSV.exists(), reason="public NB201 latency table not here")


def columns() -> dict[str, dict[str, float]]:
    """device -> {arch: ms} straight from the CSV."""
    with CSV.open(newline="") as f:
        reader = csv.DictReader(f)
        return {
            d: {row["arch_str"]: float(row[d]) for row in rows}
            for rows in [list(reader)]
            for d in DEVICES
        }


@pytest.fixture(scope="module")
def csv_columns() -> dict[str, dict[str, float]]:
    return columns()


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("analysis") / "store.db"
    parsed = importer.parse(CSV, layout="wide", space="nb201", device_columns=DEVICES)
    assert not parsed.problems
    with Store(path) as store:
        importer.write(store, parsed.rows, "latency_ms.csv")
        # Imported rows take MACs from models of the same space, arch and input dataset.
        for i, row in zip(range(N_WITH_MACS), csv.DictReader(CSV.open(newline="")), strict=False):
            macs = 1000 + (37 * i) % 101  # scattered, so the fronts are not trivial
            info = {"space": "nb201", "arch": row["arch_str"], "index": i, "dataset": "cifar10"}
            store.put_model(f"fake-sha-{i}", f"nb201-{i}", {**info, "macs": macs, "params": i})
    return path


@pytest.fixture(scope="module")
def series(store_path: Path) -> dict[str, dict[str, float]]:
    with Store(store_path) as store:
        datasets = load(store, space="nb201")
    return {d.key.device: {r.arch: r.figures.latency_p50_ms for r in d.rows} for d in datasets}


def run(*args: str | Path) -> Run:
    """`halo-coord analyze ARGS` with halo-coord's error handling (UserError: one line, 2)."""
    result = CliRunner().invoke(analyze, [str(a) for a in args])
    if isinstance(result.exception, UserError):
        message = str(result.exception).replace("\n", " ")
        return Run(2, result.stdout, result.stderr + f"halo-coord: error: {message}\n")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Run(result.exit_code, result.stdout, result.stderr)


def test_correlations_equal_scipy_on_the_csv_columns(
    series: dict[str, dict[str, float]], csv_columns: dict[str, dict[str, float]]
) -> None:
    m = mono.matrices(series)
    assert sorted(m.labels) == sorted(DEVICES)
    for i, a in enumerate(m.labels):
        for j, b in enumerate(m.labels):
            if i == j:
                continue
            archs = list(csv_columns[a])
            x = np.array([csv_columns[a][k] for k in archs])
            y = np.array([csv_columns[b][k] for k in archs])
            # Spearman = Pearson of the (average) ranks
            rho = np.corrcoef(stats.rankdata(x), stats.rankdata(y))[0, 1]
            assert m.spearman[i][j] == pytest.approx(rho, abs=1e-9)
            assert m.kendall[i][j] == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-9)
            assert m.n[i][j] == 15625


def test_matrix_is_symmetric_with_unit_diagonal(series: dict[str, dict[str, float]]) -> None:
    m = mono.matrices(series)
    for grid in (m.spearman, m.kendall, m.n):
        assert grid == [list(col) for col in zip(*grid, strict=True)]
    assert [m.spearman[i][i] for i in range(4)] == [1.0] * 4
    assert [m.kendall[i][i] for i in range(4)] == [1.0] * 4
    assert [m.n[i][i] for i in range(4)] == [15625] * 4


def test_mobile_pair_agrees_more_than_mobile_vs_gpu(series: dict[str, dict[str, float]]) -> None:
    mobile = mono.pair_stats(series["pixel3"], series["samsung_s7"])
    gpu = mono.pair_stats(series["pixel3"], series["1080ti_1"])
    # Observed: pixel3-samsung_s7 0.717 / 0.538, pixel3-1080ti_1 0.591 / 0.415.
    assert mobile.spearman == pytest.approx(0.7172, abs=1e-3)
    assert gpu.spearman == pytest.approx(0.5913, abs=1e-3)
    assert mobile.spearman > gpu.spearman
    assert mobile.kendall > gpu.kendall
    # tau-b runs below rho on the same data
    assert mobile.kendall < mobile.spearman


def test_pair_stats_uses_common_archs_only() -> None:
    a = {"x": 1.0, "y": 2.0, "z": 3.0, "w": 4.0, "only_a": 100.0}
    b = {"x": 10.0, "y": 30.0, "z": 20.0, "w": 40.0, "only_b": -1.0}
    p = mono.pair_stats(a, b)
    assert p.n == 4
    assert p.spearman == pytest.approx(0.8)
    assert p.kendall == pytest.approx(2 / 3)
    assert mono.pair_stats({"x": 1.0, "y": 2.0}, {"x": 1.0, "y": 3.0}) == mono.PairStats(
        2, None, None
    )
    # a constant series has no ranking: None rather than NaN (which JSON cannot carry)
    assert mono.pair_stats(a, dict.fromkeys(a, 5.0)) == mono.PairStats(5, None, None)


def test_best_proxy_is_the_argmax(series: dict[str, dict[str, float]]) -> None:
    m = mono.matrices(series)
    chosen = mono.best_proxy(m.spearman, m.labels)
    for i, target in enumerate(m.labels):
        others = [(m.spearman[i][j], m.labels[j]) for j in range(len(m.labels)) if j != i]
        assert chosen[target] == max(others)[1]
    labels = ["a", "b", "c"]
    ties = [[1.0, 0.5, 0.5], [0.5, 1.0, None], [0.5, None, 1.0]]
    assert mono.best_proxy(ties, labels) == {"a": "b", "b": "a", "c": "a"}
    assert mono.best_proxy([[1.0, None], [None, 1.0]], ["a", "b"]) == {}


def test_pareto_front_by_hand() -> None:
    latency = {"a": 1.0, "b": 2.0, "c": 2.0, "d": 3.0, "e": 4.0, "f": 1.0, "g": 5.0, "h": 5.0}
    score = {"a": 10, "b": 20, "c": 15, "d": 20, "e": 30, "f": 10, "g": 30, "h": 30}
    # a and f are the same point (both stay); c is beaten by b at equal latency; d by b at
    # equal score; g and h by e; "no_score" has no score and is left out.
    assert mono.pareto_front({**latency, "no_score": 0.1}, score) == {"a", "f", "b", "e"}
    assert mono.pareto_front({}, {}) == set()


def test_pareto_recovery(series: dict[str, dict[str, float]]) -> None:
    score = {arch: float(len(arch) + i % 7) for i, arch in enumerate(series["pixel3"])}
    assert mono.pareto_recovery(series["pixel3"], series["pixel3"], score) == 1.0
    r = mono.pareto_recovery(series["1080ti_1"], series["pixel3"], score)
    assert r is not None and 0.0 <= r < 1.0
    # reversed latencies find only the slowest of the target's front
    target = {"a": 1.0, "b": 2.0, "c": 3.0}
    backwards = {"a": 3.0, "b": 2.0, "c": 1.0}
    macs = {"a": 1, "b": 2, "c": 3}
    assert mono.pareto_recovery(backwards, target, macs) == pytest.approx(1 / 3)
    assert mono.pareto_recovery(target, target, {"a": 1, "b": 2}) is None


def test_cli_json(store_path: Path, series: dict[str, dict[str, float]]) -> None:
    r = run("monotonicity", "--space", "nb201", "--store", store_path, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["space"] == "nb201"
    assert doc["labels"] == sorted(DEVICES)  # datasets come sorted by id
    assert [d.split("/")[2] for d in doc["datasets"]] == doc["labels"]
    m = mono.matrices({label: series[label] for label in doc["labels"]})
    assert doc["spearman"] == m.spearman and doc["kendall"] == m.kendall and doc["n"] == m.n
    assert set(doc["best_proxy"]) == set(DEVICES)
    pixel3 = doc["best_proxy"]["pixel3"]
    assert pixel3["proxy"] == "gold_6240"
    assert pixel3["spearman"] == pytest.approx(0.8186, abs=1e-3)
    # N_WITH_MACS archs have MACs, so every pair has a Pareto recovery
    assert all(0.0 <= b["pareto_recovery"] <= 1.0 for b in doc["best_proxy"].values())


def test_cli_table_device_filter_and_plot(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "heat.png"
    r = run("monotonicity", "--space", "nb201", "--store", store_path,
            "--device", "pixel3", "--device", "nb201/cifar10/samsung", "--plot", out)  # fmt: skip
    assert r.code == 0, r.err
    assert "Spearman" in r.out and "Kendall tau-b" in r.out and "Best proxy" in r.out
    assert "pixel3      samsung_s7  0.717" in r.out
    assert "1080ti_1" not in r.out
    assert out.read_bytes()[:8] == PNG


def test_cli_pareto_uses_analytic_macs_for_imported_nb201(tmp_path: Path) -> None:
    """Imported rows have no models in the store; nb201 MACs then come from the encoding."""
    path = tmp_path / "store.db"
    parsed = importer.parse(CSV, layout="wide", space="nb201", device_columns=DEVICES[:2])
    with Store(path) as store:
        importer.write(store, parsed.rows[:200], "latency_ms.csv")
    r = run("monotonicity", "--space", "nb201", "--store", path, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["n"][0][1] == 100
    lat = columns()
    archs = list(lat[DEVICES[0]])[:100]
    score = dict(zip(archs, map(float, features.macs("nb201", archs)), strict=True))
    a, b = ({x: lat[d][x] for x in archs} for d in DEVICES[:2])
    expected = {DEVICES[0]: mono.pareto_recovery(b, a, score),
                DEVICES[1]: mono.pareto_recovery(a, b, score)}  # fmt: skip
    got = {t: v["pareto_recovery"] for t, v in doc["best_proxy"].items()}
    assert got == pytest.approx(expected) and all(0 < v <= 1 for v in got.values())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--space", "nb201", "--device", "nope"], "no dataset of device 'nope'; devices are "
         "1080ti_1, gold_6240, pixel3, samsung_s7"),
        (["--space", "nb201", "--device", "pixel3"], "1 of space nb201 selected, 2 or more"),
        (["--space", "fbnet"], "0 of space fbnet selected"),
        (["--space", "nope"], "unknown space 'nope'"),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line(store_path: Path, args: list[str], message: str) -> None:
    r = run("monotonicity", "--store", store_path, *args)
    assert r.code == 2
    assert r.out == ""
    assert r.err.count("\n") == 1 and message in r.err
