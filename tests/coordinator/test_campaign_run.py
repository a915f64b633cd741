"""Campaigns end to end: real mosquitto, real agents, `halo-coord campaign ...` as a user runs
it, and the campaign state in the store checked after the fact."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from tests.coordinator.farm_support import (
    FAST_BENCH,
    LocalAgent,
    coord,
    coord_popen,
    wait_online,
)


@pytest.fixture
def farm(tmp_path, mosquitto):
    env = {"HALOFARM_BROKER_URL": mosquitto.url, "HALOFARM_STORE": str(tmp_path / "store.sqlite")}
    agents: list[LocalAgent] = []

    def start(*devices: str, board: str | None = None) -> list[LocalAgent]:
        new = [LocalAgent(tmp_path, d, mosquitto.url, board).start() for d in devices]
        agents.extend(new)
        wait_online(new, env)
        return new

    yield start, env, mosquitto
    for a in agents:
        a.stop()


def campaign_file(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def db(env: dict) -> sqlite3.Connection:
    return sqlite3.connect(env["HALOFARM_STORE"])


def test_campaign_runs_every_job_once_with_canaries(farm, tmp_path):
    start, env, _ = farm
    start("camp-a")
    path = campaign_file(
        tmp_path,
        f"""
name = "small"
repetitions = 2
[devices]
ids = ["camp-a"]
[models]
zoo = {{ space = "nb201", sample = 3, seed = 1 }}
[canary]
models = 1
every = 4
threshold = 5.0
{FAST_BENCH}
""",
    )
    out = coord("campaign", "run", str(path), "--json", env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["state"] == "done"
    [dev] = doc["devices"]
    assert (dev["device"], dev["done"], dev["total"], dev["failed"]) == ("camp-a", 6, 6, 0)
    # a canary block first, after every 4 measurements, and last: 3 blocks of 1 model
    assert (dev["canaries_done"], dev["canaries_total"]) == (3, 3)
    assert dev["drift"] is not None and not dev["drift_flagged"]
    with db(env) as con:
        rows = con.execute(
            "SELECT j.kind, j.state, j.attempt, r.status FROM campaign_jobs j "
            "JOIN results r ON r.result_id = j.result_id"
        ).fetchall()
        assert len(rows) == 9 and {r[1:] for r in rows} == {("done", 1, "ok")}
        # each (model, repetition) measured exactly once; results hold nothing else
        assert con.execute("SELECT count(*) FROM results").fetchone()[0] == 9
        pairs = con.execute(
            "SELECT model_sha256, repetition, count(*) FROM campaign_jobs "
            "WHERE kind = 'measure' GROUP BY 1, 2"
        ).fetchall()
        assert len(pairs) == 6 and {p[2] for p in pairs} == {1}

    listed = coord("campaign", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert (entry["state"], entry["done"], entry["jobs"]) == ("done", 6, 6)
    png = tmp_path / "progress.png"
    status = coord("campaign", "status", entry["campaign_id"][:8], "--plot", str(png), env=env)
    assert status.returncode == 0, status.stderr
    assert "camp-a" in status.stdout and "6/6" in status.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"

    # The same file again is a new run; resuming a finished campaign is an error.
    again = coord("campaign", "run", str(path), "--resume", env=env)
    assert again.returncode == 2 and "no unfinished run" in again.stderr
    assert "Traceback" not in again.stderr


def test_campaign_errors_are_one_line(farm, tmp_path):
    start, env, _ = farm
    start("camp-b")
    unknown = campaign_file(
        tmp_path,
        """
