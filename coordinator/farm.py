"""The farm seen from the laptop: pull what the broker holds into the store, send benchmark
jobs and wait for them. Used by the `devices`, `bench`, `results` and `demo` commands."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from coordinator.connect import BrokerTarget
from coordinator.dispatch import Controller, bench_command
from coordinator.errors import UserError
from coordinator.ingest import Ingestor, IngestStats
from coordinator.session_lock import MAIN, ingest_session
from coordinator.store import JobRecord, Store
from protocol.bodies import BenchSpec

# Job states after which nothing more will happen to a job.
FINAL = ("done", "failed", "rejected", "cancelled")
# States that mean the device has its model (and no longer needs our blob server).
FETCHED = ("running", *FINAL)
INGEST_NAME = MAIN


def ingestor(store: Store, broker: BrokerTarget, name: str = INGEST_NAME, **kwargs) -> Ingestor:
    return Ingestor(
        store,
        broker.host,
        broker.port,
        name=name,
        username=broker.username,
        password=broker.password,
        **kwargs,
    )


@contextmanager
def running_ingestor(
    store: Store, broker: BrokerTarget, *, follow: bool = False, **kwargs
) -> Iterator[Ingestor | None]:
    """The ingest worker, connected and subscribed, stopped (after a final commit) at exit.
    With ``follow``, None instead when another halo-coord on this host already ingests into
    the same store (see :mod:`coordinator.session_lock`). ``kwargs`` go to :class:`Ingestor`
    (e.g. ``on_commit``)."""
    name = kwargs.pop("name", INGEST_NAME)
    with ingest_session(broker, name, store.location, follow=follow) as held:
        if not held:
            yield None
            return
        ing = ingestor(store, broker, name=name, **kwargs)
        ing.start()
        try:
            if not ing.wait_ready(10.0):
                raise UserError(
                    f"cannot reach the broker at {broker.url}; is it running? "
                    "(`halo-coord broker status`)"
                )
            yield ing
        finally:
            ing.stop()


def sync(
    store: Store, broker: BrokerTarget, idle_s: float = 0.5, max_s: float = 15.0
) -> IngestStats:
    """Store everything the broker holds for us (queued results and acks, retained status and
    caps), returning once nothing new has arrived for idle_s. Nothing to do (zero counts)
    while another halo-coord on this host ingests into the same store: it already has."""
    with running_ingestor(store, broker, follow=True) as ing:
        if ing is None:
            return IngestStats()
        deadline = time.monotonic() + max_s
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            st = ing.stats()
            seen = st.messages + st.queued
            if seen != last:
                last, quiet_since = seen, time.monotonic()
            elif time.monotonic() - quiet_since >= idle_s:
                break
            time.sleep(0.05)
    return ing.stats()


@dataclass
class Submitted:
    device: str
    model: Path
    cmd_id: str


def select_devices(store: Store, devices: Iterable[str], tags: Iterable[str]) -> list[str]:
    """Devices named explicitly (they must have connected once, or their session cannot queue
    a command) plus every device carrying one of the tags."""
    known = {d.device: d for d in store.devices()}
    chosen: list[str] = []
    for dev in devices:
        if dev not in known:
            raise UserError(
                f"device {dev!r} has never connected to this broker; see `halo-coord devices`"
            )
        chosen.append(dev)
    for tag in tags:
        tagged = [d for d, rec in known.items() if tag in ((rec.caps or {}).get("tags") or [])]
        if not tagged:
            raise UserError(f"no device has the tag {tag!r}; see `halo-coord devices`")
        chosen.extend(tagged)
    if not chosen:
        raise UserError("name at least one --device ID or --tag TAG")
    return list(dict.fromkeys(chosen))


def submit(
    store: Store,
    controller: Controller,
    devices: list[str],
    models: list[Path],
    spec_for: Callable[[str, str], BenchSpec],
) -> list[Submitted]:
    """One bench command per device and model; spec_for(sha256, name) gives the settings."""
    out = []
    for model in models:
        sha = store.put_blob_file(model)
        for dev in devices:
            command = bench_command(spec_for(sha, model.name))
            controller.send(dev, command)
            out.append(Submitted(dev, model, command.cmd_id))
    return out


def job_states(store: Store, cmd_ids: list[str]) -> dict[str, JobRecord]:
    return {j.cmd_id: j for j in store.jobs(cmd_ids=cmd_ids)}


# A failed job may or may not have a result (a run that failed has one; a model that could not
# be fetched has none), and its result and final ack travel separately: how long after the
# failed ack a missing result stops being waited for.
FAILED_RESULT_GRACE_S = 5.0


def has_result(store: Store, job: JobRecord) -> bool:
    """Whether the job's result is stored (adaptations have their own table)."""
    if job.kind == "adapt":
        return bool(store.adapt_results(job=job.cmd_id))
    return store.count_results(job=job.cmd_id) > 0


def settled(store: Store, job: JobRecord, until: tuple[str, ...], now: float | None = None) -> bool:
    """Whether the job reached one of `until`; a done job counts only once its result is
    stored too, a failed one once its result is stored or FAILED_RESULT_GRACE_S passed."""
    if job.state not in until:
        return False
    if job.state == "done":
        return has_result(store, job)
    if job.state == "failed":
        now = time.time() if now is None else now
        return now - job.updated_at > FAILED_RESULT_GRACE_S or has_result(store, job)
    return True


def wait_for(
    store: Store,
    broker: BrokerTarget,
    cmd_ids: list[str],
    until: tuple[str, ...],
    timeout_s: float,
    on_progress: Callable[[int, dict[str, JobRecord]], None] | None = None,
) -> dict[str, JobRecord]:
    """Ingest (or let the halo-coord on this host that already does) until every job is
    settled in one of `until` or timeout_s passes."""
    with ingest_session(broker, INGEST_NAME, store.location, follow=True) as held:
        ing = ingestor(store, broker) if held else None
        if ing is not None:
            ing.start()
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                jobs = job_states(store, cmd_ids)
                done = sum(settled(store, j, until) for j in jobs.values())
                if on_progress is not None:
                    on_progress(done, jobs)
                if done == len(cmd_ids) or time.monotonic() > deadline:
                    return jobs
                time.sleep(0.2)
        finally:
            if ing is not None:
                ing.stop()
