"""The persisted job queue: dedupe by cmd_id, expiry, resume after restart, and the one
transaction that commits a job's result with its final state."""

from __future__ import annotations

import re
import time

import pytest

from agent import jobqueue as jq
from agent.outbox import Outbox
from agent.statedb import StateDB

SHA = "ab" * 32


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "agent.db"


@pytest.fixture
def db(db_path):
    db = StateDB(db_path)
    yield db
    db.close()


@pytest.fixture
def queue(db):
    return jq.JobQueue(db)


def cmd(n):
    return f"{n:032x}"


def test_enqueue_creates_a_queued_job_with_stable_ids(queue):
    job, created = queue.enqueue(cmd(1), "bench", '{"a": 1}', model_sha256=SHA)
    assert created
    assert job.state == jq.QUEUED and job.attempts == 0 and not job.final
    assert re.fullmatch(r"[0-9a-f]{32}", job.job_id)
    assert re.fullmatch(r"[0-9a-f]{32}", job.result_id)
    assert job.spec == '{"a": 1}' and job.model_sha256 == SHA


def test_repeated_cmd_id_returns_the_existing_job_as_it_is_now(queue):
    job, _ = queue.enqueue(cmd(1), "bench", "{}")
    queue.start(job.job_id)
    queue.finish(job.job_id, jq.DONE)
    again, created = queue.enqueue(cmd(1), "bench", '{"different": true}')
    assert not created
    assert (again.job_id, again.result_id, again.state) == (job.job_id, job.result_id, jq.DONE)
    assert again.spec == "{}"


def test_expired_command_is_rejected_and_stays_rejected(queue):
    now = time.time()
    job, created = queue.enqueue(cmd(2), "bench", "{}", expires_at=now - 1, now=now)
    assert created and job.state == jq.REJECTED and job.reason == "expired"
    assert queue.next() is None
    again, created = queue.enqueue(cmd(2), "bench", "{}", expires_at=now - 1)
    assert not created and again.state == jq.REJECTED and again.reason == "expired"


def test_not_yet_expired_command_is_queued(queue):
    job, _ = queue.enqueue(cmd(3), "bench", "{}", expires_at=time.time() + 3600)
    assert job.state == jq.QUEUED and job.expires_at is not None


def test_fifo_order_and_state_machine(queue):
    a, _ = queue.enqueue(cmd(1), "bench", "{}")
    b, _ = queue.enqueue(cmd(2), "bench", "{}")
    assert queue.next().job_id == a.job_id
    running = queue.start(a.job_id)
    assert running.state == jq.RUNNING and running.attempts == 1
    assert queue.running().job_id == a.job_id
    assert queue.next().job_id == b.job_id
    assert queue.depth() == 1
    done = queue.finish(a.job_id, jq.FAILED, "model crashed")
    assert (done.state, done.reason) == (jq.FAILED, "model crashed")
    with pytest.raises(ValueError, match="cannot become done"):
        queue.finish(a.job_id, jq.DONE)
    with pytest.raises(ValueError, match="not a final state"):
        queue.finish(b.job_id, jq.RUNNING)
    with pytest.raises(ValueError, match="no such job"):
        queue.start("f" * 32)


def test_cancelled_queued_job_is_never_started(queue):
    job, _ = queue.enqueue(cmd(1), "bench", "{}")
    queue.finish(job.job_id, jq.CANCELLED, "by request")
    assert queue.next() is None
    with pytest.raises(ValueError, match="it is cancelled"):
        queue.start(job.job_id)


def test_queue_limit(db):
    queue = jq.JobQueue(db, max_queued=2)
    queue.enqueue(cmd(1), "bench", "{}")
    queue.enqueue(cmd(2), "bench", "{}")
    with pytest.raises(jq.QueueFull, match="limit 2"):
        queue.enqueue(cmd(3), "bench", "{}")
    assert queue.get(cmd(3)) is None
    # A repeat of a known command is still answered when the queue is full.
    assert queue.enqueue(cmd(1), "bench", "{}")[1] is False


def test_running_job_is_rerun_after_restart_with_the_same_result_id(db_path):
    db = StateDB(db_path)
    queue = jq.JobQueue(db)
    first, _ = queue.enqueue(cmd(1), "bench", "{}", model_sha256=SHA)
    later, _ = queue.enqueue(cmd(2), "bench", "{}")
    queue.start(first.job_id)
    db.close()  # the agent dies here

    db = StateDB(db_path)
    queue = jq.JobQueue(db)
    recovered = queue.recover()
    assert [j.job_id for j in recovered] == [first.job_id]
    again = queue.next()
    assert again.job_id == first.job_id  # re-run before the jobs queued after it
    assert again.result_id == first.result_id and again.attempts == 1
    assert queue.start(again.job_id).attempts == 2
    assert queue.get(cmd(2)).job_id == later.job_id
    db.close()


def test_result_and_done_commit_together_or_not_at_all(db_path):
    db = StateDB(db_path)
    queue, outbox = jq.JobQueue(db), Outbox(db)
    job, _ = queue.enqueue(cmd(1), "bench", "{}")
    queue.start(job.job_id)

    with pytest.raises(RuntimeError):
        with db.transaction():
            outbox.put("res", b"result", kind="result")
            queue.finish(job.job_id, jq.DONE)
            raise RuntimeError("killed before COMMIT")
    assert queue.get(cmd(1)).state == jq.RUNNING
    assert outbox.depth() == 0

    with db.transaction():
        outbox.put("res", b"result", kind="result", msg_id="r1")
        queue.finish(job.job_id, jq.DONE)
    db.close()

    db = StateDB(db_path)
    queue, outbox = jq.JobQueue(db), Outbox(db)
    assert queue.recover() == []  # done: never re-run
    assert [r.msg_id for r in outbox.claim()] == ["r1"]  # the result is resent instead
    db.close()


def test_needed_blobs_are_those_of_waiting_and_running_jobs(queue):
    a, _ = queue.enqueue(cmd(1), "bench", "{}", model_sha256="a" * 64)
    b, _ = queue.enqueue(cmd(2), "bench", "{}", model_sha256="b" * 64)
    queue.enqueue(cmd(3), "bench", "{}", model_sha256="c" * 64)
    queue.enqueue(cmd(4), "ping", "{}")
    queue.start(a.job_id)
    queue.finish(b.job_id, jq.CANCELLED)
    assert queue.needed_blobs() == {"a" * 64, "c" * 64}


def test_prune_forgets_old_finished_jobs_only(queue):
    a, _ = queue.enqueue(cmd(1), "bench", "{}")
    queue.enqueue(cmd(2), "bench", "{}")
    queue.finish(a.job_id, jq.CANCELLED)
    assert queue.prune(keep_s=3600) == 0
    assert queue.prune(keep_s=-1, keep_newest=0) == 1
    assert queue.get(cmd(1)) is None and queue.get(cmd(2)) is not None


def test_a_forward_clock_step_does_not_forget_recent_commands(queue):
    """After a step of decades every finished job looks ancient; the newest stay deduped."""
    for n in range(5):
        job, _ = queue.enqueue(cmd(n), "bench", "{}")
        queue.finish(job.job_id, jq.DONE)
    decades = 50 * 365 * 24 * 3600.0
    assert queue.prune(keep_s=-decades, keep_newest=3) == 2
    assert [queue.get(cmd(n)) is None for n in range(5)] == [True, True, False, False, False]
    again, created = queue.enqueue(cmd(4), "bench", "{}")
    assert not created and again.state == jq.DONE
