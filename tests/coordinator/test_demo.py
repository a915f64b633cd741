"""`halo-coord demo` -- the README's main job -- end to end: its own broker, a real agent
subprocess, zoo models, and energy from a simulated board that follows the agent's load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def demo(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "demo", "--models", "2", *args, "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO), HOME=str(tmp_path)),
        timeout=300,
    )


def test_demo_runs_a_campaign_with_simulated_energy_into_a_dataset(tmp_path):
    keep = tmp_path / "farm"
    r = demo("--min-runs", "10", "--min-seconds", "0.2", "--keep", str(keep), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    results = doc["results"]
    # 2 models and a canary measured first and last
    assert len(results) == 4 and {row["status"] for row in results} == {"ok"}
    for row in results:
        assert row["energy_method"] == "simulated" and row["energy_source"] == "ina3221x"
        # TX2 VDD_IN idles at 2.1 W in the simulator; the benchmark adds up to 4 W per busy CPU.
        assert 2100 < row["p_mean_mw"] < 2100 + 4000 * (os.cpu_count() or 1)
        assert 0 < row["e_dyn_per_inference_mj"] < row["e_per_inference_mj"]
    [dataset] = doc["datasets"]
    assert dataset["id"].startswith("nb201/cifar10/local-")
    assert len(dataset["rows"]) == 2  # the canary is not part of the dataset
    assert {row["n_results"] for row in dataset["rows"]} == {1}
    assert {row["energy_method"] for row in dataset["rows"]} == {"simulated"}
    assert (keep / "board" / ".halofarm-simboard.json").exists()
    # the kept store answers later questions: a power trace of one result as a PNG
    plot = tmp_path / "trace.png"
    out = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "results", "--no-sync", "--store",
         str(keep / "store.sqlite"), "--limit", "1", "--plot", str(plot)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000


def test_demo_without_power_has_no_energy_and_writes_its_plot(tmp_path):
    """... and with --mcu it ends with an mcu job on a fake DUT metered by a fake PPK2."""
    plot = tmp_path / "demo.png"
    r = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "demo", "--models", "2", "--no-power",
         "--min-runs", "5", "--min-seconds", "0", "--plot", str(plot), "--mcu"],
        capture_output=True, text=True, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO), HOME=str(tmp_path)), timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    dataset_part, mcu_part = r.stdout.split("\nmcu kws-demo")
    assert "dataset nb201/cifar10/" in dataset_part and "mJ/inf" not in dataset_part
    assert "kws-demo: kws01" in mcu_part and "simulated" in mcu_part
    assert f"plot: {plot}" in r.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