name = "x"
[devices]
ids = ["nope-1"]
[models]
reference = true
""",
    )
    out = coord("campaign", "run", str(unknown), env=env)
    assert out.returncode == 2
    assert "nope-1" in out.stderr and "never connected" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1

    bad = campaign_file(tmp_path, 'name = "x"\nrepetitions = 0\n[devices]\nids=["camp-b"]\n')
    out = coord("campaign", "run", str(bad), env=env)
    assert out.returncode == 2
    assert "repetitions" in out.stderr and "models" in out.stderr  # every problem, by line
    assert "Traceback" not in out.stderr

    empty = tmp_path / "empty-zoo"
    empty.mkdir()
    (empty / "manifest.jsonl").write_text("")
    zero = campaign_file(
        tmp_path,
        f"""
name = "zero"
[devices]
ids = ["camp-b"]
[models]
dir = "{empty}"
""",
    )
    out = coord("campaign", "run", str(zero), env=env)
    assert out.returncode == 2 and "no models" in out.stderr

    none = coord("campaign", "status", env=env)
    assert none.returncode == 2 and "no campaign" in none.stderr


def test_cancel_stops_a_campaign_and_keeps_it_out_of_list_of_running(farm, tmp_path):
    start, env, _ = farm
    start("camp-c")
    path = campaign_file(
        tmp_path,
        f"""
name = "long"
[devices]
ids = ["camp-c"]
[models]
zoo = {{ space = "nb201", sample = 40, seed = 2 }}
{FAST_BENCH}
""",
    )
    proc = coord_popen("campaign", "run", str(path), env=env, log=tmp_path / "run.log")
    try:
        _wait_done(env, 2, proc)
        listed = json.loads(coord("campaign", "list", "--json", env=env).stdout)
        cid = listed[0]["campaign_id"]
        out = coord("campaign", "cancel", cid, env=env)
        assert out.returncode == 0, out.stderr
        assert proc.wait(60) == 1  # the driver notices and stops
    finally:
        if proc.poll() is None:
            proc.kill()
    status = json.loads(coord("campaign", "status", cid, "--json", env=env).stdout)
    assert status["state"] == "cancelled"
    with db(env) as con:
        states = dict(
            con.execute("SELECT state, count(*) FROM campaign_jobs GROUP BY state").fetchall()
        )
    assert states.get("pending", 0) == 0 and states.get("sent", 0) == 0
    assert states["cancelled"] > 0 and states["done"] >= 2
    again = coord("campaign", "cancel", cid, env=env)
    assert again.returncode == 2 and "already cancelled" in again.stderr


def _done(env: dict) -> int:
    try:
        with db(env) as con:
            return con.execute(
                "SELECT count(*) FROM campaign_jobs WHERE state = 'done' AND kind = 'measure'"
            ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _wait_done(env: dict, n: int, proc, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while _done(env) < n:
        assert proc.poll() is None, "the campaign driver exited early"
        assert time.monotonic() < deadline, f"only {_done(env)} of {n} jobs done"
        time.sleep(0.2)


@pytest.mark.slow
def test_acceptance_three_agents_sixty_models_broker_restart_and_coordinator_kill(farm, tmp_path):
    """3 agents with simulated power boards x 60 nb201 models; the broker is restarted and
    the coordinator SIGKILLed mid-run; `--resume` finishes it. Every planned measurement is
    stored exactly once and the datasets have the shape of an uninterrupted run."""
    start, env, broker = farm
    devices = ("acc-a", "acc-b", "acc-c")
    start(*devices, board="tx2-jp4")
    n_models, reps = 60, 1
    path = campaign_file(
        tmp_path,
        f"""
