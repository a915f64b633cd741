"""Driving a campaign: one job at a time per device, in the planned order, with the thermal
guard between jobs, retries with backoff, and progress with an ETA.

The runner is a step function over the store: each ``step()`` reads the campaign's open jobs,
settles the ones whose outcome has arrived (the ingest worker stores results and acks), and
sends each idle device its next job. All decisions are written to the store before the
command is published, so killing the process at any moment loses nothing: ``resume()`` re-sends
the commands that may not have left, under their original command ids.

One job in flight per device keeps the thermal guard meaningful (it looks at the board between
two measurements) and lets a device take retries without reordering what is queued on it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from coordinator.campaign import guard
from coordinator.campaign import state as st
from coordinator.campaign.canary import drift
from coordinator.campaign.spec import Campaign
from coordinator.dispatch import DEFAULT_COMMAND_TTL_S
from coordinator.errors import UserError
from coordinator.registry import health
from coordinator.store import Store
from protocol.bodies import BenchSpec, Command
from protocol.errors import ProtocolError

# A job the device reported failed, whose result has not arrived after this long, is settled
# from the ack alone (the result may have been lost with a device's outbox).
FAILED_GRACE_S = 60.0
# A job whose result has not arrived and about which nothing was heard for this long has its
# command published again (same cmd_id): the device answers a command it knows with its state,
# and one it finished by sending the result again. This recovers a command, an ack or a
# result that a broker lost (killed before it saved them).
RESEND_S = 20.0
# Cycle times averaged for the ETA.
ETA_WINDOW = 20


def bench_spec(
    campaign: Campaign, sha256: str, name: str, threads: int, xnnpack: bool
) -> BenchSpec:
    """The campaign's benchmark settings for one model and configuration, validated."""
    b = campaign.bench
    energy = {"power": "auto", "idle_seconds": b.idle_seconds, "energy_seconds": b.energy_seconds}
    settings = {
        **b.timing,
        **({k: v for k, v in energy.items() if v is not None} if b.energy else {}),
    }
    try:
        spec = BenchSpec(
            model_sha256=sha256,
            model_name=name[:128],
            threads=threads,
            xnnpack=xnnpack,
            **settings,
        )
        return BenchSpec.from_dict(spec.to_dict())
    except ProtocolError as exc:
        raise UserError(
            f"{campaign.source}: bench.{exc.field.split('.')[-1]}: {exc.reason}"
        ) from None


