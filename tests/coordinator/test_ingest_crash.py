"""The ingest process dies between commit and ack, or before commit: after a restart every
result is in the store exactly once. The worker runs as `python -m coordinator.ingest` and
dies through its documented test hooks (os._exit, so nothing is flushed or acked)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.ingest import (
    DIE_AFTER_COMMIT_ENV,
    DIE_BEFORE_COMMIT_ENV,
    TEST_DIE_EXIT_CODE,
)
from coordinator.store import Store
from tests.coordinator.test_ingest_support import WAIT_S, FakeDevice, result_message, wait_until

REPO = Path(__file__).resolve().parents[2]
N = 200


class Worker:
    """`python -m coordinator.ingest` in a child process; batches of 20 so a run has many."""

    def __init__(self, mosquitto, store_path: Path, extra_env: dict[str, str] | None = None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALOFARM_TEST_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator.ingest", "--host", mosquitto.host, "--port",
             str(mosquitto.port), "--store", str(store_path), "--name", "crash",
             "--batch-max", "20"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._expect_line("ready")

    def _expect_line(self, prefix: str) -> str:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(prefix):
                    return line[len(prefix) :].strip()
                if not line:
                    break
        self.proc.kill()
        raise AssertionError(f"worker never printed {prefix!r}: {self.proc.stderr.read()}")

    def wait_exit(self) -> int:
        return self.proc.wait(WAIT_S)

    def stop(self) -> dict:
        """SIGTERM: the worker drains, acks, disconnects and prints its stats."""
        self.proc.send_signal(signal.SIGTERM)
        stats = json.loads(self._expect_line("stats"))
        assert self.proc.wait(WAIT_S) == 0
        return stats


@pytest.mark.parametrize("hook", [DIE_AFTER_COMMIT_ENV, DIE_BEFORE_COMMIT_ENV])
def test_killed_worker_restarts_and_stores_each_result_once(
    mosquitto, tmp_path: Path, hook: str
) -> None:
    store_path = tmp_path / "store.sqlite"
    messages = [result_message("rpi4-01", i) for i in range(N)]
    worker = Worker(mosquitto, store_path, {hook: "3"})
    device = FakeDevice(mosquitto.host, mosquitto.port)
    try:
        for m in messages:
            device.send(m)
        # The broker takes them all, for the worker's persistent session, dead or alive.
        device.wait_all_acked()
        assert worker.wait_exit() == TEST_DIE_EXIT_CODE
        with Store(store_path) as store:
            before = store.count_results()
        # Two batches committed and the third died after its commit, or before it.
        assert before >= (3 if hook == DIE_AFTER_COMMIT_ENV else 2)
        assert before < N

        worker = Worker(mosquitto, store_path)
        with Store(store_path) as store:
            wait_until(lambda: store.count_results() == N, what=f"all {N} results")
        stats = worker.stop()
    finally:
        device.close()
        if worker.proc.poll() is None:
            worker.proc.kill()
    with Store(store_path) as store:
        ids = [r.result_id for r in store.results()]
    assert sorted(ids) == sorted(m[2].body.result_id for m in messages)
    assert stats["results_inserted"] == N - before
    if hook == DIE_AFTER_COMMIT_ENV:
        # The committed but un-acked batch came back and was absorbed by result_id.
        assert stats["results_duplicate"] >= 1
