"""`halo-coord serve`: the long-running coordinator (see packaging/halo-coord.service).

One process ingests every result, answers model-blob requests, drives the campaigns left
unfinished in the store, starts scheduled campaigns when their cron fires (UTC; one catch-up
run after downtime, never one per missed time), and logs device health changes.

``serve --ingest-only --worker NAME`` only ingests: run several side by side (on one host or
several, on a PostgreSQL store for several hosts) and they split the result stream through the
shared subscription (docs/scaling.md). Each worker's name is its persistent MQTT session
(client id ``halo-ingest-NAME``): the broker keeps queueing that worker's share while it is
down, so a worker must come back under the same name, and two live workers need two names (a
second one on the same host is refused). ``--retire`` ends a worker name for good: it stores
what the broker still holds for that session, then has the broker delete the session.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from coordinator import farm
from coordinator.campaign import schedule, session
from coordinator.campaign import state as st
from coordinator.campaign.spec import Campaign, load
from coordinator.connect import BrokerTarget, resolve_broker
from coordinator.errors import UserError
from coordinator.farm_cli import broker_option, store_option
from coordinator.ingest import IngestStats
from coordinator.registry import health
from coordinator.session_lock import ingest_session
from coordinator.store import Store

log = logging.getLogger("halo-coord.serve")
HEALTH_EVERY_S = 10.0
RETIRE_CONNECT_S = 60.0  # --retire gives up (one line, exit 2) if the broker stays away
RETIRE_QUIET_S = 3.0  # nothing new for this long after unsubscribing: the session is drained
_WORKER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class Server:
    """What `serve` does besides driving campaigns, called once per loop."""

    store: Store
    files: dict[str, Path]  # campaign name -> file
    health: dict[str, str] = field(default_factory=dict)
    last_health: float = 0.0

    def tick(self, now: float) -> list[str]:
        started = [cid for cid in map(self._fire, self._due(now)) if cid]
        if now - self.last_health >= HEALTH_EVERY_S:
            self.check_health(now)
            self.last_health = now
        return started

    def _due(self, now: float) -> list[tuple[str, float]]:
        out = []
        for sched in schedule.schedules(self.store):
            if sched.name in self.files:
                fire = schedule.due(sched.cron, sched.last_fire, now)
                if fire is not None:
                    out.append((sched.name, fire))
        return out

    def _fire(self, due: tuple[str, float]) -> str | None:
        name, fire = due
        already = self.store.query(
            "SELECT campaign_id FROM campaigns WHERE name = ? AND scheduled_for = ?", (name, fire)
        )
        cid = None
        if already:  # started just before a crash, before the fire was marked
            log.info("campaign %s for %s already exists: %s", name, _utc(fire), already[0][0])
        elif st.unfinished(self.store, name):
            log.warning("skipping the %s run of %s: the previous run is unfinished",
                        _utc(fire), name)  # fmt: skip
        else:
            try:
                cid = session.start(self.store, self.files[name], time.time(), fire).campaign_id
                log.info("started %s (scheduled for %s)", cid, _utc(fire))
            except UserError as exc:
                log.error("cannot start the %s run of %s: %s", _utc(fire), name, exc)
        schedule.mark_fired(self.store, name, fire)
        return cid

    def check_health(self, now: float) -> None:
        for rec in self.store.devices():
            state = health(rec.status, rec.status_at, rec.hb_at, now)
            if self.health.get(rec.device) != state:
                if rec.device in self.health or state != "online":
                    log.warning("device %s: %s -> %s", rec.device,
                                self.health.get(rec.device, "unseen"), state)  # fmt: skip
                else:
                    log.info("device %s: online", rec.device)
                self.health[rec.device] = state


def _campaigns(files: tuple[Path, ...]) -> dict[str, tuple[Path, Campaign]]:
    out: dict[str, tuple[Path, Campaign]] = {}
    for file in files:
        campaign = load(file)
        if not campaign.cron:
            raise UserError(f"{file} has no [schedule] cron; run it once with "
                            f"`halo-coord campaign run {file}`")  # fmt: skip
        if campaign.name in out:
            raise UserError(f"{file} and {out[campaign.name][0]} both name campaign "
                            f"{campaign.name!r}")  # fmt: skip
        out[campaign.name] = (file.resolve(), campaign)
    return out


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def _stats_line(stats: IngestStats) -> str:
    return (
        f"{stats.messages} messages committed: {stats.results_inserted} results stored "
        f"({stats.results_duplicate} duplicates), {stats.acks} acks, {stats.hb} heartbeats, "
        f"{stats.rejected} rejected; {stats.queued} waiting; {stats.errors} errors"
    )


def run_ingest_only(store: Store, broker: BrokerTarget, worker: str) -> IngestStats:
    """Ingest until SIGTERM/SIGINT, then commit and ack what arrived and return the counts."""
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    ingestor = farm.ingestor(store, broker, name=worker)
    ingestor.start()
    try:
        while not ingestor.wait_ready(HEALTH_EVERY_S) and not done.is_set():
            log.warning("waiting for the broker at %s (%s)", broker.url,
                        ingestor.stats().last_error or "no answer yet")  # fmt: skip
        if ingestor.wait_ready(0):
            log.info("ingest worker %s subscribed as %s on %s, store %s", worker,
                     ingestor.client_id, broker.url, store.location)  # fmt: skip
        while not done.wait(HEALTH_EVERY_S):
            log.info("%s", _stats_line(ingestor.stats()))
    finally:
        ingestor.stop()
    return ingestor.stats()


def retire_worker(store: Store, broker: BrokerTarget, worker: str) -> IngestStats:
    """Drain the worker's session into the store, then end it on the broker."""
    ingestor = farm.ingestor(store, broker, name=worker)
    ingestor.start()
    if not ingestor.wait_ready(RETIRE_CONNECT_S):
        error = ingestor.stats().last_error or "no answer"
        ingestor.stop()
        raise UserError(
            f"--retire: could not reach the broker at {broker.url} within "
            f"{RETIRE_CONNECT_S:.0f} s ({error}); nothing changed"
        )
    try:
        return ingestor.retire(quiet_s=RETIRE_QUIET_S)
    except TimeoutError as exc:
        raise UserError(f"--retire: {exc}") from None


