"""Campaign state in the store: the campaign, its whole plan (written once, when it starts) and
how far each job got. Everything the runner decides is written here before it acts, so a
coordinator killed at any moment resumes from the store alone.

A job's command id is derived from (campaign, job key, attempt): sending an attempt again after
a crash reuses its cmd_id, which the device deduplicates, so nothing runs twice by accident.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import psutil

from coordinator.campaign.plan import PlannedJob
from coordinator.campaign.spec import Campaign, parse
from coordinator.errors import UserError
from coordinator.store import Store

RUNNING, DONE, CANCELLED = "running", "done", "cancelled"
PENDING, SENT, FAILED = "pending", "sent", "failed"
JOB_FINAL = (DONE, FAILED, CANCELLED)
# A driver that has not touched its campaign for this long is presumed dead.
LEASE_S = 60.0

_CAMPAIGN_COLUMNS = (
    "campaign_id, name, source, spec_text, spec_sha256, state, reason, scheduled_for, driver, "
    "driver_seen_at, created_at, updated_at, finished_at"
)
_JOB_COLUMNS = (
    "campaign_id, key, device, position, kind, model_sha256, threads, xnnpack, repetition, "
    "state, attempt, cmd_id, not_before, result_id, reason, sent_at, finished_at, updated_at"
)


@dataclass
class CampaignRecord:
    campaign_id: str
    name: str
    source: str
    spec_text: str
    spec_sha256: str
    state: str
    reason: str | None
    scheduled_for: float | None
    driver: str | None
    driver_seen_at: float | None
    created_at: float
    updated_at: float
    finished_at: float | None

    def campaign(self) -> Campaign:
        """The campaign as it was started (its file may have changed since)."""
        return parse(self.spec_text, self.source, Path(self.source).parent)


@dataclass
class CampaignJob:
    campaign_id: str
    key: str
    device: str
    position: int
    kind: str
    model_sha256: str
    threads: int
    xnnpack: bool
    repetition: int
    state: str
    attempt: int
    cmd_id: str | None
    not_before: float | None
    result_id: str | None
    reason: str | None
    sent_at: float | None
    finished_at: float | None
    updated_at: float


def spec_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cmd_id_for(campaign_id: str, key: str, attempt: int) -> str:
    return hashlib.sha256(f"{campaign_id}|{key}|{attempt}".encode()).hexdigest()[:32]


def driver_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def new_campaign_id(store: Store, name: str, at: float) -> str:
    stamp = dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = f"{name}-{stamp}"
    taken = {r[0] for r in store.query(
        "SELECT campaign_id FROM campaigns WHERE campaign_id >= ? AND campaign_id < ?",
        (base, base + "~"),
    )}  # fmt: skip
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def create(
    store: Store,
    campaign: Campaign,
    spec_text: str,
    jobs: list[PlannedJob],
    now: float,
    scheduled_for: float | None = None,
) -> CampaignRecord:
    """Write the campaign and its whole plan in one transaction."""
    with store.transaction():
        cid = new_campaign_id(store, campaign.name, now)
        store.execute(
            f"INSERT INTO campaigns ({_CAMPAIGN_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, NULL, ?, NULL, NULL, ?, ?, NULL)",
            (cid, campaign.name, str(Path(campaign.source).resolve()), spec_text,
             spec_digest(spec_text), RUNNING, scheduled_for, now, now),
        )  # fmt: skip
        store.executemany(
            f"INSERT INTO campaign_jobs ({_JOB_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, NULL, NULL, NULL, NULL, NULL, ?)",
            [
                (cid, j.key, j.device, j.position, j.kind, j.model.sha256, j.config.threads,
                 int(j.config.xnnpack), j.repetition, PENDING, now)
                for j in jobs
            ],
        )  # fmt: skip
    record = get(store, cid)
    assert record is not None
    return record


def _campaigns(store: Store, where: str = "", args: tuple = ()) -> list[CampaignRecord]:
    rows = store.query(
        f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns{where} ORDER BY created_at, campaign_id", args
    )
    return [CampaignRecord(*r) for r in rows]


def get(store: Store, campaign_id: str) -> CampaignRecord | None:
    found = _campaigns(store, " WHERE campaign_id = ?", (campaign_id,))
    return found[0] if found else None


def find(store: Store, id_or_prefix: str | None) -> CampaignRecord:
    """A campaign by id or unique id prefix; None: the most recent one."""
    if id_or_prefix is None:
        every = _campaigns(store)
        if not every:
            raise UserError("no campaign in this store yet; start one with `campaign run FILE`")
        return every[-1]
    exact = get(store, id_or_prefix)
    if exact is not None:
        return exact
    found = _campaigns(
        store, " WHERE campaign_id >= ? AND campaign_id < ?", (id_or_prefix, id_or_prefix + "~")
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"no campaign {id_or_prefix!r}; see `halo-coord campaign list`")
    ids = ", ".join(c.campaign_id for c in found[:5])
    raise UserError(f"{id_or_prefix!r} matches {len(found)} campaigns ({ids}); give more of it")


def all_campaigns(store: Store) -> list[CampaignRecord]:
    return _campaigns(store)


def unfinished(store: Store, name: str | None = None) -> list[CampaignRecord]:
    if name is None:
        return _campaigns(store, " WHERE state = ?", (RUNNING,))
    return _campaigns(store, " WHERE state = ? AND name = ?", (RUNNING, name))


def jobs(
    store: Store, campaign_id: str, states: tuple[str, ...] | None = None
) -> list[CampaignJob]:
    where, args = " WHERE campaign_id = ?", [campaign_id]
    if states:
        where += f" AND state IN ({', '.join('?' * len(states))})"
        args += list(states)
    rows = store.query(
        f"SELECT {_JOB_COLUMNS} FROM campaign_jobs{where} ORDER BY device, position", args
    )
    out = []
    for r in rows:
        job = CampaignJob(*r)
        job.xnnpack = bool(job.xnnpack)
        out.append(job)
    return out


def devices_in_flight(store: Store, campaign_id: str) -> set[str]:
    return {r[0] for r in store.query(
        "SELECT DISTINCT device FROM campaign_jobs WHERE campaign_id = ? AND state = ?",
        (campaign_id, SENT),
    )}  # fmt: skip


def pending_devices(store: Store, campaign_id: str) -> dict[str, float]:
    """device -> the earliest time one of its pending jobs may start."""
    return dict(store.query(
        "SELECT device, min(coalesce(not_before, 0)) FROM campaign_jobs "
        "WHERE campaign_id = ? AND state = ? GROUP BY device",
        (campaign_id, PENDING),
    ))  # fmt: skip


def next_ready(store: Store, campaign_id: str, now: float) -> dict[str, CampaignJob]:
    """Each device's first pending job (by planned position) that may start at `now`."""
    rows = store.query(
        f"SELECT {_JOB_COLUMNS} FROM (SELECT {_JOB_COLUMNS}, row_number() OVER "
        "(PARTITION BY device ORDER BY position) AS n FROM campaign_jobs WHERE campaign_id = ? "
        "AND state = ? AND coalesce(not_before, 0) <= ?) AS ready WHERE n = 1",
        (campaign_id, PENDING, now),
    )
    out = {}
    for r in rows:
        job = CampaignJob(*r)
        job.xnnpack = bool(job.xnnpack)
        out[job.device] = job
    return out