name = "acceptance"
repetitions = {reps}
[devices]
ids = {json.dumps(list(devices))}
[models]
zoo = {{ space = "nb201", sample = {n_models}, seed = 5 }}
[canary]
models = 1
every = 30
{FAST_BENCH}
""",
    )
    expected = len(devices) * n_models * reps
    proc = coord_popen("campaign", "run", str(path), env=env, log=tmp_path / "run1.log")
    try:
        _wait_done(env, expected // 5, proc)
        broker.stop()
        time.sleep(2.0)
        broker.start()
        _wait_done(env, expected // 2, proc)
        proc.kill()  # SIGKILL: no cleanup at all
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = _done(env)
    assert killed_at < expected
    time.sleep(3.0)  # agents keep finishing what they hold; their results wait in the broker
    out = coord("campaign", "run", str(path), "--resume", "--json", env=env, timeout=900)
    assert out.returncode == 0, out.stderr + (tmp_path / "run1.log").read_text()[-3000:]
    doc = json.loads(out.stdout)
    assert doc["state"] == "done"
    assert {d["device"]: (d["done"], d["failed"]) for d in doc["devices"]} == {
        d: (n_models * reps, 0) for d in devices
    }
    with db(env) as con:
        # each planned measurement has exactly one accepted result, and none is shared
        accepted = con.execute(
            "SELECT j.device, m.arch, r.result_id, r.cmd_id FROM campaign_jobs j "
            "JOIN results r ON r.result_id = j.result_id "
            "JOIN models m ON m.sha256 = j.model_sha256 WHERE j.kind = 'measure'"
        ).fetchall()
        assert len(accepted) == expected
        assert len({a[2] for a in accepted}) == expected
        shape = {(a[0], a[1]) for a in accepted}
        archs = {r[0] for r in con.execute(
            "SELECT DISTINCT m.arch FROM campaign_jobs j JOIN models m "
            "ON m.sha256 = j.model_sha256 WHERE j.kind = 'measure'"
        )}  # fmt: skip
        assert len(archs) == n_models
        assert shape == {(d, a) for d in devices for a in archs}
        # no command ran twice: one result per command id at most
        dupes = con.execute(
            "SELECT cmd_id, count(*) FROM results GROUP BY cmd_id HAVING count(*) > 1"
        ).fetchall()
        assert dupes == []
        # every result stored belongs to a command the campaign sent
        stray = con.execute(
            "SELECT count(*) FROM results WHERE cmd_id NOT IN "
            "(SELECT cmd_id FROM campaign_attempts)"
        ).fetchone()[0]
        assert stray == 0
        attempts = dict(con.execute(
            "SELECT attempt, count(*) FROM campaign_jobs GROUP BY attempt"
        ).fetchall())  # fmt: skip
    print(f"\nacceptance: {killed_at}/{expected} done at the kill; attempts {attempts}")
    # the datasets: one per device, 60 archs each, one measurement per arch (canaries and
    # superseded attempts left out), as an uninterrupted run would give
    listed = coord("dataset", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    sets = json.loads(listed.stdout)
    assert sorted(d["device"] for d in sets) == sorted(devices)
    exported = coord("dataset", "export", "--format", "csv", env=env)
    assert exported.returncode == 0, exported.stderr
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == expected
    assert {(r["device"], r["arch"]) for r in rows} == {(d, a) for d in devices for a in archs}
    assert {r["n_results"] for r in rows} == {str(reps)}


def test_serve_resumes_an_unfinished_campaign_and_stops_cleanly(farm, tmp_path):
    """A `campaign run` killed mid-way is finished by `halo-coord serve`, which also exits
    cleanly on SIGTERM; serve refuses a campaign file without a schedule."""
    import signal

    start, env, _ = farm
    start("serve-a")
    path = campaign_file(
        tmp_path,
        f"""
