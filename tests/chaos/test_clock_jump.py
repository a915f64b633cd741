"""The wall clock steps (NTP on a board without an RTC) in the middle of a benchmark.

`halo-agent bench` runs as a user runs it, with clockstep/sitecustomize.py on PYTHONPATH: in that
process, its fork server and the benchmark child -- and nowhere else -- time.time() jumps by an
hour, forwards or backwards, while the model is being measured. Latencies come from perf_counter
and do not move; the result's wall-clock stamps jumped, and the result says by how much.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOOK = Path(__file__).resolve().parent / "clockstep"
STEP_S = 3600.0
MEASURE_S = 2.0


def _bench(model: Path, step_s: float) -> tuple[dict, float, float]:
    """(result, real start, real end) of one benchmark whose wall clock steps by step_s about
    0.8 s after it starts (during the measured phase)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HOOK), str(REPO)]),
        "HALOFARM_CHAOS_CLOCK_STEP_S": str(step_s),
    }
    start = time.time()
    env["HALOFARM_CHAOS_CLOCK_STEP_AT"] = str(start + 0.8)
    out = subprocess.run(
        [sys.executable, "-c", "from agent.cli import main; main()", "bench", str(model),
         "--warmup-runs", "1", "--warmup-seconds", "0", "--min-runs", "5",
         "--min-seconds", str(MEASURE_S), "--json"],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
    )  # fmt: skip
    end = time.time()
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), start, end


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A single convolution of about a millisecond: the measured phase lasts MEASURE_S rather
    than ending at the run cap within milliseconds, so the step falls inside it."""
    out = tmp_path_factory.mktemp("zoo")
    made = subprocess.run(
        [sys.executable, "-m", "coordinator", "zoo", "generate", "--space", "op", "--arch",
         "conv:64x64x16:k=3,s=1,cout=32", "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (path,) = out.glob("*.tflite")
    return path


@pytest.mark.parametrize("step_s", [STEP_S, -STEP_S], ids=["forward", "backward"])
def test_a_clock_step_during_a_benchmark_moves_no_latency(model, step_s):
    result, start, end = _bench(model, step_s)
    assert result["status"] == "ok", result["reason"]
    # The step reached the process: its wall-clock stamps are an hour apart from real time.
    assert result["finished_at"] == pytest.approx(end + step_s, abs=60)
    assert result["started_at"] == pytest.approx(start, abs=60)
    # ... and the result says so, with the size of the step.
    assert result["env_post"]["clock_step_s"] == pytest.approx(step_s, abs=5)
    assert "clock_step_s" not in result["env_pre"]
    # Latencies are untouched: every run is far below the step, and the measured phase on the
    # monotonic clock lasted about what was asked for, not an hour more or less.
    stats = result["stats"]
    assert stats["count"] >= 5
    assert 0 < stats["max"] < 1e9
    window = result["env_pre"]["process"]["measure_window_ns"]
    assert MEASURE_S * 1e9 <= window[1] - window[0] < (MEASURE_S + 30) * 1e9
    assert stats["count"] * stats["mean"] <= window[1] - window[0]


def test_no_step_no_flag(model):
    result, start, end = _bench(model, 0.0)
    assert result["status"] == "ok"
    assert "clock_step_s" not in result["env_post"]
    assert start <= result["started_at"] <= result["finished_at"] <= end
