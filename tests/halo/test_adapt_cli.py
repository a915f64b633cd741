"""`halo-agent adapt` end to end through the real entry point (``python -m agent.cli``): the JSON
contract on short runs (built-in task, CSV files, a simulated board with a power source,
calibration), and one-line errors with exit code 2 for every bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from halo.optim import HierarchicalRNN, HRNNConfig, save_checkpoint
from halo.tasks.thyroid import DATA_DIR

REPO = Path(__file__).resolve().parents[2]
FAST = ["--steps", "20", "--pretrain-steps", "50", "--eval-every", "10"]


@pytest.fixture()
def agent(tmp_path):
    state = tmp_path / "state"

    def run(*args: str) -> subprocess.CompletedProcess:
        env = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            HALOFARM_STATE_DIR=str(state),  # no calibrated constants from elsewhere
            OPENBLAS_NUM_THREADS="1",
        )
        return subprocess.run(
            [sys.executable, "-m", "agent.cli", "adapt", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=120,
        )

    return run


def one_line_error(r: subprocess.CompletedProcess, text: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("halo-agent: error: ") and text in lines[0], lines[0]
    assert "Traceback" not in r.stderr


def _rows(name: str):
    with open(DATA_DIR / name, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _write(path: Path, header, rows) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture()
def csvs(tmp_path):
    header, male = _rows("male.csv")
    _, female = _rows("female.csv")
    return {
        "header": header,
        "female": female,
        "source": _write(tmp_path / "male.csv", header, male[:400]),
        "train": _write(tmp_path / "train.csv", header, female[:600]),
        "test": _write(tmp_path / "test.csv", header, female[600:900]),
    }


def _check_contract(out: dict, steps: int = 20) -> None:
    for key in ("optimizer", "settings", "curve", "final_test_acc", "energy", "wall_s"):
        assert key in out
    assert out["settings"]["steps"] == steps
    assert [p["step"] for p in out["curve"]] == list(range(0, steps + 1, 10))
    for point in out["curve"]:
        assert set(point) >= {"step", "train_loss", "test_acc", "energy_j"}
    energies = [p["energy_j"] for p in out["curve"]]
    assert energies[0] == 0 and all(b > a for a, b in zip(energies, energies[1:]))
    energy = out["energy"]
    assert energy["method"] == "model"
    assert energy["total_j"] == pytest.approx(energies[-1])
    assert energy["per_step_j"] == pytest.approx(energy["total_j"] / steps)
    assert 0 <= out["final_test_acc"] <= 1 and 0 <= out["final_test_balanced_acc"] <= 1
    assert out["final_test_loss"] > 0 and out["wall_s"]["adapt"] > 0


def test_builtin_task_with_the_shipped_optimizer(agent, tmp_path) -> None:
    r = agent("--task", "thyroid", *FAST, "--sysfs-root", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    _check_contract(out)
    assert out["optimizer"] == "halo" and out["optimizer_info"]["shipped"]
    assert out["network"]["name"] == "mlp-26-30-30-4"
    assert out["settings"]["class_balanced"] is True  # thyroid always (halo.md: "re-sampled")
    assert out["energy_measured"] is None and "no power source" in out["energy_measured_status"]
    assert out["energy"]["constants"]["board"] == "generic"


def test_csv_files_with_a_tuned_baseline_and_sparsity(agent, csvs, tmp_path) -> None:
    r = agent(
        "--source", csvs["source"], "--target", csvs["train"], "--target-test", csvs["test"],
        "--model", "mlp:16", "--optimizer", "adam", "--tune-lr", "--sparsity", "0.1,0.3,0.5",
        "--board", "rpi4", "--power", "none", *FAST, "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    _check_contract(out)
    assert out["network"]["name"] == "mlp-26-16-4" and out["task"]["n_test"] == 300
    assert out["tuning"]["lr"] == out["settings"]["lr"] in out["tuning"]["grid"]
    assert out["tuning"]["energy_j"] > 0
    assert out["settings"]["sparsity"] == [0.1, 0.3, 0.5] and out["update_fraction"] < 0.6
    assert out["energy"]["constants"]["board"] == "rpi4"
    assert out["settings"]["class_balanced"] is False
    balanced = agent(
        "--source", csvs["source"], "--target", csvs["train"], "--target-test", csvs["test"],
        "--optimizer", "sgd", "--lr", "0.05", "--class-balanced", "--power", "none", *FAST,
        "--json",
    )  # fmt: skip
    assert balanced.returncode == 0, balanced.stderr
    assert json.loads(balanced.stdout)["settings"]["class_balanced"] is True
    # The human-readable form of the same run.
    r = agent(
        "--source", csvs["source"], "--target", csvs["train"], "--target-test", csvs["test"],
        "--optimizer", "sgd", "--lr", "0.05", "--power", "none", *FAST,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "energy (model, generic, estimate)" in r.stdout and "test acc" in r.stdout


def test_simulated_board_adds_the_measured_energy(agent, tmp_path) -> None:
    from power.simboard import SimBoard

    board = SimBoard(str(tmp_path / "orin"), "orin-nx-jp5").create()
    try:
        r = agent("--task", "drift", *FAST, "--sysfs-root", board.root, "--idle-seconds", "0.3",
                  "--json")  # fmt: skip
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        measured = out["energy_measured"]
        assert measured["method"] == "simulated" and measured["total_rails"] == ["VDD_IN"]
        power_w = board.actual("VDD_IN") / 1000.0
        assert measured["total_j"] == pytest.approx(power_w * measured["seconds"], rel=0.05)
        assert measured["idle_w"] == pytest.approx(power_w, rel=0.02)
        assert out["energy"]["method"] == "model"
        assert out["energy"]["constants"]["board"] == "orin-nx"  # from the device tree
    finally:
        board.close()


def test_calibrate_writes_constants_that_adapt_then_uses(agent, tmp_path) -> None:
    path = tmp_path / "constants.json"
    r = agent("--calibrate", "--calibrate-seconds", "0.05", "--energy-constants", str(path),
              "--sysfs-root", str(tmp_path), "--board", "nano", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["origin"] == "calibrated-time" and "time-based estimate" in out["label"]
    assert "no power source" in r.stderr
    assert json.loads(path.read_text())["board"] == "nano"
    r = agent("--task", "drift", *FAST, "--energy-constants", str(path), "--power", "none",
              "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    constants = json.loads(r.stdout)["energy"]["constants"]
    assert constants["origin"] == "calibrated-time" and constants["file"] == str(path)


def test_bad_inputs_exit_2_with_one_line(agent, csvs, tmp_path) -> None:
    header, female = csvs["header"], csvs["female"]
    src, train, test = csvs["source"], csvs["train"], csvs["test"]

    def files(target: str) -> list:
        return ["--source", src, "--target", target, "--target-test", test, "--power", "none"]

    no_label = _write(tmp_path / "nolabel.csv", header[:-1], [r[:-1] for r in female[:50]])
    one_line_error(agent(*files(no_label)), "no 'label' column")
    empty = [list(r) for r in female[:50]]
    empty[3][-1] = ""
    one_line_error(agent(*files(_write(tmp_path / "empty.csv", header, empty))), "empty 'label'")
    nan = [list(r) for r in female[:50]]
    nan[5][2] = "nan"
    one_line_error(agent(*files(_write(tmp_path / "nan.csv", header, nan))), "not finite")
    fewer = _write(tmp_path / "fewer.csv", header[1:], [r[1:] for r in female[:50]])
    one_line_error(agent(*files(fewer)), "same feature columns")

    other = save_checkpoint(tmp_path / "small", HierarchicalRNN(HRNNConfig(cell_sizes=(4, 6, 5))))
    one_line_error(
        agent("--task", "drift", "--optimizer-file", str(other), "--power", "none"),
        "cell sizes [4, 6, 5]",
    )
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a checkpoint")
    one_line_error(agent("--task", "drift", "--optimizer-file", str(garbage)), "not a readable")
    one_line_error(
        agent("--task", "drift", "--optimizer", "adam", "--lr", "0.01", "--tune-lr"),
        "--lr and --tune-lr exclude each other",
    )
    one_line_error(agent("--task", "drift", "--source", src), "either --task or")
    one_line_error(agent("--source", src, "--target", train), "--target-test")
    one_line_error(agent("--task", "drift", "--lr", "0.1"), "hand-written optimizers")
    one_line_error(agent("--task", "drift", "--model", "cnn2d"), "needs image inputs")
    one_line_error(agent("--task", "drift", "--board", "cray-1"), "unknown board")
    one_line_error(agent("--task", "drift", "--sparsity", "0.1,x"), "not a list of numbers")
    one_line_error(agent("--task", "drift", "--calibrate"), "--calibrate runs on its own")


def test_digits_cnn_runs(agent) -> None:
    pytest.importorskip("sklearn")
    r = agent("--task", "digits", *FAST, "--power", "none", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    _check_contract(out)
    assert out["network"]["name"] == "cnn2d" and np.isfinite(out["final_test_loss"])