@click.command()
@click.option(
    "--campaign",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A campaign file with a [schedule] cron (repeatable).",
)
@click.option(
    "--ingest-only",
    is_flag=True,
    help="Only ingest, as one of several workers sharing the result stream (needs --worker).",
)
@click.option(
    "--worker",
    metavar="NAME",
    help="This ingest worker's name, distinct per worker and kept across restarts.",
)
@click.option(
    "--retire",
    is_flag=True,
    help="With --ingest-only --worker NAME: store what the broker still holds for that "
    "worker, then end its session for good, so the others get the whole stream. Stop the "
    "worker first.",
)
@broker_option
@store_option
def serve(
    files: tuple[Path, ...],
    ingest_only: bool,
    worker: str | None,
    retire: bool,
    broker_url: str | None,
    store_path: Path | str | None,
) -> None:
    """Run the coordinator as a service: ingest results, serve models, resume unfinished
    campaigns, start scheduled ones when their cron fires (UTC), log device health.

    With --ingest-only it only ingests; run one per --worker name to scale out (several
    workers share the results through the broker's shared subscription).

    \b
    Example:
      halo-coord serve --campaign nb201-weekly.toml --campaign fbnet-nightly.toml
      halo-coord serve --ingest-only --worker ingest-2 --store postgresql://halo@db/halofarm
      halo-coord serve --ingest-only --worker ingest-3 --retire   # ingest-3 leaves the group
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if ingest_only:
        if files:
            raise UserError("--ingest-only does not run campaigns; drop --campaign")
        if worker is None:
            raise UserError(
                "--ingest-only needs --worker NAME: its persistent session, one per worker"
            )
        if not _WORKER_RE.fullmatch(worker):
            raise UserError(f"--worker must be 1-64 letters, digits, '_', '.', '-', got {worker!r}")
        broker = resolve_broker(broker_url)
        with Store(store_path) as store, ingest_session(broker, worker, store.location):
            if retire:
                stats = retire_worker(store, broker, worker)
                log.info("worker %s retired, its session ended: %s", worker, _stats_line(stats))
            else:
                stats = run_ingest_only(store, broker, worker)
                log.info("stopped: %s", _stats_line(stats))
        click.echo(json.dumps(stats.to_dict()))
        return
    if retire:
        raise UserError("--retire ends an ingest worker: use it with --ingest-only --worker NAME")
    if worker is not None:
        raise UserError("--worker names an --ingest-only worker; `serve` ingests as 'main'")
    broker = resolve_broker(broker_url)
    campaigns = _campaigns(files)
    signal.signal(signal.SIGTERM, _terminate)
    with Store(store_path) as store:
        now = time.time()
        for name, (file, campaign) in campaigns.items():
            sched = schedule.register(store, name, campaign.cron, file, now)
            log.info("schedule %s: %s (UTC), next run %s", name, sched.cron,
                     _utc(schedule.next_fire(sched.cron, max(now, sched.last_fire))))  # fmt: skip
        resumed = []
        for record in st.unfinished(store):
            try:
                st.claim(store, record.campaign_id, st.driver_name(), now)
            except UserError as exc:
                log.warning("not resuming: %s", exc)
                continue
            resumed.append(record.campaign_id)
            log.info("resuming %s", record.campaign_id)
        server = Server(store, {n: f for n, (f, _) in campaigns.items()})
        done: set[str] = set()

        def on_progress(cid: str, rows) -> None:
            if cid in done:
                return
            record = st.get(store, cid)
            if record is not None and record.state != st.RUNNING:
                done.add(cid)
                log.info("campaign %s %s%s", cid, record.state,
                         f" ({record.reason})" if record.reason else "")  # fmt: skip

        log.info("serving on %s, store %s", broker.url, store.location)
        try:
            session.drive(store, broker, resumed, on_progress, 10.0, tick=server.tick)
        except KeyboardInterrupt:
            log.info("stopping; unfinished campaigns resume on the next start")