@dataclass
class DeviceProgress:
    device: str
    health: str
    total: int
    done: int
    failed: int
    open: int
    canaries_done: int
    canaries_total: int
    current: str | None  # model name of the job on the device
    attempt: int
    waiting: str  # why the next job has not started, if it has not
    eta_s: float | None
    drift: float | None
    drift_flagged: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Runner:
    store: Store
    campaign_id: str
    send: Callable[[str, Command], None]
    clock: Callable[[], float] = time.time
    ttl_s: float = DEFAULT_COMMAND_TTL_S
    waiting: dict[str, str] = field(default_factory=dict)
    resent: dict[str, float] = field(default_factory=dict)  # cmd_id -> last re-publication

    def __post_init__(self) -> None:
        record = st.get(self.store, self.campaign_id)
        if record is None:
            raise UserError(f"no campaign {self.campaign_id!r}")
        self.campaign = record.campaign()
        self.names = dict(
            self.store.query(
                "SELECT sha256, name FROM models WHERE sha256 IN (SELECT DISTINCT "
                "model_sha256 FROM campaign_jobs WHERE campaign_id = ?)",
                (self.campaign_id,),
            )
        )

    # -- commands ----------------------------------------------------------------------------

    def command(self, job: st.CampaignJob) -> Command:
        """The job's current attempt as a command; the same every time it is rebuilt."""
        assert job.cmd_id is not None and job.sent_at is not None
        name = self.names.get(job.model_sha256, job.model_sha256)
        spec = bench_spec(self.campaign, job.model_sha256, name, job.threads, job.xnnpack)
        return Command(
            cmd_id=job.cmd_id, kind="bench", expires_at=job.sent_at + self.ttl_s, bench=spec
        )

    def resume(self) -> int:
        """Publish again every in-flight command the device has not acknowledged (it may have
        died with the previous coordinator). Returns how many."""
        n = 0
        for job in st.jobs(self.store, self.campaign_id, (st.SENT,)):
            known = self.store.jobs(cmd_ids=[job.cmd_id])
            if not known or known[0].state == "dispatched":
                self.send(job.device, self.command(job))
                n += 1
        return n

    # -- one step ------------------------------------------------------------------------------

    def step(self) -> bool:
        """Settle what has arrived and start what may start; True once the campaign is over.

        Reads only the jobs in flight and each device's next job, so a step costs the same
        with a hundred jobs left or a hundred thousand."""
        now = self.clock()
        record = st.get(self.store, self.campaign_id)
        if record is None or record.state != st.RUNNING:
            return True
        for job in st.jobs(self.store, self.campaign_id, (st.SENT,)):
            self._settle(job, now)
        busy = st.devices_in_flight(self.store, self.campaign_id)
        pending = st.pending_devices(self.store, self.campaign_id)  # device -> soonest start
        if not busy and not pending:
            st.finish(self.store, self.campaign_id, now)
            return True
        ready = st.next_ready(self.store, self.campaign_id, now)
        hbs = {d.device: (d.last_hb, d.hb_at) for d in self.store.devices()}
        for device, soonest in pending.items():
            if device in busy:
                self.waiting.pop(device, None)
                continue
            job = ready.get(device)
            if job is None:
                self.waiting[device] = f"retry backoff {soonest - now:.0f} s"
                continue
            hb, hb_at = hbs.get(device, (None, None))
            gate = guard.thermal_gate(
                self.campaign.thermal, now, self._last_finished(device), hb, hb_at
            )
            if not gate.ok:
                self.waiting[device] = gate.reason
                continue
            self.waiting.pop(device, None)
            job = st.mark_sent(self.store, job, now)
            self.send(device, self.command(job))
        return False

    def _last_finished(self, device: str) -> float | None:
        return self.store.query(
            "SELECT max(finished_at) FROM campaign_jobs WHERE campaign_id = ? AND device = ?",
            (self.campaign_id, device),
        )[0][0]

    def _settle(self, job: st.CampaignJob, now: float) -> None:
        found = self.store.query(
            "SELECT result_id, status, reason, json_extract(payload, '$.env_pre'), "
            "json_extract(payload, '$.env_post') FROM results WHERE cmd_id = ? "
            "ORDER BY received_at, rowid LIMIT 1",
            (job.cmd_id,),
        )
        if found:
            result_id, status, reason, pre, post = found[0]
            if status != "ok":
                self._retry_or_fail(job, f"failed on the device: {reason}", now)
            elif self.campaign.thermal.retry_throttled and guard.throttled(
                _loads(pre), _loads(post)
            ):
                self._retry_or_fail(job, "measured while the board was throttling", now)
            else:
                st.mark_done(self.store, job, result_id, now)
            return
        known = self.store.jobs(cmd_ids=[job.cmd_id])
        dispatched = known[0] if known else None
        state = dispatched.state if dispatched else "dispatched"
        if dispatched is not None and state in ("rejected", "cancelled"):
            self._retry_or_fail(job, f"{state} by the device: {dispatched.reason or '-'}", now)
        elif dispatched is not None and state == "failed":
            if now - dispatched.updated_at > FAILED_GRACE_S:
                self._retry_or_fail(job, f"failed on the device: {dispatched.reason or '-'}", now)
        elif state == "dispatched" and now > (job.sent_at or now) + self.ttl_s:
            self._retry_or_fail(job, "the device did not pick the command up in time", now)
        else:  # dispatched, accepted, running, or done while its result is missing
            heard = dispatched.updated_at if dispatched is not None else 0.0
            since = max(self.resent.get(job.cmd_id, 0.0), job.sent_at or now, heard)
            if now - since > RESEND_S:
                self.send(job.device, self.command(job))
                self.resent[job.cmd_id] = now

    def _retry_or_fail(self, job: st.CampaignJob, reason: str, now: float) -> None:
        rules = self.campaign.retries
        if guard.may_retry(rules, job.attempt):
            st.mark_retry(self.store, job, reason, now + guard.backoff_s(rules, job.attempt), now)
        else:
            st.mark_failed(self.store, job, f"{reason} (after {job.attempt} attempts)", now)

    # -- progress --------------------------------------------------------------------------------

    def progress(self) -> list[DeviceProgress]:
        return progress(self.store, self.campaign_id, self.clock(), self.waiting, self.names)


def _loads(text: str | None):
    return None if text is None else json.loads(text)


def progress(
    store: Store,
    campaign_id: str,
    now: float,
    waiting: dict[str, str] | None = None,
    names: dict[str, str] | None = None,
) -> list[DeviceProgress]:
    """Per-device progress from the store alone (so `campaign status` shows the same)."""
    waiting = waiting or {}
    names = names if names is not None else dict(store.query("SELECT sha256, name FROM models"))
    devices = {d.device: d for d in store.devices()}
    drifts = {d.device: d for d in drift(store, campaign_id)}
    by_device: dict[str, list[st.CampaignJob]] = {}
    for job in st.jobs(store, campaign_id):
        by_device.setdefault(job.device, []).append(job)
    out = []
    for device, jobs in sorted(by_device.items()):
        measure = [j for j in jobs if j.kind == "measure"]
        canaries = [j for j in jobs if j.kind != "measure"]
        open_jobs = [j for j in jobs if j.state in (st.PENDING, st.SENT)]
        current = next((j for j in jobs if j.state == st.SENT), None)
        finished = sorted(j.finished_at for j in jobs if j.state == st.DONE and j.finished_at)
        eta = None
        if open_jobs and len(finished) >= 2:
            recent = finished[-ETA_WINDOW - 1 :]
            cycle = (recent[-1] - recent[0]) / (len(recent) - 1)
            eta = cycle * len(open_jobs)
        rec = devices.get(device)
        dev_health = (
            health(rec.status, rec.status_at, rec.hb_at, now) if rec is not None else "unknown"
        )
        d = drifts.get(device)
        out.append(
            DeviceProgress(
                device=device,
                health=dev_health,
                total=len(measure),
                done=sum(j.state == st.DONE for j in measure),
                failed=sum(j.state == st.FAILED for j in measure),
                open=len(open_jobs),
                canaries_done=sum(j.state == st.DONE for j in canaries),
                canaries_total=len(canaries),
                current=None if current is None else names.get(current.model_sha256),
                attempt=0 if current is None else current.attempt,
                waiting=waiting.get(device, ""),
                eta_s=eta,
                drift=None if d is None else d.max_abs_drift,
                drift_flagged=bool(d and d.flagged),
            )
        )
    return out
