"""`halo-coord serve`: the long-running coordinator (see packaging/halo-coord.service).

One process ingests every result, answers model-blob requests, drives the campaigns left
unfinished in the store, starts scheduled campaigns when their cron fires (UTC; one catch-up
run after downtime, never one per missed time), and logs device health changes.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from coordinator.campaign import schedule, session
from coordinator.campaign import state as st
from coordinator.campaign.spec import Campaign, load
from coordinator.connect import resolve_broker
from coordinator.errors import UserError
from coordinator.farm_cli import broker_option, store_option
from coordinator.registry import health
from coordinator.store import Store

log = logging.getLogger("halo-coord.serve")
HEALTH_EVERY_S = 10.0


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


@click.command()
@click.option(
    "--campaign",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A campaign file with a [schedule] cron (repeatable).",
)
@broker_option
@store_option
def serve(files: tuple[Path, ...], broker_url: str | None, store_path: Path | None) -> None:
    """Run the coordinator as a service: ingest results, serve models, resume unfinished
    campaigns, start scheduled ones when their cron fires (UTC), log device health.

    \b
    Example:
      halo-coord serve --campaign nb201-weekly.toml --campaign fbnet-nightly.toml
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
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

        log.info("serving on %s, store %s", broker.url, store.path)
        try:
            session.drive(store, broker, resumed, on_progress, 10.0, tick=server.tick)
        except KeyboardInterrupt:
            log.info("stopping; unfinished campaigns resume on the next start")