name = "served"
[devices]
ids = ["serve-a"]
[models]
zoo = {{ space = "nb201", sample = 8, seed = 3 }}
{FAST_BENCH}
""",
    )
    no_cron = coord("serve", "--campaign", str(path), env=env)
    assert no_cron.returncode == 2 and "no [schedule]" in no_cron.stderr
    run = coord_popen("campaign", "run", str(path), env=env, log=tmp_path / "run.log")
    _wait_done(env, 2, run)
    run.kill()
    run.wait()
    serve = coord_popen("serve", env=env, log=tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 120
        while _done(env) < 8:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.3)
        status = json.loads(coord("campaign", "status", "--json", env=env).stdout)
        deadline = time.monotonic() + 30
        while status["state"] != "done" and time.monotonic() < deadline:
            time.sleep(0.3)
            status = json.loads(coord("campaign", "status", "--json", env=env).stdout)
        assert status["state"] == "done"
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
    text = (tmp_path / "serve.log").read_text()
    assert "resuming served-" in text and "done" in text


def test_onboard_measures_the_reference_architectures(farm, tmp_path):
    start, env, _ = farm
    start("onb-1")
    out = coord("onboard", "onb-1", "--repetitions", "1", "--min-runs", "3",
                "--min-seconds", "0", "--json", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    indices = [e["index"] for e in doc["embedding"]]
    assert indices == [11982, 431, 55, 9, 14451, 8636, 9881, 13479, 6196, 1462]
    lat = [e["latency_ms"] for e in doc["embedding"]]
    assert all(v is not None and v > 0 for v in lat)
    norm = [e["normalised"] for e in doc["embedding"]]
    assert min(norm) == 0.0 and max(norm) == 1.0
    assert norm[lat.index(max(lat))] == 1.0


NB201_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "nb201" / "latency_ms.csv"


@pytest.mark.skipif(not NB201_CSV.exists(), reason="public NB201 latency table not here")
def test_onboard_suggest_measures_the_active_picks(farm, tmp_path):
    start, env, _ = farm
    start("onb-2")
    out = coord("dataset", "import", str(NB201_CSV), "--format", "wide", "--device-columns",
                "gold_6240,samsung_s7,1080ti_1", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    args = ("onboard", "onb-2", "--repetitions", "1", "--min-runs", "3", "--min-seconds", "0")
    bad = coord(*args, "--suggest", "2", "--source", "onb-2", env=env)
    assert bad.returncode == 2 and "no dataset 'onb-2'" in bad.stderr  # nothing measured yet
    out = coord(*args, "--suggest", "2", "--source", "gold_6240", "--source", "samsung_s7",
                "--json", env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    active = doc["active"]
    assert len(active["sources"]) == 2 and active["campaign_id"].startswith("onboard-onb-2-active")
    embedded = {e["arch"] for e in doc["embedding"]}
    picks = active["archs"]
    assert len(picks) == 2 and not embedded & {p["arch"] for p in picks}
    for p in picks:
        assert 0 < p["lo_ms"] <= p["predicted_ms"] <= p["hi_ms"]
        assert p["latency_ms"] is not None and p["latency_ms"] > 0
    # both campaigns measured one nb201 configuration: one dataset of 12 archs
    shown = coord("dataset", "show", "nb201/cifar10/onb-2", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert len(json.loads(shown.stdout)["rows"]) == 12


def test_ctrl_c_leaves_the_run_resumable(farm, tmp_path):
    import signal

    start, env, _ = farm
    start("int-a")
    path = campaign_file(
        tmp_path,
        f"""
name = "interrupted"
[devices]
ids = ["int-a"]
[models]
zoo = {{ space = "nb201", sample = 6, seed = 4 }}
{FAST_BENCH}
""",
    )
    log = tmp_path / "run.log"
    proc = coord_popen("campaign", "run", str(path), env=env, log=log)
    _wait_done(env, 2, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130
    text = log.read_text()
    assert "the run stays resumable" in text and "Traceback" not in text
    fresh = coord("campaign", "run", str(path), env=env)
    assert fresh.returncode == 2 and "--resume" in fresh.stderr  # no second run beside it
    out = coord("campaign", "run", str(path), "--resume", "--json", env=env)
    assert out.returncode == 0, out.stderr
    [dev] = json.loads(out.stdout)["devices"]
    assert (dev["done"], dev["failed"]) == (6, 0)
    with db(env) as con:
        assert con.execute("SELECT count(*) FROM results").fetchone()[0] == 6
