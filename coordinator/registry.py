"""Device health and the inventory row `halo-coord devices` shows (mqtt.md §6).

Health is a pure function of what the store holds (last status and when it arrived, when the
last heartbeat arrived) and the current time, so any coordinator process computes the same
answer and tests use synthetic timestamps:

* ``offline``: the last status is ``offline`` (the broker published the device's will, or the
  agent said goodbye) and no heartbeat arrived after it;
* ``online``: heard from (an ``online`` status or a heartbeat) less than
  ``STALE_FACTOR`` × the heartbeat interval ago;
* ``stale``: heard from longer ago than that, with no will received -- a network cut shows as
  stale first, and as offline only once the broker gives up on the keepalive (1.5 × keepalive);
* ``unknown``: neither a status nor a heartbeat was ever received (e.g. only caps).

Times are the coordinator's receive times, so device clocks do not matter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from coordinator.store import DeviceRecord

ONLINE = "online"
STALE = "stale"
OFFLINE = "offline"
UNKNOWN = "unknown"
STALE_FACTOR = 3.0
# The agent's default heartbeat period; pass the farm's own when it differs.
DEFAULT_HB_INTERVAL_S = 15.0
# A clock further off than this is worth a warning in `devices`: well above what a heartbeat's
# trip through a busy broker adds, and the HMAC check allows 120 s.
CLOCK_WARN_S = 10.0


def health(
    status: str | None,
    status_at: float | None,
    hb_at: float | None,
    now: float,
    hb_interval_s: float = DEFAULT_HB_INTERVAL_S,
) -> str:
    """One of ONLINE, STALE, OFFLINE, UNKNOWN for a device's stored status and heartbeat."""
    if hb_interval_s <= 0:
        raise ValueError(f"hb_interval_s must be > 0, got {hb_interval_s}")
    if status == OFFLINE and (hb_at is None or status_at is None or hb_at <= status_at):
        return OFFLINE
    heard = [t for t in (hb_at, status_at if status == ONLINE else None) if t is not None]
    if not heard:
        return UNKNOWN if status is None else STALE
    return ONLINE if now - max(heard) < STALE_FACTOR * hb_interval_s else STALE


@dataclass
class DeviceSummary:
    """One line of `halo-coord devices`: health, what the board is, how it is doing."""

    device: str
    health: str
    last_seen_s: float | None  # seconds since a status or heartbeat arrived
    agent_version: str | None
    board: str | None
    soc: str | None
    machine: str | None
    cores: int | None
    ram_gb: float | None
    runtime: str | None
    xnnpack: bool | None
    power_sources: list[str]
    tags: list[str]
    temp_max_c: float | None
    throttled: bool | None
    load1: float | None
    queue_depth: int | None
    outbox_depth: int | None
    running_job: str | None
    refusing_jobs: str | None  # why an online device turns new jobs away (None: it takes them)
    clock_offset_s: float | None  # its clock minus this coordinator's, at its last heartbeat

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(
    record: DeviceRecord, now: float, hb_interval_s: float = DEFAULT_HB_INTERVAL_S
) -> DeviceSummary:
    caps = record.caps or {}
    hb = record.last_hb or {}
    seen = [t for t in (record.status_at, record.hb_at) if t is not None]
    temps = hb.get("temps_c") or {}
    load = hb.get("load") or []
    runtime = caps.get("runtime")
    if runtime and caps.get("runtime_version"):
        runtime = f"{runtime} {caps['runtime_version']}"
    ram = caps.get("ram_bytes")
    return DeviceSummary(
        device=record.device,
        health=health(record.status, record.status_at, record.hb_at, now, hb_interval_s),
        last_seen_s=round(now - max(seen), 1) if seen else None,
        agent_version=hb.get("agent_version") or record.agent_version or caps.get("agent_version"),
        board=caps.get("board"),
        soc=caps.get("soc"),
        machine=caps.get("machine"),
        cores=caps.get("cores"),
        ram_gb=None if ram is None else round(ram / 2**30, 1),
        runtime=runtime,
        xnnpack=caps.get("xnnpack"),
        power_sources=list(caps.get("power_sources") or []),
        tags=list(caps.get("tags") or []),
        temp_max_c=max(temps.values()) if temps else None,
        throttled=hb.get("throttled"),
        load1=load[0] if load else None,
        queue_depth=hb.get("queue_depth"),
        outbox_depth=hb.get("outbox_depth"),
        running_job=hb.get("running_job"),
        refusing_jobs=record.refusing_jobs if record.status == ONLINE else None,
        clock_offset_s=None if record.clock_offset_s is None else round(record.clock_offset_s, 1),
    )


def clock_warning(row: DeviceSummary, limit_s: float = CLOCK_WARN_S) -> str | None:
    """What a device's clock offset means for its commands and results, if it matters."""
    off = row.clock_offset_s
    if off is None or abs(off) <= limit_s:
        return None
    return (
        f"{row.device}'s clock is {abs(off):.0f} s {'ahead of' if off > 0 else 'behind'} this "
        "coordinator's: its result timestamps are off by as much (commands are sent with their "
        "expiry in its time); sync it (NTP, e.g. "
        "`timedatectl set-ntp true`)"
    )


def device_table(
    records: list[DeviceRecord], now: float, hb_interval_s: float = DEFAULT_HB_INTERVAL_S
) -> list[DeviceSummary]:
    """Summaries for ``store.devices()``, ordered by device name."""
    return [summarize(r, now, hb_interval_s) for r in sorted(records, key=lambda r: r.device)]
