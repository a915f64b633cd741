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
import time
from pathlib import Path

import paho.mqtt.client as mqtt
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
        (["--retire"], "--retire ends an ingest worker"),
        (["--ingest-only", "--retire"], "--ingest-only needs --worker NAME"),
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


def test_a_retired_worker_hands_its_queued_share_over_and_leaves_the_group(
    mosquitto, tmp_path: Path
) -> None:
    """A stopped worker's persistent session keeps its share of the stream (mosquitto gives
    offline members of a shared group their turn). `--retire` stores that share and ends the
    session, so from then on the live worker gets every result."""
    store = str(tmp_path / "store.sqlite")
    Store(store).close()
    (tmp_path / "retire").mkdir()
    workers = [Worker(f"w{i}", mosquitto.url, store, tmp_path) for i in (1, 2)]
    device = FakeDevice(mosquitto.host, mosquitto.port, name=DEVICES[0])
    try:
        wait_until(lambda: all(w.subscribed() for w in workers), what="workers subscribed")
        workers[0].stop()
        first = [result_message(device.name, i) for i in range(40)]
        for message in first:
            device.send(message)
        with Store(store) as db:
            wait_until(lambda: db.count_results() >= 10, what="the live worker's share stored")
            counts = [db.count_results()]
            while len(counts) < 5 or counts[-1] != counts[-5]:  # settled: 1 s without news
                time.sleep(0.25)
                counts.append(db.count_results())
            held = len(first) - counts[-1]
            assert held > 0, "the stopped worker's session got no share: nothing to retire"
            out = subprocess.run(
                [sys.executable, "-m", "coordinator", "serve", "--ingest-only", "--worker",
                 "w1", "--retire", "--broker", mosquitto.url, "--store", store],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
            assert "worker w1 retired" in out.stderr
            retired = json.loads(out.stdout.splitlines()[-1])
            assert retired["results_inserted"] == held and retired["errors"] == 0, retired
            assert db.count_results() == len(first)
            # The group has one member now: every new result reaches the live worker.
            late = [result_message(device.name, 100 + i) for i in range(20)]
            for message in late:
                device.send(message)
            wait_until(lambda: db.count_results() == len(first) + len(late), what="late stored")
            stored = {r.result_id for r in db.results()}
        live = workers[1].stop()
    finally:
        device.close()
        for w in workers:
            w.kill()
    assert stored == {m[2].body.result_id for m in first + late}
    assert live["results_inserted"] == len(first) + len(late) - held
    # The session is gone: connecting under its client id finds none.
    probe = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="halo-ingest-w1", protocol=mqtt.MQTTv5
    )
    present = []
    probe.on_connect = lambda c, u, flags, rc, p: present.append(flags.session_present)
    probe.connect(mosquitto.host, mosquitto.port, clean_start=False)
    probe.loop_start()
    try:
        wait_until(lambda: bool(present), what="probe connected")
    finally:
        probe.disconnect()
        probe.loop_stop()
    assert present == [False]
