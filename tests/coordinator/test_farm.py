"""The farm end to end: a real mosquitto, a real `halo-agent run` process, the real runtime,
and `halo-coord` commands run as a user would run them."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.zoo.generate import build_model, make_spec
from coordinator.zoo.testing import tiny_model_bytes
from tests.coordinator.farm_support import LocalAgent

DEVICE = "farm-test-1"
FAST = [
    "--min-runs",
    "5",
    "--min-seconds",
    "0",
    "--warmup-runs",
    "1",
    "--warmup-seconds",
    "0",
]


def coord(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def farm(tmp_path, mosquitto):
    """(agent factory, environment for halo-coord) around one broker and one store."""
    env = {"HALOFARM_BROKER_URL": mosquitto.url, "HALOFARM_STORE": str(tmp_path / "store.sqlite")}
    agents: list[LocalAgent] = []

    def start_agent(extra_env: dict | None = None) -> LocalAgent:
        agent = LocalAgent(tmp_path, DEVICE, mosquitto.url, extra_env=extra_env).start()
        agents.append(agent)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = coord("devices", "--json", env=env)
            assert out.returncode == 0, out.stderr
            if any(
                d["device"] == DEVICE and d["health"] == "online" for d in json.loads(out.stdout)
            ):
                return agent
            assert agent.alive(), agent.log.read_text()
            time.sleep(0.5)
        raise AssertionError(f"agent never came online: {agent.log.read_text()[-2000:]}")

    yield start_agent, env
    for agent in agents:
        agent.stop()


@pytest.fixture
def nb201_model(tmp_path) -> Path:
    data, row, _ = build_model(make_spec("nb201", "1", dtype="float32", dataset="cifar10"))
    path = tmp_path / row["file"]
    path.write_bytes(data)
    return path


def test_bench_round_trip_through_the_broker(farm, nb201_model, tmp_path):
    start_agent, env = farm
    agent = start_agent()
    tiny = tmp_path / "tiny.tflite"
    tiny.write_bytes(tiny_model_bytes())

    out = coord(
        "bench", "--device", DEVICE, "--wait", "--json", *FAST, str(nb201_model), str(tiny), env=env
    )
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["model_name"] for r in rows] == [nb201_model.name, "tiny.tflite"]
    for r in rows:
        assert r["status"] == "ok" and r["device"] == DEVICE
        assert r["count"] >= 5 and r["min_ns"] <= r["p50_ns"] <= r["max_ns"]
        assert r["threads"] == 1 and r["xnnpack"]

    # the same results through `results` and `export`, each once
    listed = json.loads(coord("results", "--json", env=env).stdout)
    assert sorted(r["result_id"] for r in listed) == sorted(r["result_id"] for r in rows)
    text = coord("export", "--format", "csv", env=env).stdout
    exported = list(csv.DictReader(io.StringIO(text)))
    assert len(exported) == 2 and {e["device"] for e in exported} == {DEVICE}
    jsonl = [
        json.loads(line)
        for line in coord("export", "--format", "jsonl", env=env).stdout.splitlines()
    ]
    payload = jsonl[0]["payload"]
    assert payload["raw_ns"] and payload["env_pre"] and payload["ops"]
    assert agent.alive()


def test_garbage_and_hanging_models_fail_and_the_agent_lives_on(farm, nb201_model, tmp_path):
    start_agent, env = farm
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"TFL3 but not really a model" * 10)
    agent = start_agent()

    out = coord("bench", "--device", DEVICE, "--wait", "--json", *FAST, str(garbage), env=env)
    assert out.returncode == 1
    (row,) = json.loads(out.stdout)
    assert row["status"] == "failed" and "load" in row["reason"]
    assert agent.alive()

    # and a good model right after
    out = coord("bench", "--device", DEVICE, "--wait", "--json", *FAST, str(nb201_model), env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["status"] == "ok"


def test_a_model_that_never_returns_times_out(farm, nb201_model):
    start_agent, env = farm
    # test hook read only in the benchmark child: it sleeps instead of benchmarking
    agent = start_agent({"HALOFARM_TEST_CHILD_HANG": "1"})
    out = coord(
        "bench",
        "--device",
        DEVICE,
        "--wait",
        "--json",
        "--timeout",
        "3",
        *FAST,
        str(nb201_model),
        env=env,
    )
    assert out.returncode == 1
    (row,) = json.loads(out.stdout)
    assert row["status"] == "failed" and "timeout" in row["reason"]
    assert agent.alive()


def test_bench_errors_are_one_line(farm, nb201_model):
    _, env = farm
    out = coord("bench", "--device", "nobody", str(nb201_model), env=env)
    assert out.returncode == 2 and "never connected" in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    out = coord("bench", str(nb201_model), env=env)
    assert out.returncode == 2 and "--device" in out.stderr
    out = coord("results", "--broker", "mqtt://127.0.0.1:1", env=env, timeout=60)
    assert out.returncode == 2 and "cannot reach the broker" in out.stderr
    out = coord("bench", "--device", "x", "--power", "bad name!", str(nb201_model), env=env)
    assert out.returncode == 2 and "--power: must be 'none', 'auto' or a power source" in out.stderr


def test_settled_waits_for_results_but_not_for_ones_that_never_come(tmp_path: Path) -> None:
    """A done job settles once its result is stored; a failed one once its result is stored
    or, when it has none (a model that could not be fetched), after the grace period."""
    from coordinator import farm
    from coordinator.dispatch import new_cmd_id
    from coordinator.store import Store, result_row
    from protocol import Ack, BenchSpec, Command, make
    from tests.coordinator.test_ingest_support import bench_result

    with Store(tmp_path / "store.sqlite") as store:
        ids = {}
        for name in ("done", "failed-with-result", "failed-no-result"):
            spec = BenchSpec(model_sha256="ab" * 32, model_name="m")
            cmd = Command(cmd_id=new_cmd_id(), kind="bench", bench=spec)
            store.record_dispatch("rpi4-01", cmd, at=10.0)
            state = "done" if name == "done" else "failed"
            store.record_ack("rpi4-01", Ack(cmd.cmd_id, state, job_id="j-" + name), at=20.0)
            ids[name] = cmd.cmd_id
        jobs = farm.job_states(store, list(ids.values()))

        def settled(name: str, now: float) -> bool:
            return farm.settled(store, jobs[ids[name]], farm.FINAL, now=now)

        assert not any(settled(n, now=21.0) for n in ids)
        assert settled("failed-no-result", now=20.0 + farm.FAILED_RESULT_GRACE_S + 0.1)
        for name, status in (("done", "ok"), ("failed-with-result", "failed")):
            env = make(bench_result(cmd_id=ids[name], status=status), "rpi4-01")
            store.add_result_rows([result_row(env, 21.0)])
            assert settled(name, now=21.0)
        assert not farm.settled(store, jobs[ids["done"]], ("failed",), now=21.0)
