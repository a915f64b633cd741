"""The outbox's disk budget, with a real agent daemon and a real mosquitto: when un-sent
messages reach ``outbox_max_bytes`` the agent refuses new jobs with the reason and says so in
its retained status; nothing is dropped, and once the backlog is delivered it accepts jobs again.
"""

from __future__ import annotations

import threading
from typing import List

import paho.mqtt.client as mqtt

from agent.outbox import Outbox
from agent.statedb import StateDB
from protocol import decode

from .test_daemon import DEVICE, Agent, agent, bench_spec, peer, wait_for  # noqa: F401

BACKLOG_TOPIC = "halo/v1/dev/other-board/job/j1/result"  # nobody ingests it yet
ROWS, ROW_BYTES = 5, 250_000
BUDGET = 1024**2  # the smallest the config allows; ROWS * ROW_BYTES is above it


class Watcher:
    """A plain client collecting retained status bodies and (once asked) the backlog."""

    def __init__(self, broker) -> None:
        self.lock = threading.Lock()
        self.statuses: List = []
        self.backlog = 0
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="watcher", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"halo/v1/dev/{DEVICE}/status", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            if msg.topic == BACKLOG_TOPIC:
                self.backlog += 1
            else:
                self.statuses.append(decode(msg.payload, expect_type="status").body)

    def last_status(self):
        with self.lock:
            return self.statuses[-1] if self.statuses else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_full_outbox_refuses_jobs_keeps_results_and_recovers(peer, agent, mosquitto, tiny_model):  # noqa: F811
    agent.config.write_text(
        f"outbox_max_bytes = {BUDGET}\n" + agent.config.read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    agent.state_dir.mkdir(parents=True)
    db = StateDB(agent.state_dir / "agent.db")
    outbox = Outbox(db)
    for i in range(ROWS):
        outbox.put(BACKLOG_TOPIC, bytes([i]) * ROW_BYTES, qos=1, kind="result")
    db.close()

    watcher = Watcher(mosquitto)
    try:
        agent.start(peer)
        wait_for(
            lambda: watcher.last_status() is not None and watcher.last_status().refusing_jobs,
            "a status saying jobs are refused",
        )
        assert "outbox full" in watcher.last_status().refusing_jobs

        refused = peer.command("bench", bench=bench_spec(tiny_model))
        reason = peer.wait_ack(refused, "rejected").reason
        assert "outbox full" in reason and str(BUDGET) in reason
        pending = "SELECT COUNT(*) FROM outbox WHERE kind = 'result' AND acked_at IS NULL"
        assert agent.query(pending) == [(ROWS,)]  # refused new work, dropped nothing

        # Ingest comes back: the backlog is delivered and the agent takes jobs again.
        watcher.client.subscribe(BACKLOG_TOPIC, qos=1)
        wait_for(lambda: watcher.backlog >= ROWS, "the backlog delivered")
        wait_for(lambda: agent.query(pending) == [(0,)], "the backlog acknowledged")
        accepted = peer.command("bench", bench=bench_spec(tiny_model))
        peer.wait_ack(accepted, "accepted")
        wait_for(
            lambda: watcher.last_status().refusing_jobs is None, "a status accepting jobs again"
        )
        assert agent.proc.poll() is None
    finally:
        watcher.close()
