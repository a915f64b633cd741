"""Few-shot latency predictors (`coordinator.analysis.features/predictors/evaluate`) and
`halo-coord predict` / `predict eval` on the public NB201 latency table (six device columns
imported into a real store)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from coordinator.analysis import features as feat
from coordinator.analysis import predictors as pred
from coordinator.analysis.evaluate import evaluate
from coordinator.analysis.predict_cli import predict
from coordinator.dataset import importer
from coordinator.dataset.select import load
from coordinator.errors import UserError
from coordinator.store import Store
from coordinator.zoo.analytics import stats
from coordinator.zoo.generate import build_graph, make_spec
from coordinator.zoo.spaces import nb201
from tests.coordinator.test_dataset_support import Run

# ../shared/data next to the repository, as the shared_data fixture finds it
CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "nb201" / "latency_ms.csv"
DEVICES = ["pixel3", "samsung_a50", "samsung_s7", "gold_6240", "1080ti_1", "silver_4114"]
METHODS = ("flops", "ridge", "nnls", "adaproxy", "help", "auto")

pytestmark = pytest.mark.skipif(not CSV.exists(), reason="public NB201 latency table not here")


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("predict") / "store.db"
    parsed = importer.parse(CSV, layout="wide", space="nb201", device_columns=DEVICES)
    assert not parsed.problems
    with Store(path) as store:
        importer.write(store, parsed.rows, "latency_ms.csv")
    return path


@pytest.fixture(scope="module")
def cols(store_path: Path) -> dict[str, dict[str, float]]:
    with Store(store_path) as store:
        datasets = load(store, space="nb201")
    return {d.key.device: {r.arch: r.figures.latency_p50_ms for r in d.rows} for d in datasets}


def sources_without(cols: dict, target: str) -> dict[str, dict[str, float]]:
    return {d: v for d, v in cols.items() if d != target}


def run(*args: str | Path) -> Run:
    """`halo-coord predict ARGS` with halo-coord's error handling (UserError: one line, 2)."""
    result = CliRunner().invoke(predict, [str(a) for a in args])
    if isinstance(result.exception, UserError):
        message = str(result.exception)
        assert "\n" not in message
        return Run(2, result.stdout, result.stderr + f"halo-coord: error: {message}\n")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Run(result.exit_code, result.stdout, result.stderr)


# -- features --------------------------------------------------------------------------------


def test_analytic_macs_equal_the_zoo_graphs() -> None:
    rng = np.random.default_rng(0)
    indices = [0, 1, 2, 10, 105] + [int(i) for i in rng.choice(nb201.SIZE, 15, replace=False)]
    disconnected = [
        i for i in range(nb201.SIZE) if not nb201.is_connected(nb201.parse_ops(nb201.from_index(i)))
    ]
    indices += disconnected[:3]  # folded by the zoo: 0 MACs
    archs = [nb201.from_index(i) for i in indices]
    ours = feat.macs("nb201", archs)
    zoo = [stats(build_graph(make_spec("nb201", a))[1]).macs for a in archs]
    assert ours.tolist() == zoo
    assert 0 in zoo and min(m for m in zoo if m) > 0


def test_features_of_all_nb201_archs_are_fast_and_consistent() -> None:
    archs = nb201.enumerate_all()
    feat.features("nb201", archs[:1])  # builds the arch table once
    t0 = time.perf_counter()
    x = feat.features("nb201", archs)
    assert time.perf_counter() - t0 < 1.0
    assert x.shape == (nb201.SIZE, len(feat.NB201_COLUMNS))
    assert np.all(x[:, :30].reshape(-1, 6, 5).sum(axis=2) == 1)
    connected = x[:, feat.NB201_COLUMNS.index("connected")]
    assert int((connected == 0).sum()) == 341  # data/README
    # index 10: three convs feeding only `none` edges -> disconnected, nothing live
    ten = feat.features("nb201", ["10"])[0]
    assert ten[feat.NB201_COLUMNS.index("live_convs")] == 0
    # the same arch as string and as index
    assert np.array_equal(feat.features("nb201", [archs[7]]), feat.features("nb201", ["7"]))


def test_fbnet_features() -> None:
    arch = "0-1-2-3-4-5-6-7-8-0-1-2-3-4-5-6-7-8-8-8-8-8"
    x = feat.features("fbnet", [arch])
    assert x.shape == (1, 22 * 9 + 9 + 1) == (1, len(feat.FBNET_COLUMNS))
    assert x[0, :198].sum() == 22 and x[0, 198 + 8] == 6
    zoo = stats(build_graph(make_spec("fbnet", arch, "cifar100"))[1]).macs
    assert x[0, -1] * 1e6 == pytest.approx(zoo, abs=0.5)