def counts(store: Store, campaign_id: str) -> dict[str, Counter]:
    """device -> Counter of job states (canaries under "canary:<state>")."""
    out: dict[str, Counter] = defaultdict(Counter)
    for device, kind, state, n in store.query(
        "SELECT device, kind, state, count(*) FROM campaign_jobs WHERE campaign_id = ? "
        "GROUP BY device, kind, state",
        (campaign_id,),
    ):
        out[device][state if kind == "measure" else f"{kind}:{state}"] += n
    return dict(out)


def _update_job(store: Store, job: CampaignJob, now: float, **changes) -> CampaignJob:
    sets = ", ".join(f"{k} = ?" for k in changes)
    store.execute(
        f"UPDATE campaign_jobs SET {sets}, updated_at = ? WHERE campaign_id = ? AND key = ?",
        (*changes.values(), now, job.campaign_id, job.key),
    )
    for k, v in changes.items():
        setattr(job, k, v)
    job.updated_at = now
    return job


def mark_sent(store: Store, job: CampaignJob, now: float) -> CampaignJob:
    """The next attempt of job, recorded before its command is published."""
    attempt = job.attempt + 1
    cmd_id = cmd_id_for(job.campaign_id, job.key, attempt)
    with store.transaction():
        store.execute(
            "INSERT INTO campaign_attempts (cmd_id, campaign_id, key, attempt, sent_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (cmd_id) DO NOTHING",
            (cmd_id, job.campaign_id, job.key, attempt, now),
        )
        return _update_job(
            store, job, now, state=SENT, attempt=attempt, cmd_id=cmd_id, sent_at=now,
            not_before=None,
        )  # fmt: skip


