"""Datasets from the store: which results count, the per-arch aggregation (against numpy on the
raw runs), configurations as separate datasets, imported rows beside measured ones, canary drift,
`dataset list | show`, and the PNG plots."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from coordinator import plots
from coordinator.dataset import importer
from coordinator.dataset.aggregate import Measurement, aggregate, pooled_mean_std
from coordinator.dataset.rows import resolve
from coordinator.dataset.select import load
from coordinator.errors import UserError
from coordinator.store import Store
from coordinator.zoo.spaces import nb201
from tests.coordinator.test_dataset_support import (
    ENERGY,
    RUNTIME,
    RUNTIME_VERSION,
    Campaign,
    coord,
    measure,
    nb201_model,
    runs,
)

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "store.sqlite") as s:
        yield s


def one(store: Store):
    datasets = load(store)
    assert len(datasets) == 1, [d.id for d in datasets]
    return datasets[0]


# -- aggregation -----------------------------------------------------------------------------


def test_aggregate_matches_numpy_on_the_concatenated_runs(store: Store) -> None:
    raws = [runs(2_000_000, 80, seed=1), runs(2_100_000, 50, 90_000, seed=2), runs(1_950_000, 7)]
    energies = [dict(ENERGY), None, {**ENERGY, "method": "simulated", "e_per_inference_mj": 5.0}]
    sha = nb201_model(store, 9)
    for raw, energy in zip(raws, energies, strict=True):
        measure(store, "pi4-01", sha, raw, energy=energy)
    row = one(store).rows[0]
    f = row.figures
    everything = np.concatenate([np.array(r, dtype=float) for r in raws]) / 1e6
    p50s = np.array([np.sort(r)[len(r) // 2] for r in raws], dtype=float) / 1e6
    p90s = np.array([np.sort(r)[int(0.9 * len(r))] for r in raws], dtype=float) / 1e6
    assert f.latency_p50_ms == pytest.approx(np.median(p50s), rel=1e-12)
    assert f.latency_p90_ms == pytest.approx(np.median(p90s), rel=1e-12)
    assert f.latency_mean_ms == pytest.approx(everything.mean(), rel=1e-12)
    assert f.latency_std_ms == pytest.approx(everything.std(), rel=1e-9)
    assert f.latency_rep_cv == pytest.approx(p50s.std() / p50s.mean(), rel=1e-9)
    assert f.energy_mj == 4.5  # median of the two results that have energy
    assert f.energy_dyn_mj == 1.5 and f.power_mw == 2000.0
    assert f.energy_method == "measured+simulated"
    assert (f.n_runs, f.n_results) == (137, 3)
    assert (row.index, row.arch) == (9, nb201.from_index(9))
    assert (row.macs, row.params) == (10_000_000, 10_000)
    assert row.drift_flagged is False and len(row.result_ids) == 3


def test_pooled_std_survives_large_latencies() -> None:
    # Seconds-long runs (1e9 ns) with a spread of a few ns: E[x^2] - mean^2 would lose it.
    rng = np.random.default_rng(0)
    parts = [1e9 + rng.normal(0, 3, n) + shift for n, shift in ((40, 0.0), (60, 5.0))]
    mean, std = pooled_mean_std(
        [len(p) for p in parts], [p.mean() for p in parts], [p.std() for p in parts]
    )
    assert std == pytest.approx(np.concatenate(parts).std(), rel=1e-6)
    assert mean == pytest.approx(np.concatenate(parts).mean(), rel=1e-15)


def test_one_result_has_no_repetition_spread_and_no_energy() -> None:
    f = aggregate([Measurement("r", 2e6, 2.2e6, 2.05e6, 1e4, 50)])
    assert (f.latency_p50_ms, f.latency_p90_ms, f.latency_rep_cv) == (2.0, 2.2, 0.0)
    assert f.latency_std_ms == pytest.approx(0.01)
    assert (f.energy_mj, f.energy_dyn_mj, f.power_mw, f.energy_method) == (None,) * 4


# -- which results count ---------------------------------------------------------------------


def test_only_accepted_results_of_known_models_count(store: Store) -> None:
    sha = nb201_model(store, 0)
    counted = {measure(store, "pi4-01", sha, runs(2_000_000, 20)).result_id}  # plain bench
    measure(store, "pi4-01", sha, [], status="failed")
    unknown = "cd" * 32  # a model the store has no manifest row for
    measure(store, "pi4-01", unknown, runs(2_000_000, 20))
    store.put_model("ef" * 32, "no-space", {"arch": "x"})  # not from the zoo
    measure(store, "pi4-01", "ef" * 32, runs(2_000_000, 20))

    c = Campaign(store, "c1", canary_threshold=10.0)

    def attempt(key: str, kind: str = "measure", p50: int = 2_000_000):
        return measure(
            store, "pi4-01", sha, runs(p50, 20), cmd_id=c.attempt(key, "pi4-01", sha, kind)
        )

    # A throttled first attempt, retried: only the retry's result is the job's.
    late = attempt("m1", p50=9_000_000)
    retry = attempt("m1")
    c.finish("m1", retry.result_id)
    counted.add(retry.result_id)
    # A canary re-measurement of the same model is the canary's, not the dataset's.
    c.finish("k1", attempt("k1", "canary").result_id)
    # A measure job that failed in the end does not accept the result it names.
    c.finish("m2", attempt("m2").result_id, state="failed")

    d = one(store)
    assert len(d.rows) == 1
    assert set(d.rows[0].result_ids) == counted
    assert late.result_id not in d.rows[0].result_ids
    assert store.count_results() == 8  # every raw result is still in the store


def test_each_configuration_is_its_own_dataset(store: Store) -> None:
    f32, i8 = nb201_model(store, 3), nb201_model(store, 3, dtype="int8")
    c100 = nb201_model(store, 3, dataset="cifar100")
    raw = runs(2_000_000, 10)
    for device, sha, threads, delegated in [
        ("pi4-01", f32, 4, True),
        ("pi4-01", f32, 1, True),
        ("pi4-01", f32, 4, False),
        ("pi4-01", i8, 4, True),
        ("pi4-01", c100, 4, True),
        ("tx2-01", f32, 4, True),
        ("tx2-01", f32, 4, True),  # a repetition, same dataset
    ]:
        measure(store, device, sha, raw, threads=threads, delegated=delegated)
    rt = f"{RUNTIME}-{RUNTIME_VERSION}"
    assert [(d.id, d.n_results) for d in load(store)] == [
        (f"nb201/cifar10/pi4-01/{rt}/t1/float32/xnnpack", 1),
        (f"nb201/cifar10/pi4-01/{rt}/t4/float32/none", 1),
        (f"nb201/cifar10/pi4-01/{rt}/t4/float32/xnnpack", 1),
        (f"nb201/cifar10/pi4-01/{rt}/t4/int8/xnnpack", 1),
        (f"nb201/cifar10/tx2-01/{rt}/t4/float32/xnnpack", 2),
        (f"nb201/cifar100/pi4-01/{rt}/t4/float32/xnnpack", 1),
    ]
    assert [d.id for d in load(store, device="tx2-01")] == [
        f"nb201/cifar10/tx2-01/{rt}/t4/float32/xnnpack"
    ]
    assert load(store, space="fbnet") == []


def test_measured_arch_wins_over_an_imported_row(store: Store, tmp_path: Path) -> None:
    sha = nb201_model(store, 5)
    measure(store, "pi4-01", sha, runs(3_000_000, 30))
    table = tmp_path / "other.csv"
    table.write_text(
        "device,space,arch,latency_ms,runtime,runtime_version,threads,dtype,delegate\n"
        f"pi4-01,nb201,5,9.5,{RUNTIME},{RUNTIME_VERSION},4,float32,xnnpack\n"
        f"pi4-01,nb201,6,7.25,{RUNTIME},{RUNTIME_VERSION},4,float32,xnnpack\n"
    )
    importer.write(store, importer.parse(table).rows, table.name)
    d = one(store)
    assert (d.origin, d.n_measured, d.n_imported, d.n_shadowed) == ("both", 1, 1, 1)
    by_index = {r.index: r for r in d.rows}
    assert by_index[5].origin == "measured"
    assert by_index[5].figures.latency_p50_ms == pytest.approx(3.0, abs=0.05)
    assert by_index[6].figures.latency_p50_ms == 7.25 and by_index[6].origin == "imported"
    # An imported arch the store has a model for gets its MACs and params from it.
    nb201_model(store, 6)
    assert {r.index: r.macs for r in one(store).rows} == {5: 6_000_000, 6: 7_000_000}
    shown = coord("show", d.id[:12], "--store", store.path)
    assert shown.code == 0, shown.err
    assert "measured 1, imported 1; 1 imported rows shadowed by measurements" in shown.out


def test_drift_flags_the_rows_measured_in_a_flagged_campaign(store: Store) -> None:
    ref, sha = nb201_model(store, 1), nb201_model(store, 2)
    c = Campaign(store, "weekly", canary_threshold=0.05)
    for i, (device, p50) in enumerate(
        [("pi4-01", 2_000_000), ("pi4-01", 2_400_000), ("tx2-01", 2_000_000), ("tx2-01", 2_010_000)]
    ):
        key = f"canary-{i}"
        r = measure(
            store, device, ref, runs(p50, 21, 1000), finished_at=1000.0 + i,
            cmd_id=c.attempt(key, device, ref, "canary"),
        )  # fmt: skip
        c.finish(key, r.result_id)
    for device in ("pi4-01", "tx2-01"):
        r = measure(store, device, sha, runs(5_000_000, 21), cmd_id=c.attempt(device, device, sha))
        c.finish(device, r.result_id)
    # The same arch measured outside any campaign on a third device is not flagged.
    measure(store, "nano-01", sha, runs(5_000_000, 21))
    flags = {d.key.device: d.drift_flagged for d in load(store)}
    assert flags == {"pi4-01": True, "tx2-01": False, "nano-01": False}
    listed = coord("list", "--store", store.path)
    assert [ln.split()[-1] for ln in listed.out.splitlines()[2:]] == ["-", "FLAGGED", "-"]


# -- resolving ids ---------------------------------------------------------------------------


def test_ids_resolve_by_unique_prefix_and_errors_list_candidates(store: Store) -> None:
    sha = nb201_model(store, 0)
    for device in ("pi4-01", "pi4-02", "pi5-01", "tx2-01", "tx2-02", "nano-01", "nano-02"):
        measure(store, device, sha, runs(2_000_000, 5))
    datasets = load(store)
    assert resolve(datasets, "nb201/cifar10/pi5").key.device == "pi5-01"
    exact = datasets[0].id
    assert resolve(datasets, exact).id == exact
    with pytest.raises(UserError, match="ambiguous.*pi4-01.*pi4-02.*give more"):
        resolve(datasets, "nb201/cifar10/pi4")
    with pytest.raises(UserError) as info:
        resolve(datasets, "fbnet/")
    message = str(info.value)
    assert "no dataset 'fbnet/'" in message and "and 2 more" in message
    assert message.count("nb201/cifar10/") == 5  # at most 5 candidates
    r = coord("show", "nb201/cifar10/pi4", "--store", store.path)
    assert r.code == 2 and len(r.err.splitlines()) == 1
    assert r.err.startswith("halo-coord: error: dataset id 'nb201/cifar10/pi4' is ambiguous")


# -- list and show ---------------------------------------------------------------------------


def test_list_and_show(store: Store, tmp_path: Path) -> None:
    shas = [nb201_model(store, i) for i in range(4)]
    for i, sha in enumerate(shas):
        measure(store, "pi4-01", sha, runs(2_000_000 + 500_000 * (3 - i), 30))
        measure(store, "pi4-01", sha, runs(2_000_000 + 500_000 * (3 - i), 30, seed=5))
    listed = coord("list", "--json", "--store", store.path)
    assert listed.code == 0, listed.err
    (info,) = json.loads(listed.out)
    assert (info["archs"], info["results"], info["runs"], info["origin"]) == (4, 8, 240, "measured")
    assert info["device"] == "pi4-01" and info["threads"] == 4

    shown = coord("show", info["id"], "--limit", "2", "--json", "--store", store.path)
    body = json.loads(shown.out)
    assert [r["index"] for r in body["rows"]] == [3, 2]  # fastest first
    assert body["latency_p50_ms"]["min"] == body["rows"][0]["latency_p50_ms"]
    text = coord("show", info["id"], "--limit", "3", "--store", store.path).out
    assert "fastest 3 of 4:" in text and "results   8 (240 runs)" in text

    arch = coord("show", info["id"], "--arch", "2", "--json", "--store", store.path)
    detail = json.loads(arch.out)
    assert detail["row"]["arch"] == nb201.from_index(2)
    assert sorted(x["result_id"] for x in detail["results"]) == sorted(detail["row"]["result_ids"])
    assert all(x["count"] == 30 and x["job_id"] for x in detail["results"])
    same = coord("show", info["id"], "--arch", nb201.from_index(2), "--store", store.path)
    assert all(rid in same.out for rid in detail["row"]["result_ids"])
    bad = coord("show", info["id"], "--arch", "|bogus|", "--store", store.path)
    assert bad.code == 2 and "--arch: nb201 arch" in bad.err
    absent = coord("show", info["id"], "--arch", "77", "--store", store.path)
    assert absent.code == 2 and "is not in dataset" in absent.err


def test_empty_store_lists_nothing_and_show_says_how_to_get_data(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    assert "no datasets" in coord("list", "--store", path).out
    r = coord("show", "nb201", "--store", path)
    assert r.code == 2 and "no datasets yet" in r.err


# -- plots -----------------------------------------------------------------------------------


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 10_000


def test_plot_functions_write_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    out = plots.latency_distribution(
        {"a": list(rng.lognormal(1, 0.5, 200)), "b": list(rng.lognormal(2, 0.3, 50))},
        tmp_path / "dist.png",
        "latency",
    )
    assert out == tmp_path / "dist.png"
    assert_png(out)
    points = {"pi4": [(float(m), m / 1e7) for m in rng.integers(1e6, 1e9, 40)]}
    assert_png(plots.latency_vs_macs(points, tmp_path / "macs.png", "lat vs MACs"))
    t = [i * 0.01 for i in range(500)]
    rails = {"VDD_IN": [3000 + 100 * np.sin(x) for x in t], "VDD_CPU": [800.0] * 500}
    assert_png(plots.power_trace(t, rails, tmp_path / "power.png", "power"))
    progress = {"pi4-01": [(0.1, 1), (0.5, 2), (1.2, 3)], "tx2-01": [(0.2, 1), (2.0, 2)]}
    assert_png(plots.campaign_progress(progress, tmp_path / "progress.png", "campaign"))
    with pytest.raises(UserError, match="nothing to plot"):
        plots.latency_distribution({"a": []}, tmp_path / "none.png", "empty")


def test_cli_plots(store: Store, tmp_path: Path) -> None:
    for i in range(6):
        measure(store, "pi4-01", nb201_model(store, i), runs(1_000_000 * (i + 1), 10))
    r = coord("list", "--plot", tmp_path / "list.png", "--store", store.path)
    assert r.code == 0, r.err
    assert_png(tmp_path / "list.png")
    r = coord("show", "nb201", "--plot", tmp_path / "show.png", "--store", store.path)
    assert r.code == 0, r.err
    assert_png(tmp_path / "show.png")


def test_plots_without_matplotlib_say_how_to_install(tmp_path: Path, monkeypatch) -> None:
    for name in ("matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # what an absent package looks like
    with pytest.raises(UserError, match=r"pip install 'halofarm\[plot\]'"):
        plots.power_trace([0.0, 1.0], {"VDD_IN": [1.0, 2.0]}, tmp_path / "p.png", "power")
    assert not (tmp_path / "p.png").exists()
