"""The coordinator's store on a full disk: ingest keeps what it could not commit un-acked (the
broker keeps it for the ingest session), logs why, and stores everything exactly once when
space returns -- in the same process, and after a crash while the disk was full.

A full disk is made with RLIMIT_FSIZE on the ingest worker alone (no root, no mount): every
write past the limit fails with EFBIG (SIGXFSZ ignored), which SQLite reports like ENOSPC.
The limit is raised from outside with prlimit (psutil) to give the space back.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from coordinator.store import Store
from tests.coordinator.test_ingest_support import WAIT_S, FakeDevice, result_message, wait_until

REPO = Path(__file__).resolve().parents[2]
N = 60


def _no_sigxfsz() -> None:
    # Ignored signals stay ignored across exec: the write fails with EFBIG instead.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


class Worker:
    """`python -m coordinator.ingest` whose stderr is collected line by line."""

    def __init__(self, mosquitto, store_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALOFARM_TEST_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator.ingest", "--host", mosquitto.host, "--port",
             str(mosquitto.port), "--store", str(store_path), "--name", "full",
             "--batch-max", "10"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_no_sigxfsz,
        )  # fmt: skip
        self.lines: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(s,), daemon=True)
            for s in (self.proc.stdout, self.proc.stderr)
        ]
        for t in self._threads:
            t.start()
        wait_until(lambda: "ready" in self.lines, what="the ingest worker ready")

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.strip())

    def disk_full(self) -> None:
        psutil.Process(self.proc.pid).rlimit(psutil.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))

    def space_back(self) -> None:
        unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        psutil.Process(self.proc.pid).rlimit(psutil.RLIMIT_FSIZE, unlimited)

    def errors(self) -> list[str]:
        return [ln for ln in self.lines if "store write failed" in ln]

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(WAIT_S) == 0
        for t in self._threads:
            t.join(WAIT_S)
        (stats,) = [ln for ln in self.lines if ln.startswith("stats ")]
        return json.loads(stats[len("stats ") :])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT_S)


def _count(store_path: Path) -> int:
    with Store(store_path) as store:
        return store.count_results()


def test_ingest_on_a_full_disk_acks_nothing_and_recovers_when_space_returns(mosquitto, tmp_path):
    store_path = tmp_path / "store.sqlite"
    Store(store_path).close()
    messages = [result_message("full-01", i) for i in range(N)]
    device = FakeDevice(mosquitto.host, mosquitto.port, name="full-01")
    first = Worker(mosquitto, store_path)
    second = None
    try:
        first.disk_full()
        for m in messages[: N // 2]:
            device.send(m)
        wait_until(lambda: first.errors(), what="a logged store error")
        assert "full" in first.errors()[0] or "disk" in first.errors()[0], first.errors()[0]
        time.sleep(1.0)  # it keeps retrying, and nothing gets in
        assert _count(store_path) == 0
        # A crash while the disk is full: nothing was acked, the broker keeps it all.
        first.kill()

        # Space is back for a new worker: the broker redelivers the first half to it.
        second = Worker(mosquitto, store_path)
        wait_until(lambda: _count(store_path) == N // 2, what="the redelivered first half")
        # Full again, in the running worker this time.
        second.disk_full()
        for m in messages[N // 2 :]:
            device.send(m)
        device.wait_all_acked()  # the broker has every message for the ingest session
        wait_until(lambda: second.errors(), what="the second worker's store error")
        time.sleep(1.0)
        assert _count(store_path) == N // 2
        second.space_back()
        wait_until(lambda: _count(store_path) == N, what=f"all {N} results after space returned")
        stats = second.stop()
    finally:
        device.close()
        first.kill()
        if second is not None:
            second.kill()
    with Store(store_path) as store:
        ids = sorted(r.result_id for r in store.results())
    assert ids == sorted(m[2].body.result_id for m in messages)
    assert stats["results_inserted"] == N and stats["errors"] >= 1
    assert stats["results_duplicate"] == 0
