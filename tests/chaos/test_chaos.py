"""Chaos: a campaign of >= 1,000 results on 3 real agents while, at seeded random moments, the
broker is SIGKILLed or stopped (the loopback link drops for seconds) or frozen, agents are
SIGKILLed mid-job, the coordinator driving the campaign is SIGKILLed, or the coordinator and
then the broker are (results waiting in the broker for the coordinator die with the broker's
unsaved state); each comes back after a moment. End state, read from the store: every planned
measurement has exactly one accepted result, no command produced two results, the campaign is
done, and no process is left behind.

The cheapest legitimate 1,000 results: six single-layer models from the zoo (microseconds per
inference), two configurations (XNNPACK on and off), 28 repetitions, one timed run each.

Everything is real: mosquitto with persistence on a free 127.0.0.1 port, `halo-agent run`
processes with their own state directories, tiny TFLite models written by the zoo, and
`halo-coord campaign run` / `--resume` as a user runs them.

The schedule comes from a seed, printed with the figures; replay a failure with
``HALOFARM_CHAOS_SEED=N pytest tests/chaos``. The whole test is bounded by BUDGET_S: it fails
with what it saw rather than hang, and kills everything it started in any case.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.coordinator.farm_support import LocalAgent, coord, coord_popen, wait_online
from tests.mqtt_broker import INSTALL_HINT, Mosquitto, free_port, mosquitto_binary

SEED_ENV = "HALOFARM_CHAOS_SEED"
# Every process this test starts (and their children) carries this variable: how leftovers are
# found, even ones re-parented to init after their parent was SIGKILLed.
MARK_ENV = "HALOFARM_CHAOS_RUN"
BUDGET_S = 240.0
# Faults stop once this share of the jobs is done, or this long before the budget ends, so the
# farm can finish what is left.
FAULTS_UNTIL = 0.85
QUIET_S = 75.0
DEVICES = ("chaos-a", "chaos-b", "chaos-c")
# 6 models x 2 configurations x 28 repetitions x 3 devices = 1,008 results.
ARCHS = (
    "conv:4x4x2:k=1,s=1,cout=2",
    "conv:4x4x2:k=3,s=1,cout=2",
    "dwconv:4x4x2:k=3,s=1",
    "fc:1x1x4:cout=2",
    "fc:1x1x8:cout=4",
    "pool:4x4x2:k=2,s=2",
)
CONFIGS = 2  # xnnpack on and off
REPETITIONS = 28
EXPECTED = len(DEVICES) * len(ARCHS) * CONFIGS * REPETITIONS

CAMPAIGN = """
name = "chaos"
repetitions = {reps}
[devices]
ids = {devices}
[models]
dir = "{zoo}"
[bench]
threads = [1]
xnnpack = [true, false]
warmup_runs = 0
warmup_seconds = 0.0
min_runs = 1
min_seconds = 0.0
[retries]
max = 5
backoff_s = 1.0
factor = 1.0
"""


@dataclass
class Chaos:
    """The fault schedule and what was done, for the report line and failure messages."""

    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    events: list[str] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def note(self, kind: str, text: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        self.events.append(f"{self.elapsed():6.1f}s {text}")

    def left(self) -> float:
        return BUDGET_S - self.elapsed()


class Driver:
    """`halo-coord campaign run FILE`, then `--resume` after every kill once the run exists
    (a kill while the campaign is being planned leaves nothing to resume)."""

    def __init__(self, path: Path, env: dict, logs: Path) -> None:
        self.path, self.env, self.logs = path, env, logs
        self.store = Path(env["HALOFARM_STORE"])
        self.runs = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        planned = _count(self.store, "SELECT count(*) FROM campaigns") > 0
        resume = ("--resume",) if planned else ()
        self.runs += 1
        self.proc = coord_popen(
            "campaign", "run", str(self.path), *resume, env=self.env, log=self.log
        )

    @property
    def log(self) -> Path:
        return self.logs / f"coordinator-{self.runs}.log"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(30)  # reaped: a zombie would still hold the campaign's lease

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            return ""


def _count(store: Path, sql: str) -> int:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as con:
            return con.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _done(store: Path) -> int:
    return _count(store, "SELECT count(*) FROM campaign_jobs WHERE state = 'done'")


def _marked(run_id: str) -> list[psutil.Process]:
    """Live processes carrying this run's mark (zombies already reaped by init excluded)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARK_ENV) == run_id:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _inject(chaos: Chaos, broker: Mosquitto, agents: list[LocalAgent], driver: Driver) -> None:
    """One fault, then the victim comes back after a moment."""
    kinds = ("broker-kill", "link-drop", "broker-freeze", "agent-kill", "coord-kill", "double")
    kind = chaos.rng.choice(kinds)
    down = chaos.rng.uniform(0.5, 3.0)
    if kind == "double":
        # The coordinator dies, results queue up in the broker for its session, and the broker
        # dies too before saving them: they are gone from the broker for good.
        driver.kill()
        time.sleep(down)
        broker.kill()
        chaos.note(kind, f"coordinator SIGKILL, {down:.1f}s later broker SIGKILL")
        time.sleep(0.5)
        broker.start()
        driver.start()
    elif kind == "broker-kill":
        broker.kill()  # SIGKILL: whatever it had not saved yet is gone
        chaos.note(kind, f"broker SIGKILL, down {down:.1f}s")
        time.sleep(down)
        broker.start()
    elif kind == "link-drop":
        broker.stop()  # every connection drops; the listener is gone until the restart
        chaos.note(kind, f"broker stopped (link down) for {down + 1:.1f}s")
        time.sleep(down + 1.0)
        broker.start()
    elif kind == "broker-freeze":
        os.kill(broker.pid, signal.SIGSTOP)  # connections stay up but nothing moves
        chaos.note(kind, f"broker frozen for {down:.1f}s")
        time.sleep(down)
        os.kill(broker.pid, signal.SIGCONT)
    elif kind == "agent-kill":
        agent = chaos.rng.choice(agents)
        agent.proc.kill()
        agent.proc.wait(30)
        chaos.note(kind, f"{agent.device} SIGKILL, down {down:.1f}s")
        time.sleep(down)
        agent.start()
    else:
        driver.kill()
        chaos.note(kind, f"coordinator SIGKILL (run {driver.runs}), down {down:.1f}s")
        time.sleep(down)
        driver.start()


