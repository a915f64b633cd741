"""Starting, resuming and driving a campaign against a broker: the I/O shell around the plan,
the state and the runner."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from coordinator import farm
from coordinator.campaign import models as campaign_models
from coordinator.campaign import state as st
from coordinator.campaign.plan import configs, plan, with_canaries
from coordinator.campaign.runner import DeviceProgress, Runner, bench_spec
from coordinator.campaign.spec import Campaign, load
from coordinator.connect import BrokerTarget
from coordinator.dispatch import Controller
from coordinator.errors import UserError
from coordinator.registry import ONLINE, health
from coordinator.store import Store

POLL_S = 0.2
TOUCH_S = 5.0


def select_devices(store: Store, campaign: Campaign, now: float) -> list[str]:
    """The campaign's devices: named ones (which must have connected once, or no command can
    be queued for them), tagged ones, and with all_online every device online now."""
    d = campaign.devices
    chosen: list[str] = []
    if d.ids or d.tags:
        try:
            chosen = farm.select_devices(store, d.ids, d.tags)
        except UserError as exc:
            raise UserError(f"{campaign.source}: devices: {exc}") from None
    if d.all_online:
        chosen += [
            r.device
            for r in store.devices()
            if health(r.status, r.status_at, r.hb_at, now) == ONLINE
        ]
    chosen = list(dict.fromkeys(chosen))
    if not chosen:
        raise UserError(
            f"{campaign.source}: devices: no device is online; see `halo-coord devices`"
        )
    return chosen


def start(
    store: Store, file: Path, now: float, scheduled_for: float | None = None
) -> st.CampaignRecord:
    """Plan the campaign in FILE and write it to the store (models generated and registered).

    Refuses while an earlier run of the same campaign is unfinished: two runs interleaving on
    one board would measure each other."""
    campaign = load(file)
    text = file.read_text(encoding="utf-8")
    open_runs = st.unfinished(store, campaign.name)
    if open_runs:
        cid = open_runs[-1].campaign_id
        raise UserError(
            f"campaign {campaign.name} has an unfinished run {cid}: resume it with "
            f"`halo-coord campaign run {file} --resume` or cancel it with "
            f"`halo-coord campaign cancel {cid}`"
        )
    devices = select_devices(store, campaign, now)
    refs = campaign_models.resolve(campaign, store)
    canaries = campaign_models.canaries(campaign, store)
    jobs = with_canaries(
        plan(campaign, devices, refs), canaries, configs(campaign)[0], campaign.canary.every
    )
    first = jobs[0]  # a bad bench setting fails here, before anything runs
    bench_spec(campaign, first.model.sha256, first.model.name, first.config.threads,
               first.config.xnnpack)  # fmt: skip
    return st.create(store, campaign, text, jobs, now, scheduled_for)


def resumable(store: Store, file: Path) -> st.CampaignRecord:
    """The unfinished run of the campaign in FILE, which must not have changed since."""
    campaign = load(file)
    open_runs = st.unfinished(store, campaign.name)
    if not open_runs:
        raise UserError(
            f"campaign {campaign.name} has no unfinished run to resume; start one with "
            f"`halo-coord campaign run {file}`"
        )
    record = open_runs[-1]
    if record.spec_sha256 != st.spec_digest(file.read_text(encoding="utf-8")):
        raise UserError(
            f"{file} changed since run {record.campaign_id} started; restore it, or cancel "
            f"that run (`halo-coord campaign cancel {record.campaign_id}`) and start anew"
        )
    return record


def drive(
    store: Store,
    broker: BrokerTarget,
    campaign_ids: list[str],
    on_progress: Callable[[str, list[DeviceProgress]], None] | None = None,
    progress_every_s: float = 1.0,
    tick: Callable[[float], list[str]] | None = None,
) -> None:
    """Run campaigns to their end (or until interrupted) with one ingest worker and one
    controller. With `tick`, keep serving: tick(now) is called every loop and returns the ids
    of campaigns it started, which are driven too (this is `serve`)."""
    driver = st.driver_name()
    for cid in campaign_ids:
        st.claim(store, cid, driver, time.time())
    claimed = list(campaign_ids)
    # A stored result ends the poll's wait: its device gets the next job at once.
    arrived = threading.Event()
    try:
        with (
            farm.running_ingestor(store, broker, on_commit=lambda _: arrived.set()),
            Controller(store, broker) as controller,
        ):
            runners: dict[str, Runner] = {}

            def add(cid: str) -> None:
                runners[cid] = Runner(store, cid, controller.send)
                runners[cid].resume()

            for cid in campaign_ids:
                add(cid)
            last_touch = last_progress = 0.0
            while runners or tick is not None:
                now = time.time()
                if tick is not None:
                    for cid in tick(now):
                        st.claim(store, cid, driver, now)
                        claimed.append(cid)
                        add(cid)
                for cid in [c for c, r in runners.items() if r.step()]:
                    if on_progress is not None:
                        on_progress(cid, runners[cid].progress())
                    del runners[cid]
                if now - last_touch >= TOUCH_S:
                    for cid in runners:
                        st.touch(store, cid, driver, now)
                    last_touch = now
                if on_progress is not None and now - last_progress >= progress_every_s:
                    for cid, runner in runners.items():
                        on_progress(cid, runner.progress())
                    last_progress = now
                arrived.wait(POLL_S)
                arrived.clear()
    finally:
        for cid in claimed:
            st.release(store, cid, driver)
