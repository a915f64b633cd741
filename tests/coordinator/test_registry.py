"""Device health rules (mqtt.md §6) on synthetic timestamps, and the `devices` summary row."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.registry import (
    CLOCK_WARN_S,
    OFFLINE,
    ONLINE,
    STALE,
    UNKNOWN,
    clock_warning,
    device_table,
    health,
    summarize,
)
from coordinator.store import DeviceRecord, Store
from protocol import Status, device_topic, encode, make
from tests.coordinator.test_ingest_support import caps_message, hb_message, status_message

HB = 10.0  # heartbeat interval in these tests; stale after 3 x 10 s


@pytest.mark.parametrize(
    ("status", "status_at", "hb_at", "now", "expected"),
    [
        ("online", 100.0, 120.0, 125.0, ONLINE),
        ("online", 100.0, 120.0, 149.9, ONLINE),  # hb age 29.9 < 30
        ("online", 100.0, 120.0, 150.0, STALE),  # hb age 30: not < 3 x interval
        ("online", 100.0, None, 105.0, ONLINE),  # just connected, no heartbeat yet
        ("online", 100.0, None, 131.0, STALE),  # connected, never sent a heartbeat
        ("online", 200.0, 120.0, 210.0, ONLINE),  # reconnected after an old heartbeat
        ("offline", 130.0, 120.0, 131.0, OFFLINE),  # will received after the last hb
        ("offline", 130.0, 120.0, 9999.0, OFFLINE),  # offline stays offline
        ("offline", 130.0, 140.0, 141.0, ONLINE),  # heartbeats after the will: it is back
        ("offline", 130.0, 140.0, 200.0, STALE),
        ("offline", 130.0, None, 131.0, OFFLINE),
        (None, None, 120.0, 125.0, ONLINE),  # heartbeats but no status (yet)
        (None, None, 120.0, 500.0, STALE),
        (None, None, None, 500.0, UNKNOWN),  # only caps ever arrived
    ],
)
def test_health_rules(status, status_at, hb_at, now, expected) -> None:
    assert health(status, status_at, hb_at, now, hb_interval_s=HB) == expected


def test_health_interval_scales_the_stale_limit() -> None:
    assert health("online", 0.0, 100.0, 189.0, hb_interval_s=30.0) == ONLINE
    assert health("online", 0.0, 100.0, 189.0, hb_interval_s=10.0) == STALE
    with pytest.raises(ValueError):
        health("online", 0.0, 0.0, 1.0, hb_interval_s=0)


def test_summary_from_stored_device(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        store.record_status(status_message("rpi4-01")[2], at=1000.0)
        store.record_caps(caps_message("rpi4-01")[2], at=1000.0)
        store.record_hb(hb_message("rpi4-01", running_job="job-7")[2], at=1010.0)
        store.record_status(status_message("jetson-nano", "offline")[2], at=900.0)
        rows = device_table(store.devices(), now=1015.0, hb_interval_s=HB)
    nano, pi = rows
    assert (nano.device, nano.health, nano.board, nano.last_seen_s) == (
        "jetson-nano",
        OFFLINE,
        None,
        115.0,
    )
    assert (pi.device, pi.health, pi.last_seen_s) == ("rpi4-01", ONLINE, 5.0)
    assert (pi.board, pi.soc, pi.cores, pi.ram_gb) == ("Raspberry Pi 4 Model B Rev 1.4",
                                                       "BCM2711", 4, 4.0)  # fmt: skip
    assert (pi.runtime, pi.xnnpack, pi.power_sources) == ("tflite-runtime 2.14.0", True,
                                                          ["ina3221-hwmon"])  # fmt: skip
    assert (pi.temp_max_c, pi.throttled, pi.load1) == (51.2, False, 0.5)
    assert (pi.queue_depth, pi.running_job, pi.agent_version) == (2, "job-7", "0.1.0")
    assert pi.to_dict()["health"] == ONLINE


def test_summary_of_a_device_known_only_by_caps() -> None:
    rec = DeviceRecord("mcu-1", None, None, None, {"board": "nucleo"}, 5.0, None, None)
    row = summarize(rec, now=10.0)
    assert (row.health, row.board, row.last_seen_s, row.temp_max_c) == (UNKNOWN, "nucleo",
                                                                         None, None)  # fmt: skip


def refusing_status(device: str, reason: str | None, state: str = "online"):
    body = Status(state=state, agent_version="0.1.0", started_at=time.time(), refusing_jobs=reason)
    env = make(body, device)
    return device_topic(device, "status"), encode(env), env


def test_a_device_refusing_jobs_says_why_until_it_takes_them_again(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        store.record_status(refusing_status("pi", "outbox full (256 MiB)")[2], at=1000.0)
        (row,) = device_table(store.devices(), now=1001.0, hb_interval_s=HB)
        assert row.refusing_jobs == "outbox full (256 MiB)"
        store.record_status(refusing_status("pi", None)[2], at=1002.0)
        (row,) = device_table(store.devices(), now=1003.0, hb_interval_s=HB)
        assert row.refusing_jobs is None
        # An offline device takes nothing anyway: its last reason would only mislead.
        store.record_status(refusing_status("pi", "outbox full")[2], at=1004.0)
        store.record_status(refusing_status("pi", None, "offline")[2], at=1005.0)
        (row,) = device_table(store.devices(), now=1006.0, hb_interval_s=HB)
        assert (row.health, row.refusing_jobs) == (OFFLINE, None)


def hb_sent_at(device: str, sent_at: float):
    return dataclasses.replace(hb_message(device)[2], created_at=sent_at)


def test_clock_offset_comes_from_the_last_heartbeat(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as store:
        store.record_hb(hb_sent_at("ahead", 5000.0 + 3600.0), at=5000.0)
        store.record_hb(hb_sent_at("behind", 5000.0 - 86400.0), at=5000.0)
        store.record_hb(hb_sent_at("fine", 5000.0 - 0.3), at=5000.0)
        ahead, behind, fine = device_table(store.devices(), now=5001.0, hb_interval_s=HB)
        assert (ahead.clock_offset_s, behind.clock_offset_s, fine.clock_offset_s) == (
            3600.0, -86400.0, -0.3)  # fmt: skip
        assert "3600 s ahead of" in clock_warning(ahead)
        assert "timestamps are off" in clock_warning(ahead)
        assert "86400 s behind" in clock_warning(behind)
        assert clock_warning(fine) is None
        # The newest heartbeat counts: once NTP fixed the board, the warning goes.
        store.record_hb(hb_sent_at("ahead", 6000.0 + CLOCK_WARN_S / 2), at=6000.0)
        ahead = device_table(store.devices(), now=6001.0, hb_interval_s=HB)[0]
        assert clock_warning(ahead) is None


def test_devices_command_shows_the_refusal_and_the_clock(tmp_path: Path, mosquitto) -> None:
    store_path = tmp_path / "s.sqlite"
    with Store(store_path) as store:
        store.record_status(refusing_status("pi-full", "outbox full (256 MiB)")[2])
        store.record_status(status_message("pi-ok")[2])
        store.record_hb(hb_sent_at("pi-ok", time.time() - 7200))
    out = subprocess.run(
        [sys.executable, "-m", "coordinator", "devices", "--broker", mosquitto.url,
         "--store", str(store_path)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "pi-full refuses new jobs: outbox full (256 MiB)" in out.stdout
    assert "pi-ok refuses" not in out.stdout
    assert "pi-ok's clock is 7200 s behind this coordinator's" in out.stdout
    assert "pi-full's clock" not in out.stdout
