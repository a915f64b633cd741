"""Persisted queue of accepted commands, one row per cmd_id, in the agent's state database.

Life of a job: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``; a command
that expired before it ran ends ``rejected`` (reason "expired"). The daemon wraps each state
change and the messages that report it (ack, result) in one :meth:`StateDB.transaction`, so
after a crash either both are committed or neither is:

* result + ``done`` committed -> the job never runs again, the outbox resends the result;
* neither committed -> the job is still ``running``; :meth:`JobQueue.recover` queues it again
  and the re-run reports under the same ``result_id`` (fixed at enqueue), so should a result
  ever be published twice, ingest keeps one.

Python 3.8 compatible.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import List, Optional, Set, Tuple

from .statedb import StateDB

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
REJECTED = "rejected"
FINAL_STATES = frozenset({DONE, FAILED, CANCELLED, REJECTED})

# A job running when the agent died is re-run; one that took the agent down this often is not.
MAX_ATTEMPTS = 3
MAX_QUEUED = 1000
KEEP_FINISHED_S = 30 * 24 * 3600.0
# The newest finished jobs are kept whatever their age: ages are wall-clock, and a forward step
# (an RTC-less board's first NTP sync after booting in 1970) must not forget the cmd_ids a
# coordinator may still resend.
KEEP_FINISHED_MIN = 10000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cmd_id TEXT NOT NULL UNIQUE,
    job_id TEXT NOT NULL UNIQUE,
    result_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    model_sha256 TEXT,
    expires_at REAL,
    state TEXT NOT NULL,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""


class QueueFull(Exception):
    """The queue's limit of waiting jobs is reached."""


@dataclass(frozen=True)
class Job:
    cmd_id: str
    job_id: str
    result_id: str
    kind: str
    spec: str  # the command's arguments as JSON text
    model_sha256: Optional[str]
    expires_at: Optional[float]
    state: str
    reason: Optional[str]
    attempts: int  # times it was started

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


_COLUMNS = (
    "cmd_id, job_id, result_id, kind, spec, model_sha256, expires_at, state, reason, attempts"
)


class JobQueue:
    def __init__(self, db: StateDB, max_queued: int = MAX_QUEUED) -> None:
        self.db = db
        self.max_queued = max_queued
        db.ensure_schema(_SCHEMA)

    def _one(self, where: str, args: Tuple) -> Optional[Job]:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM jobs WHERE {where}", args)
        return Job(*rows[0]) if rows else None

    def get(self, cmd_id: str) -> Optional[Job]:
        return self._one("cmd_id = ?", (cmd_id,))

    def get_job(self, job_id: str) -> Optional[Job]:
        return self._one("job_id = ?", (job_id,))

    def enqueue(
        self,
        cmd_id: str,
        kind: str,
        spec: str,
        model_sha256: Optional[str] = None,
        expires_at: Optional[float] = None,
        now: Optional[float] = None,
    ) -> Tuple[Job, bool]:
        """Queue a command; returns (job, created). A cmd_id seen before returns its job as it
        is now with created=False, so a retried command gets the same answer. A command past
        ``expires_at`` is stored as ``rejected`` with reason "expired". Raises
        :class:`QueueFull` (nothing stored) when ``max_queued`` jobs are waiting."""
        now = time.time() if now is None else now
        with self.db.transaction() as conn:
            existing = self.get(cmd_id)
            if existing is not None:
                return existing, False
            expired = expires_at is not None and expires_at <= now
            if not expired:
                (waiting,) = conn.execute(
                    "SELECT COUNT(*) FROM jobs WHERE state = ?", (QUEUED,)
                ).fetchone()
                if waiting >= self.max_queued:
                    raise QueueFull(f"{waiting} jobs are waiting already (limit {self.max_queued})")
            conn.execute(
                "INSERT INTO jobs (cmd_id, job_id, result_id, kind, spec, model_sha256,"
                " expires_at, state, reason, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    cmd_id,
                    uuid.uuid4().hex,
                    uuid.uuid4().hex,
                    kind,
                    spec,
                    model_sha256,
                    expires_at,
                    REJECTED if expired else QUEUED,
                    "expired" if expired else None,
                    now,
                    now,
                ),
            )
            return self.get(cmd_id), True  # type: ignore[return-value]

    def next(self) -> Optional[Job]:
        """The oldest queued job (not started)."""
        return self._one("state = ? ORDER BY seq LIMIT 1", (QUEUED,))

    def start(self, job_id: str) -> Job:
        """queued -> running, counting the attempt."""
        return self._move(job_id, (QUEUED,), RUNNING, None, attempt=True)

    def finish(self, job_id: str, state: str, reason: Optional[str] = None) -> Job:
        """A queued or running job reaches a final state."""
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state!r}")
        return self._move(job_id, (QUEUED, RUNNING), state, reason)

    def _move(
        self,
        job_id: str,
        sources: Tuple[str, ...],
        state: str,
        reason: Optional[str],
        attempt: bool = False,
    ) -> Job:
        with self.db.transaction() as conn:
            marks = ",".join("?" * len(sources))
            cur = conn.execute(
                f"UPDATE jobs SET state = ?, reason = ?, updated_at = ?,"
                f" attempts = attempts + ? WHERE job_id = ? AND state IN ({marks})",
                (state, reason, time.time(), int(attempt), job_id, *sources),
            )
            job = self.get_job(job_id)
            if cur.rowcount != 1 or job is None:
                found = "no such job" if job is None else f"it is {job.state}"
                raise ValueError(f"job {job_id} cannot become {state}: {found}")
            return job

    def recover(self) -> List[Job]:
        """At startup: jobs that were running when the agent stopped are queued again (they
        are re-run first, in their original order). Returns them."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET state = ?, updated_at = ? WHERE state = ?",
                (QUEUED, time.time(), RUNNING),
            )
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state = ? AND attempts > 0 ORDER BY seq",
                (QUEUED,),
            ).fetchall()
        return [Job(*r) for r in rows]

    def running(self) -> Optional[Job]:
        return self._one("state = ? LIMIT 1", (RUNNING,))

    def depth(self) -> int:
        """Jobs waiting to run."""
        return self.db.query("SELECT COUNT(*) FROM jobs WHERE state = ?", (QUEUED,))[0][0]

    def needed_blobs(self) -> Set[str]:
        """Models of jobs that are queued or running: the blob cache must keep them."""
        rows = self.db.query(
            "SELECT DISTINCT model_sha256 FROM jobs WHERE state IN (?, ?)"
            " AND model_sha256 IS NOT NULL",
            (QUEUED, RUNNING),
        )
        return {r[0] for r in rows}

    def prune(self, keep_s: float = KEEP_FINISHED_S, keep_newest: int = KEEP_FINISHED_MIN) -> int:
        """Forget finished jobs older than ``keep_s``, but never the ``keep_newest`` newest
        (their cmd_ids can no longer be deduped, which is why this is weeks: far longer than
        any coordinator retries a command)."""
        states = sorted(FINAL_STATES)
        marks = ",".join("?" * len(states))
        with self.db.transaction() as conn:
            cur = conn.execute(
                f"DELETE FROM jobs WHERE state IN ({marks}) AND updated_at < ? AND seq NOT IN"
                f" (SELECT seq FROM jobs WHERE state IN ({marks}) ORDER BY seq DESC LIMIT ?)",
                (*states, time.time() - keep_s, *states, keep_newest),
            )
            return cur.rowcount
