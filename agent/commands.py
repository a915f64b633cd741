"""Handling of received commands: validate, authenticate, dedupe, queue, and answer with an ack.

With a command key (``[auth]`` in the agent config) a command runs only if its HMAC verifies
and it has not expired (:mod:`protocol.auth`); otherwise it is ``rejected`` with the reason. A
rejected forgery that reuses the cmd_id of a real command is acked with :data:`UNKNOWN_CMD_ID`,
so it cannot overwrite that command's state at the coordinator. A correctly signed retry of a
known command is answered with the command's state even after it expired.

New jobs are refused while ``refuse_jobs()`` gives a reason (the outbox is over its disk budget):
results already produced are never dropped, so the agent stops producing more instead.

Every payload gets exactly one ack into the outbox (never dropped, QoS 1), committed in the
same transaction as the job-queue change it reports. A payload that is not a valid command is
``rejected`` with the protocol's reason. Its ack carries the command's cmd_id when one can be
read from it (the JSON parses and ``body.cmd_id`` is 32 lowercase hex); otherwise
:data:`UNKNOWN_CMD_ID` (32 zeros), because the ack's cmd_id must itself be valid hex and the
sender still deserves to see why its message went nowhere.

Python 3.8 compatible.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable, Optional, Sequence

from firmware_bridge.resources import DutResource
from protocol import (
    MAX_MESSAGE_BYTES,
    Ack,
    Command,
    ProtocolError,
    decode,
    encode,
    job_topic,
    make,
)
from protocol.auth import DEFAULT_SKEW_S, AuthError, Expired, verify

from . import jobqueue as jq
from .adapt_job import adapt_problem
from .bench.job import spec_problem
from .config import PowerConfig
from .mcu_job import mcu_problem
from .outbox import Outbox
from .statedb import StateDB

log = logging.getLogger(__name__)

UNKNOWN_CMD_ID = "0" * 32
REASON_MAX_CHARS = 1000
_HEX32 = re.compile(r"[0-9a-f]{32}")

# Job state -> the ack state that reports it.
ACK_STATE = {
    jq.QUEUED: "accepted",
    jq.RUNNING: "running",
    jq.DONE: "done",
    jq.FAILED: "failed",
    jq.CANCELLED: "cancelled",
    jq.REJECTED: "rejected",
}


def salvage_cmd_id(payload: bytes) -> str:
    """The cmd_id of an invalid command if it can be read, else UNKNOWN_CMD_ID."""
    if len(payload) > MAX_MESSAGE_BYTES:
        return UNKNOWN_CMD_ID
    try:
        body = json.loads(payload.decode("utf-8")).get("body")
        cmd_id = body.get("cmd_id")
    except Exception:  # anything at all: this is a best-effort look into garbage
        return UNKNOWN_CMD_ID
    return cmd_id if isinstance(cmd_id, str) and _HEX32.fullmatch(cmd_id) else UNKNOWN_CMD_ID


def clip(reason: Optional[str]) -> Optional[str]:
    if reason is None or len(reason) <= REASON_MAX_CHARS:
        return reason
    return reason[: REASON_MAX_CHARS - 3] + "..."


class Acks:
    """Writes acks into the outbox."""

    def __init__(self, device: str, outbox: Outbox, topic: str) -> None:
        self.device = device
        self.outbox = outbox
        self.topic = topic

    def put(
        self,
        cmd_id: str,
        state: str,
        reason: Optional[str] = None,
        job_id: Optional[str] = None,
    ) -> Ack:
        ack = Ack(cmd_id=cmd_id, state=state, reason=clip(reason), job_id=job_id)
        env = make(ack, self.device)
        self.outbox.put(self.topic, encode(env), qos=1, kind="ack", msg_id=env.msg_id)
        return ack

    def for_job(self, job: jq.Job) -> Ack:
        return self.put(job.cmd_id, ACK_STATE[job.state], job.reason, job.job_id)


class CommandHandler:
    def __init__(
        self,
        db: StateDB,
        jobs: jq.JobQueue,
        acks: Acks,
        cancel_running: Callable[[str], bool],
        wake_worker: Callable[[], None],
        power: Optional[PowerConfig] = None,
        duts: Sequence[DutResource] = (),
        command_key: Optional[bytes] = None,
        skew_s: float = DEFAULT_SKEW_S,
        refuse_jobs: Callable[[], Optional[str]] = lambda: None,
    ) -> None:
        self.command_key = command_key
        self.skew_s = skew_s
        self._refuse_jobs = refuse_jobs
        self.power = power or PowerConfig()
        self.duts = tuple(duts)
        self.db = db
        self.jobs = jobs
        self.acks = acks
        self._cancel_running = cancel_running  # job_id -> True if the worker will stop it
        self._wake_worker = wake_worker

    def handle(self, payload: bytes) -> Ack:
        """Answer one received payload; returns the ack committed for it. Never raises for
        what the payload holds: an unexpected failure is logged and rejected too."""
        try:
            return self._handle(payload)
        except Exception as e:
            log.exception("command could not be handled")
            return self.acks.put(salvage_cmd_id(payload), "rejected", f"agent error: {e}")

    def _handle(self, payload: bytes) -> Ack:
        try:
            env = decode(payload, expect_type="cmd")
        except ProtocolError as e:
            cmd_id = salvage_cmd_id(payload)
            log.warning("rejected command %s: %s", cmd_id, e)
            return self.acks.put(cmd_id, "rejected", str(e))
        cmd: Command = env.body
        if self.command_key is not None:
            try:
                verify(self.command_key, self.acks.device, cmd, skew_s=self.skew_s)
            except AuthError as e:
                known = self.jobs.get(cmd.cmd_id) is not None
                if not (known and isinstance(e, Expired)):
                    log.warning("rejected command %s: %s", cmd.cmd_id, e)
                    return self.acks.put(
                        UNKNOWN_CMD_ID if known else cmd.cmd_id, "rejected", str(e)
                    )
        log.info("command %s: %s", cmd.cmd_id, cmd.kind)
        if cmd.kind == "ping":
            return self.acks.put(cmd.cmd_id, "pong")
        if cmd.kind == "bench":
            return self._bench(cmd)
        if cmd.kind == "cancel":
            return self._cancel(cmd)
        if cmd.kind == "mcu":
            return self._mcu(cmd)
        if cmd.kind == "adapt":
            return self._adapt(cmd)
        return self.acks.put(
            cmd.cmd_id, "rejected", f"kind {cmd.kind!r} is not supported yet by this agent"
        )

    def _bench(self, cmd: Command) -> Ack:
        spec: Any = cmd.bench
        return self._enqueue(cmd, "bench", spec, spec_problem(spec, self.power), spec.model_sha256)

    def _mcu(self, cmd: Command) -> Ack:
        spec: Any = cmd.mcu
        problem = mcu_problem(spec, self.duts, self.power.options.meters)
        return self._enqueue(cmd, "mcu", spec, problem, spec.input_sha256)

    def _adapt(self, cmd: Command) -> Ack:
        # Its blobs (CSVs, optimizer checkpoint) are fetched when the job runs.
        spec: Any = cmd.adapt
        return self._enqueue(cmd, "adapt", spec, adapt_problem(spec), None)

    def _enqueue(
        self, cmd: Command, kind: str, spec: Any, problem: Optional[str], blob: Optional[str]
    ) -> Ack:
        if problem is None and self.jobs.get(cmd.cmd_id) is None:
            problem = self._refuse_jobs()
        if problem is not None:
            log.warning("rejected command %s: %s", cmd.cmd_id, problem)
            return self.acks.put(cmd.cmd_id, "rejected", problem)
        with self.db.transaction():
            try:
                job, created = self.jobs.enqueue(
                    cmd.cmd_id,
                    kind,
                    json.dumps(spec.to_dict()),
                    model_sha256=blob,
                    expires_at=cmd.expires_at,
                )
            except jq.QueueFull as e:
                return self.acks.put(cmd.cmd_id, "rejected", f"queue full: {e}")
            ack = self.acks.for_job(job)
            resent = 0
            if not created and job.final:
                # Asked again about a finished job: the coordinator lacks its result, which a
                # broker killed before saving may have lost. Send it again (ingest dedupes).
                leaves = ("result", "adapt_result")
                resent = self.acks.outbox.resend(
                    *(job_topic(self.acks.device, job.job_id, leaf) for leaf in leaves)
                )
        if not created:
            log.info(
                "command %s seen before: it is %s%s",
                cmd.cmd_id,
                job.state,
                "; its result is sent again" if resent else "",
            )
        self._wake_worker()
        return ack

    def _cancel(self, cmd: Command) -> Ack:
        target_id = cmd.target_cmd_id or ""
        with self.db.transaction():
            target = self.jobs.get(target_id)
            if target is None:
                return self.acks.put(
                    cmd.cmd_id, "rejected", f"no command {target_id} on this device"
                )
            if target.final:
                return self.acks.put(
                    cmd.cmd_id, "rejected", f"command {target_id} is {target.state} already"
                )
            if target.state == jq.QUEUED:
                cancelled = self.jobs.finish(
                    target.job_id, jq.CANCELLED, f"cancelled by command {cmd.cmd_id}"
                )
                self.acks.for_job(cancelled)
                return self.acks.put(cmd.cmd_id, "done", job_id=target.job_id)
        # Running: the worker stops it at its next checkpoint and then acks the target
        # "cancelled"; this command is answered now.
        if self._cancel_running(target.job_id):
            return self.acks.put(
                cmd.cmd_id,
                "accepted",
                "the job is running; it is cancelled at its next checkpoint",
                job_id=target.job_id,
            )
        return self.acks.put(
            cmd.cmd_id, "rejected", f"command {target_id} finished meanwhile", target.job_id
        )
