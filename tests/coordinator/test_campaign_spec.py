"""Campaign files: every problem reported with its line; the plan a valid file expands to;
`halo-coord campaign validate`."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.campaign.cli import summary
from coordinator.campaign.plan import ModelRef, plan, reference_archs
from coordinator.campaign.spec import CampaignError, parse
from coordinator.campaign.tomlines import key_lines

REPO = Path(__file__).resolve().parents[2]
GOOD = """\
name = "nb201-weekly"
repetitions = 3

[devices]
ids = ["tx2-01", "nano-02"]

[models]
zoo = { space = "nb201", sample = 60, seed = 1 }

[bench]
threads = [1, 4]
min_runs = 20
energy = true

[order]
seed = 7

[schedule]
cron = "0 2 * * 1"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(CampaignError) as info:
        parse(text, "c.toml")
    return info.value.lines()


def test_a_good_file_parses_with_defaults_filled():
    c = parse(GOOD, "c.toml")
    assert c.name == "nb201-weekly" and c.repetitions == 3
    assert c.devices.ids == ("tx2-01", "nano-02") and not c.devices.all_online
    assert (c.models.kind, c.models.space, c.models.sample, c.models.seed) == (
        "zoo",
        "nb201",
        60,
        1,
    )
    assert c.bench.threads == (1, 4) and c.bench.xnnpack == (True,)
    assert c.bench.timing == {"min_runs": 20} and c.bench.energy
    assert c.order_seed == 7 and c.cron == "0 2 * * 1"
    assert c.retries.max == 2 and c.thermal.max_wait_s == 600.0


def test_every_problem_is_reported_with_its_line():
    text = """\
repetitions = 0
colour = "red"
[devices]
ids = ["tx2 01"]
[models]
zoo = { space = "nb999", sample = 5 }
[bench]
threads = [0]
min_seconds = 9
max_seconds = 1
[thermal]
pause_s = -1
[schedule]
cron = "every tuesday"
"""
    got = problems(text)
    assert got == [
        "c.toml:1: repetitions: must be in 1..1000, got 0",
        "c.toml:2: colour: unknown key; known: bench, canary, devices, models, name, order, "
        "repetitions, retries, schedule, thermal",
        "c.toml:4: devices.ids: not a device id: 'tx2 01'",
        "c.toml:6: models.zoo.space: unknown space 'nb999'; spaces: nb201, fbnet, mbv2, op",
        "c.toml:8: bench.threads: every item must be an integer in 1..64, got 0",
        "c.toml:9: bench.min_seconds: must not exceed max_seconds",
        "c.toml:12: thermal.pause_s: must be in 0.0..3600.0, got -1.0",
        "c.toml:14: schedule.cron: not a cron expression: 'every tuesday'",
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[models]\nreference = true\n", "devices: missing"),
        ("[devices]\nall_online = true\n", "models: missing"),
        ("[devices]\nids = []\n[models]\nreference = true\n", "devices.ids: must be a non-empty"),
        ("[devices]\ntags=['a']\n[models]\nreference = true\ndir = 'x'\n", "exactly one of"),
        ("[devices]\ntags=['a']\n[models]\ndir = 'nowhere'\n", "has no manifest.jsonl"),
        ("[devices]\ntags=['a']\n[models]\nzoo = { space = 'nb201' }\n", "sample: missing"),
        ("[devices\n", "not TOML"),
        ("name = 3\n[devices]\ntags=['a']\n[models]\nreference = true\n", "name: must be a string"),
    ],
)
def test_clear_errors(text, expected):
    assert any(expected in line for line in problems(text)), problems(text)


def test_key_lines_follow_tables_and_dotted_keys():
    lines = key_lines('a = 1\n[t]\nb.c = 2\n  [ "u" . v ]\nd = { e = 1 }\n')
    assert lines == {("a",): 1, ("t",): 2, ("t", "b", "c"): 3, ("u", "v"): 4, ("u", "v", "d"): 5}


def refs(n: int) -> list[ModelRef]:
    return [ModelRef(f"{i:064x}", f"m{i}") for i in range(n)]


def test_plan_rounds_are_complete_shuffled_and_reproducible():
    c = parse(GOOD, "c.toml")
    jobs = plan(c, ["nano-02", "tx2-01"], refs(10))
    assert len(jobs) == 2 * 10 * 2 * 3
    assert len({j.key for j in jobs}) == len(jobs)  # one identity per job
    tx2 = [j for j in jobs if j.device == "tx2-01"]
    assert [j.position for j in tx2] == list(range(60))
    for rep in range(3):  # each round runs every (model, config) exactly once
        pairs = [(j.model.name, j.config) for j in tx2 if j.repetition == rep]
        assert len(set(pairs)) == 20
    rounds = [[(j.model.name, j.config) for j in tx2 if j.repetition == r] for r in range(3)]
    assert rounds[0] != rounds[1]  # a fresh order per round
    nano = [(j.model.name, j.config) for j in jobs if j.device == "nano-02"][:20]
    assert nano != rounds[0]  # and per device
    assert plan(c, ["tx2-01", "nano-02"], refs(10)) == jobs  # same inputs, same plan
    other = parse(GOOD.replace("seed = 7", "seed = 8"), "c.toml")
    assert plan(other, ["tx2-01"], refs(10)) != tx2


def test_plan_needs_devices_and_models():
    c = parse(GOOD, "c.toml")
    with pytest.raises(ValueError, match="no device"):
        plan(c, [], refs(1))
    with pytest.raises(ValueError, match="no models"):
        plan(c, ["a"], [])


def test_reference_set_is_packaged():
    archs = reference_archs()
    assert len(archs) == 10 and all(a.startswith("|") for a in archs)
    shared = REPO.parent / "shared" / "data" / "nb201" / "reference_archs.txt"
    if shared.exists():
        assert archs == [ln.split("\t")[1] for ln in shared.read_text().splitlines() if ln]


def test_summary_counts_jobs_and_next_run_in_utc():
    info = summary(parse(GOOD, "c.toml"), now=dt.datetime(2026, 11, 22, 12, tzinfo=dt.timezone.utc))
    assert info["jobs_per_device"] == 60 * 2 * 3
    assert info["next_run_utc"] == "2026-11-23T02:00:00+00:00"  # the next Monday 02:00 UTC


def coord(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )


def test_validate_command(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    r = coord("campaign", "validate", str(good))
    assert r.returncode == 0, r.stderr
    assert "campaign nb201-weekly: valid" in r.stdout and "jobs/device  360" in r.stdout
    r = coord("campaign", "validate", str(good), "--json")
    assert json.loads(r.stdout)["models"]["count"] == 60
    bad = tmp_path / "bad.toml"
    bad.write_text("repetitions = 0\n[devices]\nids = ['a b']\n")
    r = coord("campaign", "validate", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 3 and all(ln.startswith("halo-coord: error: ") for ln in lines)
    assert f"{bad}:1: repetitions" in lines[0]
    r = coord("campaign", "validate", str(tmp_path / "absent.toml"))
    assert r.returncode == 2 and "cannot read campaign file" in r.stderr
