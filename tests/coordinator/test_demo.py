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


def test_demo_measures_latency_and_simulated_energy(tmp_path):
    keep = tmp_path / "farm"
    r = demo("--min-runs", "10", "--min-seconds", "0.2", "--keep", str(keep), tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 2 and {row["status"] for row in rows} == {"ok"}
    for row in rows:
        assert row["energy_method"] == "simulated" and row["energy_source"] == "ina3221x"
        # TX2 VDD_IN idles at 2.1 W in the simulator; the benchmark adds up to 4 W per busy CPU.
        assert 2100 < row["p_mean_mw"] < 2100 + 4000 * (os.cpu_count() or 1)
        assert 0 < row["e_dyn_per_inference_mj"] < row["e_per_inference_mj"]
    assert (keep / "board" / ".halofarm-simboard.json").exists()


def test_demo_without_power_has_no_energy(tmp_path):
    r = demo("--no-power", "--min-runs", "5", "--min-seconds", "0", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["energy_method"] for row in rows] == [None, None]
