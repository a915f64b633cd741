"""run_bench_job end to end: a real spawn child, the real TFLite runtime, real models.

Failure paths use real processes too: garbage bytes for a load error, and the child's test hooks
(HALOFARM_TEST_CHILD_HANG / _CRASH, read only in the child) for a hang and a SIGSEGV.
Runs on Python >= 3.10 (ai-edge-litert) and on the 3.8 leg (tflite-runtime) with the tiny
model from HALOFARM_TINY_TFLITE.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import time

import pytest

from agent.bench.child import TEST_CRASH_ENV, TEST_HANG_ENV
from agent.bench.job import CANCELLED, default_timeout, run_bench_job
from agent.bench.timing import MAX_RUNS
from agent.runtime import load_runtime
from protocol.bodies import BenchResult, BenchSpec, unpack_ns

JOB, CMD, RESULT = "job-1", "c" * 32, "e" * 32
# Short settings: the protocol's rules hold, the suite stays fast.
QUICK = dict(warmup_runs=0, warmup_seconds=0.0, min_runs=5, min_seconds=0.0)


def spec(**kw) -> BenchSpec:
    values = dict(model_sha256="0" * 64, model_name="test", **QUICK)
    values.update(kw)
    return BenchSpec(**values)


def bench(model_path: str, **kw) -> BenchResult:
    result = run_bench_job(model_path, spec(**kw), JOB, CMD, RESULT)
    result.validate()  # every result, ok or failed, is a valid message body
    return result


def assert_failed(result: BenchResult, reason_start: str) -> None:
    assert result.status == "failed"
    assert result.reason.startswith(reason_start), result.reason
    assert "\n" not in result.reason
    assert result.stats is None and result.raw_ns is None
    assert result.env_pre and result.env_post


def test_tiny_model_ok(tiny_model_file):
    result = bench(tiny_model_file)
    assert result.status == "ok" and result.reason is None
    assert (result.job_id, result.cmd_id, result.result_id) == (JOB, CMD, RESULT)
    raw = unpack_ns(result.raw_ns)
    assert len(raw) == result.stats.count >= 5
    assert result.stats.min == min(raw) and result.stats.max == max(raw)
    assert result.init_ns > 0 and result.first_ns > 0
    assert result.warmup_count == 0 and result.warmup_mean_ns is None
    runtime = load_runtime()
    assert (result.runtime, result.runtime_version) == (runtime.name, runtime.version)
    assert result.ops["FULLY_CONNECTED"] == 1
    assert result.delegated and result.ops["DELEGATE"] == 1
    assert result.peak_rss_bytes > 10 * 2**20  # a Python process with the runtime loaded
    assert result.model_bytes == os.path.getsize(tiny_model_file)
    assert result.started_at <= result.finished_at
    process = result.env_pre["process"]
    assert process["resolver"] == "auto" and process["num_threads"] == 1
    assert process["inputs"] == [
        {"name": process["inputs"][0]["name"], "shape": [1, 8], "dtype": "float32"}
    ]
    assert process["timeout_s"] == default_timeout(result.spec)
    assert process["pid"] != os.getpid()
    for env in (result.env_pre, result.env_post):
        assert {"time", "cpufreq", "thermal_c", "throttled"} <= env.keys()
    assert result.env_pre["time"] <= result.env_post["time"]
    json.dumps(result.to_dict())


def test_warmup_and_keep_raw_false(tiny_model_file):
    result = bench(tiny_model_file, warmup_runs=3, keep_raw=False)
    assert result.status == "ok"
    assert result.raw_ns is None and result.stats.count >= 5
    assert result.warmup_count >= 3 and result.warmup_mean_ns > 0


def test_xnnpack_off_runs_without_delegate(tiny_model_file):
    result = bench(tiny_model_file, xnnpack=False, threads=2)
    assert result.status == "ok"
    assert not result.delegated and "DELEGATE" not in result.ops
    assert result.env_pre["process"]["resolver"] == "xnnpack_off"
    assert result.env_pre["process"]["num_threads"] == 2


def test_affinity_is_applied_in_the_child(tiny_model_file):
    cpu = min(os.sched_getaffinity(0))
    result = bench(tiny_model_file, affinity=[cpu])
    assert result.status == "ok"
    assert result.env_pre["process"]["affinity"] == [cpu]
    assert os.sched_getaffinity(0) != {cpu} or os.cpu_count() == 1  # the parent is not pinned


def test_affinity_to_a_missing_cpu_fails(tiny_model_file):
    assert_failed(
        bench(tiny_model_file, affinity=[1023]), "cannot pin the benchmark to CPUs [1023]"
    )


def test_garbage_model_fails_and_the_agent_carries_on(tmp_path, tiny_model_file):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(os.urandom(4096))
    result = bench(str(garbage))
    assert_failed(result, "cannot load model: ")
    assert len(result.reason) <= 320
    assert result.model_bytes == 4096
    assert result.ops == {} and result.init_ns is None
    assert bench(tiny_model_file).status == "ok"  # same process, next job fine


def test_missing_model_fails(tmp_path):
    result = bench(str(tmp_path / "nope.tflite"))
    assert_failed(result, "model file not found")
    assert result.model_bytes is None


def test_too_many_min_runs_fails_before_starting(tiny_model_file):
    assert_failed(bench(tiny_model_file, min_runs=MAX_RUNS + 1), f"min_runs {MAX_RUNS + 1} exceeds")


def test_hanging_child_is_killed_at_the_timeout(tiny_model_file, monkeypatch):
    monkeypatch.setenv(TEST_HANG_ENV, "1")
    start = time.monotonic()
    result = bench(tiny_model_file, timeout_s=1.5)
    assert_failed(result, "timeout after 1.5 s")
    assert time.monotonic() - start < 30
    assert multiprocessing.active_children() == []


def test_cancel_kills_the_child(tiny_model_file, monkeypatch):
    monkeypatch.setenv(TEST_HANG_ENV, "1")
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    start = time.monotonic()
    result = run_bench_job(tiny_model_file, spec(timeout_s=60.0), JOB, CMD, RESULT, cancel=cancel)
    result.validate()
    assert_failed(result, CANCELLED)
    assert time.monotonic() - start < 30
    assert multiprocessing.active_children() == []


def test_crashing_child_is_reported_by_signal(tiny_model_file, monkeypatch):
    monkeypatch.setenv(TEST_CRASH_ENV, "1")
    result = bench(tiny_model_file)
    assert_failed(result, "runtime crashed (signal SIGSEGV)")
    assert result.runtime == load_runtime().name  # reported by the child before it died
    assert multiprocessing.active_children() == []


def test_progress_callback_is_rate_limited(tiny_model_file):
    calls = []
    result = run_bench_job(
        tiny_model_file,
        spec(warmup_seconds=2.2),  # the warmup has no run cap: it lasts 2.2 s
        JOB,
        CMD,
        RESULT,
        progress=lambda *a: calls.append((time.monotonic(), a)),
    )
    assert result.status == "ok"
    assert calls[0][1] == ("init", 0, None)
    assert len(calls) >= 2 and calls[1][1][0] == "warmup"
    assert all(phase in ("init", "warmup", "measure") for _, (phase, _, _) in calls)
    assert all(b - a >= 1.0 for (a, _), (b, _) in zip(calls, calls[1:]))


def test_failing_progress_callback_does_not_stop_the_job(tiny_model_file):
    def broken(*_):
        raise RuntimeError("broker gone")

    result = run_bench_job(tiny_model_file, spec(), JOB, CMD, RESULT, progress=broken)
    assert result.status == "ok"


@pytest.mark.skipif(sys.version_info < (3, 10), reason="the zoo writer needs Python >= 3.10")
def test_zoo_int8_model_ops_match_its_manifest(tmp_path):
    generate = pytest.importorskip("coordinator.zoo.generate")
    data, row, _ = generate.build_model(
        generate.make_spec("nb201", "0", dtype="int8", dataset="cifar10")
    )
    path = tmp_path / row["file"]
    path.write_bytes(data)
    result = bench(str(path), min_runs=3)
    assert result.status == "ok", result.reason
    assert {k: v for k, v in result.ops.items() if k != "DELEGATE"} == row["ops"]
    (inp,) = result.env_pre["process"]["inputs"]
    assert inp["shape"] == row["input_shape"] and inp["dtype"] == "int8"