# -- predictors ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_each_method_gives_ordered_intervals_and_is_deterministic(cols: dict, method: str) -> None:
    target = cols["1080ti_1"]
    archs = sorted(target)
    rng = np.random.default_rng(3)
    samples = {archs[i]: target[archs[i]] for i in rng.choice(len(archs), 10, replace=False)}
    query = archs[:2000]
    out = []
    for _ in range(2):
        p = pred.make(method, "nb201", seed=5).fit(sources_without(cols, "1080ti_1"))
        out.append(p.adapt(samples).predict(query))
    mean, lo, hi = out[0]
    assert mean.shape == (2000,)
    assert np.all(np.isfinite(mean)) and np.all(mean > 0)
    assert np.all(lo <= mean) and np.all(mean <= hi)
    for a, b in zip(out[0], out[1], strict=True):
        assert np.array_equal(a, b)


def test_lut_is_for_layer_wise_spaces_only() -> None:
    with pytest.raises(UserError, match=r"layer-wise spaces \(fbnet\), not 'nb201'"):
        pred.make("lut", "nb201", table={"x": 1.0})


def test_predicting_all_archs_after_adapt_is_fast(cols: dict) -> None:
    target = cols["pixel3"]
    samples = dict(list(sorted(target.items()))[:10])
    archs = nb201.enumerate_all()
    for method in METHODS:
        p = pred.make(method, "nb201").fit(sources_without(cols, "pixel3")).adapt(samples)
        t0 = time.perf_counter()
        p.predict(archs)
        assert time.perf_counter() - t0 < 1.0, method


@pytest.mark.parametrize(
    ("target", "floors"),
    [
        # measured (5 draws, k = 10): pixel3 flops .876 ridge .880 nnls .840 adaproxy .850
        # help .907 auto .895
        (
            "pixel3",
            {
                "flops": 0.8,
                "ridge": 0.75,
                "nnls": 0.75,
                "adaproxy": 0.75,
                "help": 0.85,
                "auto": 0.8,
            },
        ),  # fmt: skip
        # 1080ti_1: flops .791 ridge .955 nnls .879 adaproxy .931 help .896 auto .952; help is
        # weaker here because no GPU is among these 5 sources (with all 18 other columns: .98)
        (
            "1080ti_1",
            {"flops": 0.7, "ridge": 0.9, "nnls": 0.8, "adaproxy": 0.85, "help": 0.8, "auto": 0.9},
        ),  # fmt: skip
    ],
)
def test_leave_target_out_spearman(cols: dict, target: str, floors: dict[str, float]) -> None:
    rows = evaluate("nb201", cols[target], sources_without(cols, target), k=10, draws=5)
    got = {r.method: r.spearman for r in rows}
    assert set(got) == set(METHODS)
    for method, floor in floors.items():
        assert got[method] > floor, (method, got)
    for r in rows:
        assert r.draws == 5 and 0 <= r.acc10 <= 1 and r.mape > 0 and r.kendall < r.spearman
        if target == "pixel3":  # 283 folded archs at ~0 ms dominate the MAPE of every method
            assert r.mape_connected < r.mape / 2, (r.method, r.mape_connected, r.mape)


def test_evaluate_rejects_k_larger_than_the_target(cols: dict) -> None:
    small = dict(list(cols["pixel3"].items())[:8])
    with pytest.raises(UserError, match="k = 10 but the target has 8 archs"):
        evaluate("nb201", small, sources_without(cols, "pixel3"), k=10, draws=1)


# -- CLI -------------------------------------------------------------------------------------


def write_samples(path: Path, cols: dict, device: str, indices: list[int]) -> Path:
    lat = cols[device]
    lines = ["arch,latency_ms"] + [f"{i},{lat[nb201.from_index(i)]!r}" for i in indices]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def files(tmp_path: Path, cols: dict) -> dict[str, Path]:
    samples = write_samples(tmp_path / "target.csv", cols, "pixel3", list(range(100, 1100, 100)))
    query = tmp_path / "query.txt"
    query.write_text(f"{nb201.from_index(5)}\n7\n3\n{nb201.from_index(5)}\n")
    return {"samples": samples, "archs": query, "out": tmp_path / "pred.csv"}


