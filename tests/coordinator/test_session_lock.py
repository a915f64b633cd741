"""One live ingest session per name and broker on this host (coordinator.session_lock): a
second long-running ingester is refused, a one-shot command follows a holder that writes the
same store, and is refused when the holder writes another one. The holder is a real
`halo-coord serve --ingest-only` process; the followers are real CLI commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from coordinator import farm
from coordinator.connect import resolve_broker
from coordinator.session_lock import ingest_session, lock_path
from coordinator.store import Store
from tests.coordinator.farm_support import coord


def test_a_second_holder_is_refused_and_a_follower_follows(tmp_path, mosquitto) -> None:
    broker = resolve_broker(mosquitto.url)
    store = str(tmp_path / "a.sqlite")
    with ingest_session(broker, "main", store) as held:
        assert held is True
        holder = json.loads(lock_path(broker, "main").read_text())
        assert holder["store"] == store and holder["pid"] > 0
        with ingest_session(broker, "main", store, follow=True) as follower:
            assert follower is False
        for kwargs, words in (({}, "already ingests as 'main'"),
                              ({"follow": True}, "not /elsewhere.sqlite")):  # fmt: skip
            other = store if not kwargs else "/elsewhere.sqlite"
            try:
                with ingest_session(broker, "main", other, **kwargs):
                    raise AssertionError("a second holder was let in")
            except Exception as exc:  # noqa: BLE001 - the UserError's text is the contract
                assert words in str(exc), exc
    with ingest_session(broker, "main", store) as held:  # released at exit
        assert held is True


def test_one_shot_commands_follow_a_running_serve(tmp_path, mosquitto) -> None:
    store = tmp_path / "store.sqlite"
    env = {"HALOFARM_BROKER_URL": mosquitto.url, "HALOFARM_STORE": str(store)}
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "coordinator", "serve", "--ingest-only", "--worker", "main"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
    )  # fmt: skip
    try:
        broker = resolve_broker(mosquitto.url)
        deadline = time.monotonic() + 30
        lock = lock_path(broker, "main")
        while not (lock.exists() and lock.read_text(errors="replace").strip()):
            assert time.monotonic() < deadline and serve.poll() is None, "serve did not start"
            time.sleep(0.1)
        started = time.monotonic()
        out = coord("results", "--json", env=env)  # syncs: follows serve, does not ingest
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == []
        assert time.monotonic() - started < 15
        with Store(store) as s:
            assert farm.sync(s, broker).messages == 0  # followed: nothing ingested here
        other = coord("results", "--json", env={**env, "HALOFARM_STORE": str(tmp_path / "b")})
        assert other.returncode == 2 and other.stderr.count("\n") == 1
        assert "use the same --store" in other.stderr
    finally:
        serve.terminate()
        serve.wait(30)
        log.close()
