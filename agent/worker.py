"""The job worker: one job at a time on its own thread.

For a bench job: ack ``running`` -> fetch the model by sha256 into the blob cache (chunks over
``blob/req`` / ``blob/data``, resumable, verified) -> :func:`agent.bench.job.run_bench_job` in
a child process -> one transaction that marks the job done/failed and commits the result and
the final ack to the outbox. The worker never publishes itself: ``send`` (and the fetcher's)
hands messages to the daemon's main loop, which owns every ``publish()`` call.

An ``mcu`` job goes the same way, with :func:`agent.mcu_job.run_mcu_job` and an optional input
blob instead of a model. An ``adapt`` job fetches its blobs (CSVs, optimizer checkpoint) one
after the other, runs :func:`agent.adapt_job.run_adapt_job` in this thread and commits an
``AdaptResult`` on ``job/{job}/adapt_result`` the same way.

Python 3.8 compatible.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Set, Union

from firmware_bridge.resources import DutResource
from protocol import (
    AdaptResult,
    AdaptSpec,
    BenchResult,
    BenchSpec,
    McuSpec,
    Progress,
    ProtocolError,
    encode,
    job_topic,
    make,
)

from . import jobqueue as jq
from .adapt_job import DATA_ROLES, run_adapt_job
from .bench.job import run_bench_job
from .blobfetch import BlobFetcher, FetchError, Interrupted
from .commands import Acks
from .config import PowerConfig
from .mcu_job import run_mcu_job
from .outbox import Outbox
from .statedb import StateDB

log = logging.getLogger(__name__)

# send(topic, payload, qos): publish without the outbox (progress, blob requests).
Send = Callable[[str, bytes, int], None]

IDLE_POLL_S = 1.0
COMMIT_RETRY_S = (1.0, 2.0, 5.0, 10.0)  # back-off while the state database refuses a result


class Worker(threading.Thread):
    def __init__(
        self,
        device: str,
        db: StateDB,
        jobs: jq.JobQueue,
        outbox: Outbox,
        acks: Acks,
        fetcher: BlobFetcher,
        send: Send,
        wake_sender: Callable[[], None],
        power: Optional[PowerConfig] = None,
        duts: Sequence[DutResource] = (),
    ) -> None:
        super().__init__(name="halo-worker", daemon=True)
        self.power = power or PowerConfig()
        self.duts = tuple(duts)
        self.device = device
        self.db = db
        self.jobs = jobs
        self.outbox = outbox
        self.acks = acks
        self.send = send
        self.wake_sender = wake_sender
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cancel = threading.Event()
        # Set by a cancel or by stop(): kills a running benchmark child within 0.25 s.
        self._abort = threading.Event()
        self._current: Optional[str] = None
        self._current_lock = threading.Lock()
        self.fetcher = fetcher

    # --- called from other threads ---

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._abort.set()
        self._wake.set()

    def cancel(self, job_id: str) -> bool:
        """Ask the running job ``job_id`` to stop; False if it is not the running one."""
        with self._current_lock:
            if self._current != job_id:
                return False
            self._cancel.set()
            self._abort.set()
            return True

    @property
    def current_job(self) -> Optional[str]:
        return self._current

    # --- the worker thread ---

    def run(self) -> None:
        while not self._stopping.is_set():
            job = self.jobs.next()
            if job is None:
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                continue
            try:
                self._run(job)
            except Exception:
                if self._stopping.is_set():
                    return  # e.g. the database closed under us; the job re-runs after restart
                log.exception("job %s failed inside the agent", job.job_id)
                self._finish_after_error(job.job_id)
                self._stopping.wait(IDLE_POLL_S)  # no hot loop if the database is broken
            finally:
                with self._current_lock:
                    self._current = None
                    self._cancel.clear()
                    if not self._stopping.is_set():
                        self._abort.clear()

    def _finish_after_error(self, job_id: str) -> None:
        try:
            with self.db.transaction():
                job = self.jobs.get_job(job_id)
                if job is not None and not job.final:
                    self.acks.for_job(self.jobs.finish(job_id, jq.FAILED, "agent error"))
        except Exception:
            log.exception("cannot record the failure of job %s", job_id)
        self.wake_sender()

    def _close(self, job_id: str, state: str, reason: Optional[str]) -> None:
        with self.db.transaction():
            self.acks.for_job(self.jobs.finish(job_id, state, reason))
        self.wake_sender()

    def _run(self, job: jq.Job) -> None:
        if job.attempts >= jq.MAX_ATTEMPTS:
            reason = f"the agent stopped {job.attempts} times while running this job"
            return self._close(job.job_id, jq.FAILED, reason)
        if job.attempts == 0 and job.expires_at is not None and job.expires_at <= time.time():
            return self._close(job.job_id, jq.REJECTED, "expired")
        # Current before it is running in the database: a cancel that sees it running finds it.
        with self._current_lock:
            self._current = job.job_id
            self._cancel.clear()
            if not self._stopping.is_set():
                self._abort.clear()
        with self.db.transaction():
            try:
                job = self.jobs.start(job.job_id)
            except ValueError:  # cancelled between next() and start()
                return
            self.acks.for_job(job)
        self.wake_sender()
        log.info("job %s (command %s) running", job.job_id, job.cmd_id)

        progress = self._progress(job.job_id)
        blob = None
        if job.model_sha256 is not None:
            try:
                blob = self.fetcher.fetch(
                    job.model_sha256, progress, self.jobs.needed_blobs, self._interrupted
                )
            except FetchError as e:
                return self._close(job.job_id, jq.FAILED, str(e))
            except Interrupted:
                if self._cancel.is_set():
                    self._close(job.job_id, jq.CANCELLED, "cancelled while fetching the model")
                return

        result: Union[AdaptResult, BenchResult]
        if job.kind == "adapt":
            adapt_spec = AdaptSpec.from_dict(json.loads(job.spec), "adapt")
            files = self._fetch_adapt_blobs(job, adapt_spec, progress)
            if files is None:
                return
            result = run_adapt_job(
                adapt_spec,
                job.job_id,
                job.cmd_id,
                job.result_id,
                files,
                self.power,
                Path(self.db.path).parent,
                cancel=self._abort,
            )
        elif job.kind == "mcu":
            result = run_mcu_job(
                McuSpec.from_dict(json.loads(job.spec), "mcu"),
                self.duts,
                self.power.options.meters,
                job.job_id,
                job.cmd_id,
                job.result_id,
                input_path=None if blob is None else str(blob),
                progress=progress,
                cancel=self._abort,
            )
        else:
            result = run_bench_job(
                str(blob),
                BenchSpec.from_dict(json.loads(job.spec), "bench"),
                job.job_id,
                job.cmd_id,
                job.result_id,
                progress=progress,
                cancel=self._abort,
                power=self.power,
            )
        if self._stopping.is_set():
            # The child may have died of the shutdown itself: not a verdict on the model.
            log.info("job %s interrupted by shutdown; it runs again after restart", job.job_id)
            return
        if self._cancel.is_set():
            return self._close(job.job_id, jq.CANCELLED, "cancelled while running")
        self._commit_result(job, result)

    def _fetch_adapt_blobs(
        self, job: jq.Job, spec: AdaptSpec, progress: Callable[[str, int, Optional[int]], None]
    ) -> Optional[Dict[str, str]]:
        """role -> cached file of each blob the adapt job names; None if the job was closed
        (or is to re-run after a shutdown) instead."""
        wanted = [(role, getattr(spec, role + "_sha256")) for role in DATA_ROLES]
        wanted.append(("optimizer", spec.optimizer_sha256))
        mine = {sha for _, sha in wanted if sha is not None}

        def keep() -> Set[str]:  # the cache must not evict one of ours for another
            return self.jobs.needed_blobs() | mine

        files: Dict[str, str] = {}
        for role, sha in wanted:
            if sha is None:
                continue
            try:
                files[role] = str(self.fetcher.fetch(sha, progress, keep, self._interrupted))
            except FetchError as e:
                self._close(job.job_id, jq.FAILED, f"{role} blob: {e}")
                return None
            except Interrupted:
                if self._cancel.is_set():
                    self._close(job.job_id, jq.CANCELLED, f"cancelled while fetching {role}")
                return None
        return files

    def _commit_result(self, job: jq.Job, result: Union[AdaptResult, BenchResult]) -> None:
        state = jq.DONE if result.status == "ok" else jq.FAILED
        try:
            env = make(result, self.device)
            payload = encode(env)
        except ProtocolError as e:
            log.error("job %s: result does not fit the protocol: %s", job.job_id, e)
            return self._close(job.job_id, jq.FAILED, f"result rejected by the protocol: {e}")
        topic = job_topic(self.device, job.job_id, result.TYPE or "result")
        # One transaction: after a crash either the job is done and its result is in the
        # outbox, or neither (the job is still running and re-runs after restart).
        attempt = 0
        while True:
            try:
                with self.db.transaction():
                    self.outbox.put(topic, payload, qos=1, kind="result", msg_id=env.msg_id)
                    self.acks.for_job(self.jobs.finish(job.job_id, state, result.reason))
                break
            except sqlite3.OperationalError as e:
                # Disk full, I/O error, a read-only remount: the measurement is kept here and
                # committed once the database takes it; no other job runs meanwhile. If the
                # agent stops first, the job is still running in the database and re-runs.
                wait = COMMIT_RETRY_S[min(attempt, len(COMMIT_RETRY_S) - 1)]
                log.error(
                    "cannot store the result of job %s in %s (%s); retrying in %.0f s: "
                    "free space there",
                    job.job_id,
                    self.db.path,
                    e,
                    wait,
                )
                attempt += 1
                if self._stopping.wait(wait):
                    return
        if attempt:
            log.warning("result of job %s stored after %d failed attempts", job.job_id, attempt)
        self.wake_sender()
        log.info("job %s %s", job.job_id, state)

    def _interrupted(self) -> bool:
        return self._cancel.is_set() or self._stopping.is_set()

    def _progress(self, job_id: str) -> Callable[[str, int, Optional[int]], None]:
        topic = job_topic(self.device, job_id, "progress")

        def report(phase: str, done: int, total: Optional[int]) -> None:
            body = Progress(job_id=job_id, phase=phase, done=done, total=total)
            self.send(topic, encode(make(body, self.device)), 0)

        return report