@pytest.mark.slow
def test_campaign_survives_random_kills_of_broker_agents_and_coordinator(tmp_path, monkeypatch):
    binary = mosquitto_binary()
    if binary is None:
        pytest.fail(f"mosquitto not found: {INSTALL_HINT}", pytrace=False)
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(1_000_000))
    print(f"\nchaos seed {seed} (replay: {SEED_ENV}={seed})")
    chaos = Chaos(random.Random(seed))
    run_id = uuid.uuid4().hex
    monkeypatch.setenv(MARK_ENV, run_id)  # inherited by every process started from here

    store = tmp_path / "store.sqlite"
    env = {"HALOFARM_BROKER_URL": "", "HALOFARM_STORE": str(store)}
    (tmp_path / "mosquitto").mkdir()
    broker = Mosquitto(binary, tmp_path / "mosquitto", free_port())
    env["HALOFARM_BROKER_URL"] = broker.url
    agents = [LocalAgent(tmp_path, d, broker.url) for d in DEVICES]
    zoo = tmp_path / "zoo"
    campaign = tmp_path / "chaos.toml"
    driver = Driver(campaign, env, tmp_path)
    finished = False
    try:
        broker.start()
        archs = [a for arch in ARCHS for a in ("--arch", arch)]
        made = coord("zoo", "generate", "--space", "op", *archs, "--out", str(zoo), env=env)
        assert made.returncode == 0, made.stderr
        campaign.write_text(
            CAMPAIGN.format(reps=REPETITIONS, devices=list(DEVICES), zoo=zoo).replace("'", '"')
        )
        for agent in agents:
            agent.start()
        wait_online(agents, env, timeout=60)

        driver.start()
        next_fault = chaos.elapsed() + chaos.rng.uniform(1.5, 4.5)
        while True:
            code = driver.proc.poll()
            if code == 0:
                finished = True
                break
            if code is not None:  # e.g. the broker was down when it started: start again
                chaos.events.append(f"{chaos.elapsed():6.1f}s coordinator exited {code}")
                driver.proc.wait()
                time.sleep(1.0)
                driver.start()
            assert chaos.left() > 0, (
                f"campaign not done within {BUDGET_S:.0f} s (seed {seed}): "
                f"{_done(store)}/{EXPECTED} jobs done; events:\n"
                + "\n".join(chaos.events)
                + f"\nlast coordinator log:\n{driver.tail()}"
            )
            for agent in agents:
                assert agent.alive(), f"{agent.device} died:\n{agent.log.read_text()[-2000:]}"
            faulty = chaos.left() > QUIET_S and _done(store) < FAULTS_UNTIL * EXPECTED
            if chaos.elapsed() >= next_fault and faulty:
                _inject(chaos, broker, agents, driver)
                next_fault = chaos.elapsed() + chaos.rng.uniform(1.5, 4.5)
            time.sleep(0.2)
    finally:
        driver.kill()
        for agent in agents:
            agent.stop()
        if broker.running:
            os.kill(broker.pid, signal.SIGCONT)
        broker.stop()
    wall = chaos.elapsed()
    total_faults = sum(chaos.faults.values())
    print(
        f"chaos: {EXPECTED} results, wall {wall:.1f} s, {total_faults} faults {chaos.faults}, "
        f"{driver.runs} coordinator runs (seed {seed})\n" + "\n".join(chaos.events)
    )
    assert finished
    assert total_faults >= 5, f"only {total_faults} faults injected: {chaos.events}"

    with sqlite3.connect(store) as con:
        assert con.execute("SELECT state FROM campaigns").fetchall() == [("done",)]
        jobs = con.execute(
            "SELECT device, model_sha256, threads, xnnpack, repetition, state, result_id "
            "FROM campaign_jobs"
        ).fetchall()
        assert len(jobs) == EXPECTED
        assert {j[5] for j in jobs} == {"done"}
        keys = {j[:5] for j in jobs}
        assert len(keys) == EXPECTED  # the plan: every (device, model, config, repetition)
        accepted = [j[6] for j in jobs]
        assert len(set(accepted)) == EXPECTED  # one result each, none shared
        ok = con.execute(
            "SELECT r.result_id FROM results r JOIN campaign_jobs j ON j.result_id = r.result_id "
            "WHERE r.status = 'ok'"
        ).fetchall()
        assert len(ok) == EXPECTED
        # no command ran twice; every stored result answers a command the campaign sent
        assert (
            con.execute("SELECT cmd_id FROM results GROUP BY cmd_id HAVING count(*) > 1").fetchall()
            == []
        )
        stray = con.execute(
            "SELECT count(*) FROM results WHERE cmd_id NOT IN "
            "(SELECT cmd_id FROM campaign_attempts)"
        ).fetchone()[0]
        assert stray == 0
        extra = con.execute("SELECT count(*) FROM results").fetchone()[0] - EXPECTED
    print(f"chaos: results of superseded attempts kept beside the accepted ones: {extra}")

    deadline = time.monotonic() + 10.0
    while (left := _marked(run_id)) and time.monotonic() < deadline:
        time.sleep(0.2)
    described = [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in left]
    for proc in left:
        proc.kill()
    assert not left, f"processes left behind: {described}"
