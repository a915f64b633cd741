"""Scale-out end to end: two `halo-coord serve --ingest-only` worker processes share the result
stream through the broker's shared subscription into one store (a SQLite file, or a PostgreSQL
server), with a real mosquitto and devices publishing like agents (QoS 1 results, redelivered
duplicates, QoS 0 heartbeats). Every result is stored exactly once, and both workers work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.store import Store
from tests.coordinator.test_ingest_support import (
    WAIT_S,
    FakeDevice,
    hb_message,
    result_message,
    wait_until,
)

DEVICES = ("rpi4-01", "rpi4-02", "jetson-nano-01")
PER_DEVICE = 100
DUPLICATES = 30
LATE = 20


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return request.getfixturevalue("postgres_url")


class Worker:
    """`halo-coord serve --ingest-only --worker NAME` as a child process."""

    def __init__(self, name: str, broker_url: str, store: str, logdir: Path) -> None:
        self.log = logdir / f"{name}.log"
        self.out = logdir / f"{name}.out"
        with open(self.log, "wb") as err, open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "coordinator",
                    "serve",
                    "--ingest-only",
                    "--worker",
                    name,
                    "--broker",
                    broker_url,
                    "--store",
                    store,
                ],  # fmt: skip
                stdout=out,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def subscribed(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        return "subscribed as halo-ingest-" in self.log.read_text()

    def stop(self) -> dict:
        """SIGTERM: it commits and acks what arrived, prints its counts and exits 0."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(WAIT_S) == 0, self.log.read_text()
        return json.loads(self.out.read_text().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_two_ingest_only_workers_store_every_result_once(
    mosquitto, store_target: str, tmp_path: Path
) -> None:
    Store(store_target).close()  # created and migrated before the workers race for it
    workers = [Worker(f"w{i}", mosquitto.url, store_target, tmp_path) for i in (1, 2)]
    devices = [FakeDevice(mosquitto.host, mosquitto.port, name=d) for d in DEVICES]
    try:
        wait_until(lambda: all(w.subscribed() for w in workers), what="workers subscribed")
        sent = []
        for i in range(PER_DEVICE):
            for dev in devices:
                message = result_message(dev.name, i)
                sent.append(message)
                dev.send(message)
                if i % 25 == 0:
                    dev.send(hb_message(dev.name))
        with Store(store_target) as store:
            wait_until(lambda: store.count_results() == len(sent), what="every result stored")
            # An agent's outbox resends what it is not sure was delivered: duplicates.
            for message in sent[:DUPLICATES]:
                devices[0].publish(message[0], message[1])
            # Fresh results after them: both workers got some (round robin), so once these are
            # stored, each worker has been through its duplicates too.
            late = [result_message(DEVICES[0], PER_DEVICE + i) for i in range(LATE)]
            for message in late:
                devices[0].send(message)
            total = len(sent) + LATE
            wait_until(lambda: store.count_results() == total, what="late results stored")
            stored = [r.result_id for r in store.results()]
            assert {d.device for d in store.devices()} == set(DEVICES)  # heartbeats
        stats = [w.stop() for w in workers]
    finally:
        for dev in devices:
            dev.close()
        for w in workers:
            w.kill()
    expected = {m[2].body.result_id for m in sent + late}
    assert len(stored) == total and set(stored) == expected
    inserted = [s["results_inserted"] for s in stats]
    assert sum(inserted) == total and all(inserted), inserted  # the stream was shared
    assert sum(s["results_duplicate"] for s in stats) == DUPLICATES
    assert all(s["errors"] == 0 for s in stats), stats


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ingest-only"], "--ingest-only needs --worker NAME"),
        (["--ingest-only", "--worker", "a b"], "--worker must be 1-64 letters"),
        (["--ingest-only", "--worker", "w", "--campaign", __file__], "drop --campaign"),
        (["--worker", "w"], "--worker names an --ingest-only worker"),
    ],
)
def test_serve_ingest_only_option_errors_are_one_line(args, message, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coordinator", "serve", *args, "--store", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    (line,) = out.stderr.splitlines()
    assert line.startswith("halo-coord: error: ") and message in line


def test_a_second_live_worker_of_the_same_name_is_refused(mosquitto, tmp_path: Path) -> None:
    store = str(tmp_path / "store.sqlite")
    (tmp_path / "second").mkdir()
    workers = [Worker("twin", mosquitto.url, store, tmp_path)]
    try:
        wait_until(workers[0].subscribed, what="first worker subscribed")
        workers.append(Worker("twin", mosquitto.url, store, tmp_path / "second"))
        assert workers[1].proc.wait(WAIT_S) == 2
        (line,) = workers[1].log.read_text().splitlines()
        assert "already ingests as 'twin'" in line and "on this host" in line
        assert workers[0].stop()["errors"] == 0  # undisturbed
        # Once the first is gone the name is free again: its session carries on.
        workers.append(Worker("twin", mosquitto.url, store, tmp_path / "second"))
        wait_until(workers[2].subscribed, what="the name taken over")
        workers[2].stop()
    finally:
        for w in workers:
            w.kill()
