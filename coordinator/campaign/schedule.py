"""Cron schedules for campaigns, evaluated in UTC.

A schedule remembers the last fire time it acted on (table ``schedules``). At any moment the
fire that is due is the latest cron time at or before now, if it is later than that: after a
coordinator was down across several fire times, the campaign runs once, not once per missed
time. UTC means no daylight-saving jumps: a "02:30" schedule never fires twice or not at all on
the night the local clocks change.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from coordinator.errors import UserError
from coordinator.store import Store

UTC = dt.timezone.utc


def _croniter():
    try:
        from croniter import croniter
    except ImportError:
        raise UserError(
            "campaign schedules need croniter: pip install 'halofarm[campaign]'"
        ) from None
    return croniter


def latest_fire(cron: str, now: float) -> float:
    """The latest fire time <= now (seconds since the epoch)."""
    # croniter's get_prev is strictly before its start; one second later includes `now`.
    start = dt.datetime.fromtimestamp(int(now) + 1, UTC)
    return _croniter()(cron, start).get_prev(dt.datetime).timestamp()


def next_fire(cron: str, now: float) -> float:
    return _croniter()(cron, dt.datetime.fromtimestamp(now, UTC)).get_next(dt.datetime).timestamp()


def due(cron: str, last_fire: float, now: float) -> float | None:
    """The fire time to act on now, or None (a pure function of its arguments)."""
    fire = latest_fire(cron, now)
    return fire if fire > last_fire else None


@dataclass
class Schedule:
    name: str
    cron: str
    source: str
    last_fire: float


def register(store: Store, name: str, cron: str, source: Path, now: float) -> Schedule:
    """Add or update a campaign's schedule. A new one (or one whose cron changed) counts from
    now: registering at 10:00 a daily 02:00 campaign does not run it at once."""
    with store.transaction():
        rows = store.query("SELECT cron, source, last_fire FROM schedules WHERE name = ?", (name,))
        if rows and rows[0][0] == cron:
            last = rows[0][2] if rows[0][2] is not None else now
        else:
            last = now
        store.execute(
            "INSERT INTO schedules (name, cron, source, last_fire) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, source = excluded.source, "
            "last_fire = excluded.last_fire",
            (name, cron, str(source), last),
        )
    return Schedule(name, cron, str(source), last)


def mark_fired(store: Store, name: str, fire: float) -> None:
    store.execute(
        "UPDATE schedules SET last_fire = ? WHERE name = ? "
        "AND (last_fire IS NULL OR last_fire < ?)",
        (fire, name, fire),
    )


def schedules(store: Store) -> list[Schedule]:
    return [
        Schedule(*row)
        for row in store.query(
            "SELECT name, cron, source, coalesce(last_fire, 0) FROM schedules ORDER BY name"
        )
    ]
