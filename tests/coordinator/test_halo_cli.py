"""`halo-coord halo`: `run` through a real farm (mosquitto + a real agent process), `compare`
locally, and the one-line errors."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

from tests.coordinator.farm_support import LocalAgent, coord, wait_online


def test_halo_run_stores_one_adapt_result(tmp_path, mosquitto):
    store = tmp_path / "store.sqlite"
    env = {"HALOFARM_BROKER_URL": mosquitto.url, "HALOFARM_STORE": str(store)}
    agent = LocalAgent(tmp_path, "adapt-host", mosquitto.url).start()
    try:
        wait_online([agent], env)
        out = coord("halo", "run", "--device", "adapt-host", "--task", "thyroid",
                    "--optimizer", "adam", "--lr", "0.1", "--tune-lr", env=env)  # fmt: skip
        assert out.returncode == 2 and out.stderr.count("\n") == 1
        assert "--lr: must be null when tune_lr is true" in out.stderr
        out = coord("halo", "run", "--device", "adapt-host", "--task", "drift", "--steps", "20",
                    "--eval-every", "10", "--pretrain-steps", "20", "--class-balanced", "--json",
                    env=env)  # fmt: skip
        assert out.returncode == 0, out.stderr + agent.log.read_text()[-2000:]
        (row,) = json.loads(out.stdout)
        assert (row["status"], row["device"], row["task"], row["optimizer"]) == (
            "ok", "adapt-host", "drift", "halo")  # fmt: skip
        assert [p["step"] for p in row["document"]["curve"]] == [0, 10, 20]
        assert row["document"]["settings"]["class_balanced"] is True  # over the wire
        assert row["energy_method"] == "model" and row["energy_j"] > 0
        # The table form, from the same stored result; nothing reached the latency results.
        again = coord("results", "--json", "--no-sync", env=env)
        assert json.loads(again.stdout) == []
    finally:
        agent.stop()
    db = sqlite3.connect(store)
    try:
        assert db.execute("SELECT count(*) FROM adapt_results").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM rejects").fetchone() == (0,)
    finally:
        db.close()
    from coordinator.halo_cli import run_table
    from coordinator.store import Store

    with Store(store) as s:
        table = run_table(s.adapt_results()).splitlines()
    assert table[1].split()[:5] == ["adapt-host", "0", "halo", "drift", "ok"]
    assert [ln.split()[0] for ln in table[5:]] == ["0", "10", "20"]  # the mean curve


def test_halo_compare_table_and_json():
    args = ("halo", "compare", "--task", "thyroid", "--optimizers", "halo,adam",
            "--seeds", "2", "--steps", "20", "--pretrain-steps", "50")  # fmt: skip
    out = coord(*args, env={})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "balanced acc" in lines[2] and "energy J" in lines[2]
    assert [ln.split()[:2] for ln in lines[3:]] == [
        ["halo", "5"], ["halo", "10"], ["halo", "20"], ["adam", "5"], ["adam", "10"], ["adam", "20"]
    ]  # fmt: skip
    assert all("±" in ln for ln in lines[3:])
    out = coord(*args, "--at", "10,20", "--json", env={})
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["seeds"] == 2 and doc["at"] == [10, 20]
    assert [(r["optimizer"], r["step"]) for r in doc["summary"]] == [
        ("halo", 10), ("halo", 20), ("adam", 10), ("adam", 20)]  # fmt: skip
    assert len(doc["runs"]) == 4 and all(r["energy"]["method"] == "model" for r in doc["runs"])
    adam = [r for r in doc["runs"] if r["optimizer"] == "adam"]
    assert all(r["lr"] is not None for r in adam)  # tuned, and said so
    for row in doc["summary"]:
        assert 0.0 <= row["test_acc"]["mean"] <= 1.0 and row["energy_j"]["mean"] > 0


def test_halo_bad_input_is_one_line_exit_2():
    for args, words in (
        (("compare", "--task", "mnist"), "'mnist' is not one of"),
        (("compare", "--task", "thyroid", "--optimizers", "halo,lion"), "unknown 'lion'"),
        (("compare", "--task", "thyroid", "--steps", "20", "--at", "30"), "within 1..20"),
        (("run", "--device", "x", "--task", "atlantis"), "'atlantis' is not one of"),
        (("run", "--device", "x", "--task", "drift", "--model", "resnet"), "--model:"),
    ):
        out = coord("halo", *args, env={"HALOFARM_BROKER_URL": "mqtt://127.0.0.1:1"})
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and words in out.stderr, (args, out.stderr)


def test_halo_train_writes_a_checkpoint_the_agent_adapts_with(tmp_path):
    """A tiny meta-training run through the real CLI: the checkpoint carries its provenance,
    and `halo-agent adapt --optimizer-file` loads it and reports where it came from."""
    out, log = tmp_path / "mine.npz", tmp_path / "train-log.json"
    res = coord("halo", "train", "--out", str(out), "--log", str(log), "--iterations", "2",
                "--kinds", "drift-mlp", "--horizons", "20", "--truncation", "10",
                "--pairs", "1", "--eval-every", "1", "--json", env={})  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    meta = report["metadata"]["extra"]  # the provenance; the sidecar JSON holds the same
    assert meta["made_by"] == "halo.meta.train"
    assert meta["settings"]["kinds"] == ["drift-mlp"] and meta["settings"]["iterations"] == 2
    assert json.loads((tmp_path / "mine.json").read_text()) == meta
    assert [v["iteration"] for v in json.loads(log.read_text())["validation"]] == [0, 1, 2]

    adapt = subprocess.run(
        [sys.executable, "-m", "agent.cli", "adapt", "--task", "drift", "--optimizer", "halo",
         "--optimizer-file", str(out), "--steps", "10", "--pretrain-steps", "20",
         "--eval-every", "5", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert adapt.returncode == 0, adapt.stderr
    info = json.loads(adapt.stdout)["optimizer_info"]
    assert (info["shipped"], info["made_by"]) == (False, "halo.meta.train")
    assert info["selected_iteration"] == meta["selected_iteration"]


def test_halo_train_refuses_bad_settings_before_training(tmp_path):
    for args, words in (
        (("--kinds", "nope"), "unknown problem kinds"),
        (("--horizons", "0"), "horizons must be whole numbers"),
        (("--horizons", "a,b"), "expected whole numbers"),
        (("--sparsity", "x,y"), "sparsity schedule"),
        (("--out", str(tmp_path / "missing" / "x.npz")), "does not exist"),
    ):
        out = coord("halo", "train", "--out", str(tmp_path / "x.npz"), *args, env={})
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and words in out.stderr, (args, out.stderr)
    assert not list(tmp_path.glob("*.npz"))