def mark_done(store: Store, job: CampaignJob, result_id: str, now: float) -> CampaignJob:
    return _update_job(
        store, job, now, state=DONE, result_id=result_id, reason=None, finished_at=now
    )


def mark_retry(
    store: Store, job: CampaignJob, reason: str, not_before: float, now: float
) -> CampaignJob:
    return _update_job(
        store, job, now, state=PENDING, reason=reason, not_before=not_before, finished_at=now
    )


def mark_failed(store: Store, job: CampaignJob, reason: str, now: float) -> CampaignJob:
    return _update_job(store, job, now, state=FAILED, reason=reason, finished_at=now)


def finish(store: Store, campaign_id: str, now: float) -> None:
    failed = store.query(
        "SELECT count(*) FROM campaign_jobs WHERE campaign_id = ? AND state = ?",
        (campaign_id, FAILED),
    )[0][0]
    store.execute(
        "UPDATE campaigns SET state = ?, reason = ?, finished_at = ?, updated_at = ?, "
        "driver = NULL WHERE campaign_id = ? AND state = ?",
        (DONE, f"{failed} jobs failed" if failed else None, now, now, campaign_id, RUNNING),
    )


def cancel(store: Store, campaign_id: str, now: float) -> list[CampaignJob]:
    """Cancel the campaign and its unfinished jobs; returns the jobs that were on a device."""
    with store.transaction():
        on_device = jobs(store, campaign_id, (SENT,))
        store.execute(
            "UPDATE campaign_jobs SET state = ?, reason = 'campaign cancelled', finished_at = ?,"
            " updated_at = ? WHERE campaign_id = ? AND state IN (?, ?)",
            (CANCELLED, now, now, campaign_id, PENDING, SENT),
        )
        store.execute(
            "UPDATE campaigns SET state = ?, reason = 'cancelled by the user', finished_at = ?, "
            "updated_at = ?, driver = NULL WHERE campaign_id = ?",
            (CANCELLED, now, now, campaign_id),
        )
    return on_device


def _driver_alive(driver: str) -> bool:
    host, _, pid = driver.rpartition(":")
    if host != socket.gethostname():
        return True  # cannot tell; the lease time decides
    try:
        return psutil.pid_exists(int(pid)) and int(pid) != os.getpid()
    except ValueError:
        return False


def claim(store: Store, campaign_id: str, driver: str, now: float) -> None:
    """Become the one process driving the campaign, or say which process already is."""
    with store.transaction():
        record = get(store, campaign_id)
        if record is None:
            raise UserError(f"no campaign {campaign_id!r}")
        held = record.driver
        if (
            held
            and held != driver
            and (record.driver_seen_at or 0) > now - LEASE_S
            and _driver_alive(held)
        ):
            raise UserError(
                f"campaign {campaign_id} is being run by {held} (seen "
                f"{now - (record.driver_seen_at or now):.0f} s ago); stop that process first"
            )
        store.execute(
            "UPDATE campaigns SET driver = ?, driver_seen_at = ? WHERE campaign_id = ?",
            (driver, now, campaign_id),
        )


def touch(store: Store, campaign_id: str, driver: str, now: float) -> None:
    store.execute(
        "UPDATE campaigns SET driver_seen_at = ? WHERE campaign_id = ? AND driver = ?",
        (now, campaign_id, driver),
    )


def release(store: Store, campaign_id: str, driver: str) -> None:
    store.execute(
        "UPDATE campaigns SET driver = NULL WHERE campaign_id = ? AND driver = ?",
        (campaign_id, driver),
    )