def base_args(store_path: Path, files: dict[str, Path]) -> list[str | Path]:
    args: list[str | Path] = ["--space", "nb201", "--store", store_path]
    for d in ("samsung_s7", "gold_6240", "1080ti_1"):
        args += ["--source", d]
    return args + [
        "--samples",
        files["samples"],
        "--archs",
        files["archs"],
        "--out",
        files["out"],
    ]


@pytest.mark.parametrize("method", ["auto", "ridge", "nnls", "adaproxy", "help", "flops"])
def test_cli_predict_writes_one_row_per_query_line(
    store_path: Path, files: dict[str, Path], method: str
) -> None:
    r = run(*base_args(store_path, files), "--method", method, "--seed", "1")
    assert r.code == 0, r.err
    with files["out"].open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["arch", "latency_ms", "lo_ms", "hi_ms"]
    assert [row[0] for row in rows[1:]] == [nb201.from_index(i) for i in (5, 7, 3, 5)]
    for _, mean, lo, hi in rows[1:]:
        assert 0 < float(lo) <= float(mean) <= float(hi)
    assert rows[1] == rows[4]
    if method == "auto":
        first = files["out"].read_bytes()
        assert run(*base_args(store_path, files), "--method", method, "--seed", "1").code == 0
        assert files["out"].read_bytes() == first  # deterministic


