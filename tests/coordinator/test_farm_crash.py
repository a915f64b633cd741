"""Nothing lost, nothing counted twice: 200 benchmark jobs through a real agent while the broker
is restarted, the agent is SIGKILLed and restarted, and the ingest worker dies between its
commit and its acks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

from coordinator.connect import BrokerTarget
from coordinator.dispatch import Controller, bench_command
from coordinator.ingest import DIE_AFTER_COMMIT_ENV, TEST_DIE_EXIT_CODE
from coordinator.store import Store
from coordinator.zoo.testing import tiny_model_bytes
from protocol.bodies import BenchSpec
from tests.coordinator.farm_support import LocalAgent
from tests.coordinator.test_farm import DEVICE

JOBS = 200
DEADLINE_S = 900


def start_ingest(mosquitto, store_path, die_after: int | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop(DIE_AFTER_COMMIT_ENV, None)
    if die_after is not None:
        env[DIE_AFTER_COMMIT_ENV] = str(die_after)
    return subprocess.Popen(
        [sys.executable, "-m", "coordinator.ingest", "--host", mosquitto.host]
        + ["--port", str(mosquitto.port), "--store", str(store_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def test_200_results_survive_broker_restart_agent_kill_and_ingest_crash(tmp_path, mosquitto):
    store_path = tmp_path / "store.sqlite"
    model = tmp_path / "tiny.tflite"
    model.write_bytes(tiny_model_bytes())
    store = Store(store_path)
    # The ingest worker dies right after its 25th commit, before acking that batch.
    ingest = start_ingest(mosquitto, store_path, die_after=25)
    agent = LocalAgent(tmp_path, DEVICE, mosquitto.url)
    agent.start()
    events: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any(d.device == DEVICE and d.status == "online" for d in store.devices()):
            assert time.monotonic() < deadline, agent.log.read_text()[-2000:]
            time.sleep(0.2)

        sha = store.put_blob_file(model)
        spec = BenchSpec(
            model_sha256=sha,
            model_name=model.name,
            warmup_runs=0,
            warmup_seconds=0.0,
            min_runs=1,
            min_seconds=0.0,
        )
        with Controller(store, BrokerTarget(mosquitto.host, mosquitto.port)) as ctl:
            commands = [bench_command(spec) for _ in range(JOBS)]
            for command in commands:
                ctl.send(DEVICE, command)

            deadline = time.monotonic() + DEADLINE_S
            while (n := store.count_results()) < JOBS:
                assert time.monotonic() < deadline, f"{n} results; events {events}"
                if ingest.poll() is not None:
                    assert ingest.returncode == TEST_DIE_EXIT_CODE, ingest.returncode
                    events.append(f"ingest died at {n}")
                    ingest = start_ingest(mosquitto, store_path)
                if n >= 40 and "broker" not in " ".join(events):
                    events.append(f"broker restart at {n}")
                    mosquitto.stop()
                    time.sleep(1.0)
                    mosquitto.start()
                if n >= 100 and "agent" not in " ".join(events):
                    events.append(f"agent SIGKILL at {n}")
                    agent.stop(signal.SIGKILL)
                    agent.start()
                time.sleep(0.2)
        assert any(e.startswith("ingest died") for e in events), events

        results = store.results()
        per_command = Counter(r.cmd_id for r in results)
        assert len(results) == JOBS
        assert set(per_command) == {c.cmd_id for c in commands}
        assert set(per_command.values()) == {1}
        assert all(r.status == "ok" for r in results)
    finally:
        agent.stop()
        if ingest.poll() is None:
            ingest.send_signal(signal.SIGTERM)
            ingest.wait(30)
        store.close()
