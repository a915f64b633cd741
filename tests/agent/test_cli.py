"""`halo-agent` end to end through the real entry point (``python -m agent.cli``): exit codes,
one-line errors without tracebacks, parseable --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.bodies import BenchResult, Caps, unpack_ns

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--warmup-runs", "0", "--warmup-seconds", "0", "--min-runs", "5", "--min-seconds", "0"]


def agent(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})),
        timeout=120,
    )


def assert_one_line_error(r: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert r.returncode == code, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("INFO:")]
    assert len(lines) == 1, r.stderr
    assert text in lines[0]
    assert "Traceback" not in r.stderr


def test_bench_json_is_a_bench_result(tiny_model_file):
    r = agent("bench", tiny_model_file, *QUICK, "--seed", "7", "--json")
    assert r.returncode == 0, r.stderr
    result = BenchResult.from_dict(json.loads(r.stdout))
    assert result.status == "ok"
    assert result.spec.model_name == "tiny.tflite" and result.spec.seed == 7
    assert len(result.spec.model_sha256) == 64
    assert len(unpack_ns(result.raw_ns)) == result.stats.count >= 5


def test_bench_table(tiny_model_file):
    r = agent("bench", tiny_model_file, *QUICK, "--no-xnnpack", "--threads", "2", "--affinity", "0")
    assert r.returncode == 0, r.stderr
    assert "p50 / p90 / p99" in r.stdout
    assert "XNNPACK off (not delegated), 2 threads" in r.stdout


def test_failed_benchmark_exits_1_with_its_reason(tmp_path):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a model" * 100)
    assert_one_line_error(agent("bench", str(garbage)), 1, "benchmark failed: cannot load model")
    r = agent("bench", str(garbage), "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["status"] == "failed"


@pytest.mark.parametrize(
    "args, text",
    [
        (["bench", "missing.tflite"], "does not exist"),
        (["bench", "."], "is a directory"),
        (["bench", "MODEL", "--threads", "0"], "--threads: must be an int in 1..64, got 0"),
        (["bench", "MODEL", "--min-seconds", "5", "--max-seconds", "1"], "--min-seconds"),
        (["bench", "MODEL", "--affinity", "x"], "expected CPU numbers"),
        (["bench", "MODEL", "--min-runs", "1000000"], "exceeds the agent's limit"),
        (["bench", "MODEL", "--timeout", "-1"], "--timeout:"),
        (["bench", "MODEL", "--threads", "many"], "'many' is not a valid integer"),
        (["frobnicate"], "No such command"),
    ],
)
def test_usage_errors_are_one_line_exit_2(tiny_model_file, args, text):
    args = [tiny_model_file if a == "MODEL" else a for a in args]
    r = agent(*args)
    assert_one_line_error(r, 2, "halo-agent: error: ")
    assert text in r.stderr


def test_info_json_is_caps():
    r = agent("info", "--json")
    assert r.returncode == 0, r.stderr
    caps = Caps.from_dict(json.loads(r.stdout))
    assert caps.cores >= 1 and caps.python.startswith("{}.{}.".format(*sys.version_info[:2]))


def test_info_table():
    r = agent("info")
    assert r.returncode == 0, r.stderr
    assert "xnnpack" in r.stdout and "runtime_version" in r.stdout