def test_cli_eval_table_and_json(store_path: Path) -> None:
    args = [
        "eval",
        "--space",
        "nb201",
        "--target",
        "1080ti_1",
        "--source",
        "pixel3",
        "--source",
        "gold_6240",
        "--samples",
        "10",
        "--draws",
        "2",
        "--store",
        store_path,
    ]
    r = run(*args)
    assert r.code == 0, r.err
    for m in METHODS:
        assert m in r.out
    r = run(*args, "--method", "adaproxy", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert [m["method"] for m in report["methods"]] == ["flops", "ridge", "nnls", "adaproxy"]
    assert all(m["spearman"] > 0.5 for m in report["methods"])
    # 1080ti_1 runs disconnected cells too: MAPE over connected archs only is a subset's mean
    assert all(0 < m["mape_connected"] < 100 for m in report["methods"])


def test_cli_help_texts_have_examples() -> None:
    for args in (["--help"], ["eval", "--help"]):
        r = run(*args)
        assert r.code == 0
        assert r.out.count("Example") >= 5


def test_cli_lut_on_nb201_says_why(store_path: Path, files: dict[str, Path]) -> None:
    r = run(*base_args(store_path, files), "--method", "lut", "--lut", "pixel3")
    assert r.code == 2 and r.err.count("\n") == 1
    assert "halo-coord: error: --lut: no dataset 'pixel3'" in r.err  # no op-space data here
    r = run(*eval_args(store_path, "pixel3", "gold_6240", "10"), "--method", "lut")
    assert r.code == 2 and r.err.count("\n") == 1
    assert "layer-wise spaces (fbnet), not 'nb201'" in r.err


def _replace(args: list, flag: str, value: str | Path) -> list:
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


@pytest.mark.parametrize(
    ("samples_text", "query_text", "message"),
    [
        ("", None, "empty file"),
        ("arch,latency_ms\n", None, "no samples after the header"),
        ("arch,ms\n1,2.0\n", None, "header must be arch,latency_ms"),
        ("arch,latency_ms\n1,2.0\n2,3.0\n1,4.0\n", None, "duplicate arch"),
        ("arch,latency_ms\n1,2.0\n2,nan\n3,4.0\n", None, "finite and positive"),
        ("arch,latency_ms\n1,2.0\n2,0\n3,4.0\n", None, "finite and positive"),
        ("arch,latency_ms\n1,2.0\n2,-1\n3,4.0\n", None, "finite and positive"),
        ("arch,latency_ms\n1,2.0\n99999,3.0\n3,4.0\n", None, "out of range"),
        ("arch,latency_ms\n1,2.0\n|bogus~0|,3.0\n3,4.0\n", None, "nb201 arch"),
        (None, "", "empty file"),
        (None, "1\n|none~0|+|x~0|none~1|+|none~0|none~1|none~2|\n", "unknown op 'x'"),
    ],
)
def test_cli_bad_input_files(
    store_path: Path,
    files: dict[str, Path],
    tmp_path: Path,
    samples_text: str | None,
    query_text: str | None,
    message: str,
) -> None:
    args = base_args(store_path, files)
    if samples_text is not None:
        (tmp_path / "bad.csv").write_text(samples_text)
        args = _replace(args, "--samples", tmp_path / "bad.csv")
    if query_text is not None:
        (tmp_path / "bad.txt").write_text(query_text)
        args = _replace(args, "--archs", tmp_path / "bad.txt")
    r = run(*args)
    assert r.code == 2
    assert message in r.err and r.err.count("\n") == 1
    assert not files["out"].exists()


def eval_args(store_path: Path, target: str, source: str, k: str) -> list[str | Path]:
    return ["eval", "--space", "nb201", "--target", target, "--source", source,
            "--samples", k, "--draws", "1", "--store", store_path]  # fmt: skip


def test_cli_bad_devices_and_k(store_path: Path, files: dict[str, Path]) -> None:
    r = run(*_replace(base_args(store_path, files), "--source", "nosuchboard"))
    assert r.code == 2 and "no dataset 'nosuchboard'" in r.err and "pixel3" in r.err
    r = run(*eval_args(store_path, "nosuch", "gold_6240", "10"))
    assert r.code == 2 and "--target" in r.err
    r = run(*eval_args(store_path, "pixel3", "gold_6240", "20000"))
    assert r.code == 2 and "k = 20000 but the target has 15625 archs" in r.err
    r = run(*eval_args(store_path, "pixel3", "pixel3", "10"))
    assert r.code == 2 and "also a --source" in r.err
    r = run("--space", "nb201", "--store", store_path)
    assert r.code == 2 and "--source, --samples, --archs, --out" in r.err
    r = run(*_replace(base_args(store_path, files), "--space", "mbv2"))
    assert r.code == 2 and "supports nb201, fbnet" in r.err


def test_help_is_surest_where_it_measured_and_needs_shared_archs(cols: dict) -> None:
    sources = sources_without(cols, "pixel3")
    archs = sorted(cols["pixel3"])
    rng = np.random.default_rng(3)
    picked = [archs[i] for i in rng.choice(len(archs), 10, replace=False)]
    p = pred.make("help", "nb201").fit(sources).adapt({a: cols["pixel3"][a] for a in picked})
    spread = p.spread(archs)
    at_samples = p.spread(picked)
    assert np.all(spread >= 0) and np.max(at_samples) < np.median(spread)
    mean, lo, hi = p.predict(archs)
    width = np.log(hi / lo)
    # the interval is widest where the posterior is least sure
    assert np.argmax(width) == np.argmax(spread) and np.all(lo <= mean) and np.all(mean <= hi)
    # sources that share almost no archs cannot give a basis
    few = {"a": dict(list(cols["gold_6240"].items())[:3]), "b": cols["1080ti_1"]}
    with pytest.raises(UserError, match="share only 3 archs"):
        pred.make("help", "nb201").fit(few)


def test_suggested_archs_shrink_the_posterior_more_than_random_ones(cols: dict) -> None:
    sources = sources_without(cols, "pixel3")
    archs = sorted(cols["pixel3"])
    rng = np.random.default_rng(7)
    picked = [archs[i] for i in rng.choice(len(archs), 10, replace=False)]
    p = pred.make("help", "nb201").fit(sources).adapt({a: cols["pixel3"][a] for a in picked})
    rest = [a for a in archs if a not in picked]
    chosen = p.suggest(rest, 10)
    assert len(set(chosen)) == 10 and not set(chosen) & set(picked)

    def mean_spread_after(extra: list[str]) -> float:
        x_new = p._x(extra)
        a = p.a + x_new.T @ x_new  # what measuring them adds to the posterior precision
        x = p._x(rest)
        return float(np.mean(np.einsum("ij,ji->i", x, np.linalg.solve(a, x.T))))

    random_means = [
        mean_spread_after([rest[i] for i in rng.choice(len(rest), 10, replace=False)])
        for _ in range(5)
    ]
    assert mean_spread_after(chosen) < min(random_means)


def test_cli_suggest_prints_archs_to_measure_next(store_path: Path, files: dict[str, Path]) -> None:
    r = run(*base_args(store_path, files), "--method", "ridge", "--suggest", "2")
    assert r.code == 0, r.err
    lines = r.out.strip().splitlines()
    query = [feat.canonical("nb201", t) for t in files["archs"].read_text().split() if t]
    assert len(lines) == 2 and set(lines) <= set(query)
