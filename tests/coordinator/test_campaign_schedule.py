"""Cron schedules and the serve loop's firing, on a fake clock: no sleeping, explicit times."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from coordinator.campaign import schedule
from coordinator.campaign import state as st
from coordinator.serve import Server
from coordinator.store import Store
from tests.coordinator.test_ingest_support import status_message

UTC = dt.timezone.utc


def ts(*args: int) -> float:
    return dt.datetime(*args, tzinfo=UTC).timestamp()


def test_latest_fire_includes_now_and_is_utc():
    cron = "0 2 * * 1"  # Mondays 02:00 UTC
    monday = ts(2026, 11, 23, 2, 0)
    assert schedule.latest_fire(cron, monday) == monday
    assert schedule.latest_fire(cron, monday - 1) == monday - 7 * 86400
    assert schedule.next_fire(cron, monday) == monday + 7 * 86400


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "UTC"])
def test_dst_nights_fire_exactly_once_whatever_the_local_zone(tz, monkeypatch):
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        cron = "30 2 * * *"  # 02:30 UTC every day; Europe springs forward 2026-03-29 01:00 UTC
        last = ts(2026, 3, 27, 12, 0)
        fires = []
        now = last
        while now < ts(2026, 4, 1, 0, 0):  # a 10-minute fake clock across both DST changes
            now += 600
            fire = schedule.due(cron, last, now)
            if fire is not None:
                fires.append(fire)
                last = fire
        expected = [ts(2026, 3, d, 2, 30) for d in (28, 29, 30, 31)]
        assert fires == expected
        # America springs forward 2026-03-08 07:00 UTC: the same holds there
        assert schedule.due(cron, ts(2026, 3, 7, 3, 0), ts(2026, 3, 8, 2, 29)) is None
        assert schedule.due(cron, ts(2026, 3, 7, 3, 0), ts(2026, 3, 8, 2, 30)) == ts(
            2026, 3, 8, 2, 30
        )
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_missed_runs_after_downtime_fire_once():
    cron = "0 2 * * 1"
    last = ts(2026, 10, 26, 2, 0)
    down_until = ts(2026, 11, 20, 9, 0)  # 3 weekly fires missed
    fire = schedule.due(cron, last, down_until)
    assert fire == ts(2026, 11, 16, 2, 0)  # the latest one only
    assert schedule.due(cron, fire, down_until) is None
    assert schedule.due(cron, fire, ts(2026, 11, 23, 2, 0)) == ts(2026, 11, 23, 2, 0)


def test_register_counts_from_now_and_keeps_last_fire(tmp_path: Path):
    with Store(tmp_path / "s.sqlite") as store:
        t0 = ts(2026, 11, 22, 10, 0)
        s = schedule.register(store, "weekly", "0 2 * * *", tmp_path / "c.toml", t0)
        assert s.last_fire == t0  # 02:00 today is before registration: not due
        assert schedule.due(s.cron, s.last_fire, t0 + 60) is None
        schedule.mark_fired(store, "weekly", ts(2026, 11, 23, 2, 0))
        again = schedule.register(store, "weekly", "0 2 * * *", tmp_path / "c.toml", t0 + 99999)
        assert again.last_fire == ts(2026, 11, 23, 2, 0)
        changed = schedule.register(store, "weekly", "0 3 * * *", tmp_path / "c.toml", t0 + 5)
        assert changed.last_fire == t0 + 5


def test_server_fires_due_campaigns_once_and_skips_while_unfinished(tmp_path: Path):
    """Server.tick with fake times: a due fire starts one campaign run; the same fire never
    starts a second; a fire while the previous run is unfinished is skipped; after three weeks
    of downtime one run starts."""
    file = tmp_path / "nightly.toml"
    file.write_text(
        'name = "nightly"\n[devices]\nids = ["sched-1"]\n[models]\nreference = true\n'
        '[schedule]\ncron = "0 2 * * *"\n'
    )
    with Store(tmp_path / "s.sqlite") as store:
        store.record_status(status_message("sched-1")[2])
        t0 = ts(2026, 11, 22, 10, 0)
        schedule.register(store, "nightly", "0 2 * * *", file, t0)
        server = Server(store, {"nightly": file})
        assert server.tick(t0 + 3600) == []
        first = server.tick(ts(2026, 11, 23, 2, 0, 5))
        assert len(first) == 1
        run = st.get(store, first[0])
        assert run.scheduled_for == ts(2026, 11, 23, 2, 0) and run.state == st.RUNNING
        assert len(st.jobs(store, run.campaign_id)) == 10
        assert server.tick(ts(2026, 11, 23, 2, 30)) == []  # same fire: nothing new
        assert server.tick(ts(2026, 11, 24, 2, 1)) == []  # unfinished: skipped, not queued
        assert server.tick(ts(2026, 11, 24, 3, 0)) == []
        st.cancel(store, run.campaign_id, ts(2026, 11, 24, 4, 0))
        later = server.tick(ts(2026, 12, 15, 12, 0))  # three weeks down: one run
        assert len(later) == 1
        assert st.get(store, later[0]).scheduled_for == ts(2026, 12, 15, 2, 0)
        assert server.tick(ts(2026, 12, 15, 12, 1)) == []
        assert [r.name for r in st.all_campaigns(store)] == ["nightly", "nightly"]


def test_a_fire_started_before_a_crash_is_not_started_again(tmp_path: Path):
    file = tmp_path / "nightly.toml"
    file.write_text(
        'name = "nightly"\n[devices]\nids = ["sched-2"]\n[models]\nreference = true\n'
        '[schedule]\ncron = "0 2 * * *"\n'
    )
    with Store(tmp_path / "s.sqlite") as store:
        store.record_status(status_message("sched-2")[2])
        schedule.register(store, "nightly", "0 2 * * *", file, ts(2026, 11, 22, 10, 0))
        server = Server(store, {"nightly": file})
        [cid] = server.tick(ts(2026, 11, 23, 2, 0, 1))
        st.finish(store, cid, ts(2026, 11, 23, 3, 0))
        # the crash: the fire was acted on but last_fire not recorded
        store.execute("UPDATE schedules SET last_fire = ?", (ts(2026, 11, 22, 10, 0),))
        restarted = Server(store, {"nightly": file})
        assert restarted.tick(ts(2026, 11, 23, 9, 0)) == []
        assert len(st.all_campaigns(store)) == 1
