"""End to end on the production broker: a real agent daemon configured from `device add`'s
snippet, the coordinator's Controller signing its commands, and forged, tampered and expired
commands rejected with the reason in the ack while the agent keeps running."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from coordinator.connect import resolve_broker
from coordinator.dispatch import Controller, bench_command
from coordinator.security import DeviceKeys, SecureSetup
from coordinator.store import Store
from coordinator.zoo.testing import tiny_model_bytes
from protocol import BenchSpec, BlobChunk, Command, decode, encode, make
from protocol.auth import parse_key, sign

from .conftest import run_cli, wait_for

REPO = Path(__file__).resolve().parents[2]
DEVICE = "pi-01"


@pytest.fixture
def agent(secure_broker, tmp_path):
    """The agent daemon, configured with exactly what `halo-coord device add` printed."""
    snippet = run_cli(
        "device", "add", DEVICE,
        "--url", secure_broker.url,
        "--ca-path", secure_broker.ca_file,
        "--state-dir", str(secure_broker.state_dir),
    )  # fmt: skip
    assert "command_key" in snippet and "ca_file" in snippet
    config = tmp_path / "agent.toml"
    config.write_text(f'state_dir = "{tmp_path / "agent-state"}"\nheartbeat_s = 1\n' + snippet)
    log = tmp_path / "agent.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.daemon", "--config", str(config)],
            cwd=str(REPO),
            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.log = log
    yield proc
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    print(log.read_text(errors="replace"))


def test_signed_commands_run_forged_tampered_expired_are_rejected(secure_broker, agent, tmp_path):
    broker_dir = secure_broker.state_dir / "broker"
    setup = SecureSetup(broker_dir)
    key = setup.command_key(DEVICE)
    assert key == parse_key(
        json.loads(setup.devices_file.read_text())["devices"][DEVICE]["command_key"]
    )

    coord = secure_broker.coordinator()
    coord.subscribe(f"halo/v1/dev/{DEVICE}/#")
    wait_for(lambda: f"halo/v1/dev/{DEVICE}/status" in coord.topics(), "the agent online")

    def acks(cmd_id: str) -> list:
        out = []
        for topic, payload in [(m.topic, m.payload) for m in list(coord.messages)]:
            if topic.endswith("/ack"):
                ack = decode(payload, expect_type="ack").body
                if ack.cmd_id == cmd_id:
                    out.append(ack)
        return out

    def wait_ack(cmd_id: str, state: str):
        wait_for(lambda: any(a.state == state for a in acks(cmd_id)), f"ack {state} of {cmd_id}")
        return next(a for a in acks(cmd_id) if a.state == state)

    def publish(command: Command) -> None:
        coord.publish(f"halo/v1/dev/{DEVICE}/cmd", encode(make(command, "coordinator")))

    model = tmp_path / "tiny.tflite"
    model.write_bytes(tiny_model_bytes())
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    spec = BenchSpec(
        model_sha256=sha, model_name="tiny", warmup_runs=1, warmup_seconds=0.0,
        min_runs=3, min_seconds=0.0, max_seconds=20.0,
    )  # fmt: skip

    # 1. Unsolicited model chunks are dropped: no accepted command names that blob.
    stray = BlobChunk.of("cd" * 32, 0, 4, b"evil")
    coord.publish(f"halo/v1/dev/{DEVICE}/blob/data", encode(make(stray, "coordinator")))

    # 2. Unsigned, tampered (model swapped after signing), expired: each rejected, with why.
    unsigned = Command(uuid.uuid4().hex, "ping", expires_at=time.time() + 600)
    publish(unsigned)
    assert "unsigned command" in wait_ack(unsigned.cmd_id, "rejected").reason

    signed = sign(key, DEVICE, Command(uuid.uuid4().hex, "bench", time.time() + 600, bench=spec))
    tampered = dataclasses.replace(signed, bench=dataclasses.replace(spec, model_sha256="ef" * 32))
    publish(tampered)
    assert "bad signature" in wait_ack(tampered.cmd_id, "rejected").reason

    expired = sign(key, DEVICE, Command(uuid.uuid4().hex, "ping", expires_at=time.time() - 600))
    publish(expired)
    assert "expired" in wait_ack(expired.cmd_id, "rejected").reason

    other_key = sign(b"k" * 32, DEVICE, Command(uuid.uuid4().hex, "ping", time.time() + 600))
    publish(other_key)
    assert "bad signature" in wait_ack(other_key.cmd_id, "rejected").reason

    # 3. The coordinator's Controller signs for the device: ping and a whole benchmark run,
    # the model fetched over the device's own blob topics through the ACL.
    with Store(tmp_path / "store.sqlite") as store:
        store.put_blob_file(model)
        target = resolve_broker(None, broker_dir)
        assert target.tls and target.username == "halo-coordinator"
        with Controller(store, target, keys=DeviceKeys(setup)) as ctl:
            ping = Command(uuid.uuid4().hex, "ping", expires_at=time.time() + 600)
            ctl.send(DEVICE, ping)
            wait_ack(ping.cmd_id, "pong")
            bench = bench_command(spec)
            ctl.send(DEVICE, bench)
            wait_ack(bench.cmd_id, "done")
    assert any("/job/" in t and t.endswith("/result") for t in coord.topics())
    assert agent.poll() is None
    assert "not being fetched" in agent.log.read_text()
