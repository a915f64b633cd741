"""CommandHandler with a command key, on a real state database (Python 3.8)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from agent import jobqueue as jq
from agent.commands import UNKNOWN_CMD_ID, Acks, CommandHandler
from agent.outbox import Outbox
from agent.statedb import StateDB
from protocol import BenchSpec, Command, encode, make
from protocol.auth import new_key, parse_key, sign

DEVICE = "pi-01"
KEY = parse_key(new_key())


@pytest.fixture
def handler(tmp_path):
    db = StateDB(tmp_path / "agent.db")
    outbox = Outbox(db)
    jobs = jq.JobQueue(db)
    refusal = {"reason": None}
    h = CommandHandler(
        db,
        jobs,
        Acks(DEVICE, outbox, f"halo/v1/dev/{DEVICE}/ack"),
        cancel_running=lambda job_id: False,
        wake_worker=lambda: None,
        command_key=KEY,
        skew_s=60,
        refuse_jobs=lambda: refusal["reason"],
    )
    h.refusal = refusal
    yield h
    db.close()


def bench(expires_at: float) -> Command:
    spec = BenchSpec(model_sha256="ab" * 32, model_name="m")
    return Command(uuid.uuid4().hex, "bench", expires_at=expires_at, bench=spec)


def wire(cmd: Command) -> bytes:
    return encode(make(cmd, "coordinator"))


def test_forgery_reusing_a_known_cmd_id_cannot_touch_that_command(handler):
    real = sign(KEY, DEVICE, bench(time.time() + 600))
    assert handler.handle(wire(real)).state == "accepted"
    forged = json.loads(wire(real))
    forged["body"]["bench"]["model_sha256"] = "cd" * 32
    ack = handler.handle(json.dumps(forged).encode())
    assert (ack.state, ack.cmd_id) == ("rejected", UNKNOWN_CMD_ID)
    assert "bad signature" in ack.reason
    assert handler.jobs.get(real.cmd_id).state == jq.QUEUED


def test_signed_retry_of_a_known_command_after_expiry_reports_its_state(handler):
    handler.skew_s = 0.0
    soon = sign(KEY, DEVICE, bench(time.time() + 0.3))
    assert handler.handle(wire(soon)).state == "accepted"
    time.sleep(0.4)
    # The same signed bytes again after expiry: the command's state, not "expired".
    ack = handler.handle(wire(soon))
    assert (ack.state, ack.cmd_id) == ("accepted", soon.cmd_id)
    unknown = handler.handle(wire(sign(KEY, DEVICE, bench(time.time() - 0.1))))
    assert unknown.state == "rejected" and unknown.reason.startswith("expired")


def test_refusal_applies_to_new_jobs_only(handler):
    first = sign(KEY, DEVICE, bench(time.time() + 600))
    assert handler.handle(wire(first)).state == "accepted"
    handler.refusal["reason"] = "outbox full: test"
    new = handler.handle(wire(sign(KEY, DEVICE, bench(time.time() + 600))))
    assert (new.state, new.reason) == ("rejected", "outbox full: test")
    assert handler.handle(wire(first)).state == "accepted"  # a retry is still answered
    ping = sign(KEY, DEVICE, Command(uuid.uuid4().hex, "ping", expires_at=time.time() + 600))
    assert handler.handle(wire(ping)).state == "pong"
