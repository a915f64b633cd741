"""The board's disk fills up while a benchmark runs: the agent cannot commit the result to its
outbox. It keeps the measurement, says so in its log, commits and publishes it once space
returns, and never runs the job twice; the daemon itself stays up.

The full disk is RLIMIT_FSIZE 0 on the agent process alone (set from outside with prlimit):
every write fails with EFBIG, which SQLite reports as a disk I/O error. The real agent daemon
and a real mosquitto; the coordinator is played by the agent tests' paho peer.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import threading

import psutil
import pytest

from coordinator.zoo.testing import tiny_model_bytes
from tests.agent.test_daemon import HANG_ENV, REPO, Agent, Peer, bench_spec, wait_for


class PipedAgent(Agent):
    """The agent with its log on a pipe: a full disk must not silence what it says about it."""

    def start(self, peer: Peer | None = None, **env_extra: str) -> None:
        online = 0 if peer is None else peer.statuses.count("online")
        env = {k: v for k, v in os.environ.items() if k != HANG_ENV}
        env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **env_extra)
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.daemon", "--config", str(self.config)],
            cwd=str(REPO), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        if peer is not None:
            wait_for(lambda: peer.statuses.count("online") > online, "the agent online")

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)

    def log_text(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def tiny_model() -> bytes:
    return tiny_model_bytes()


@pytest.fixture
def peer(mosquitto, tiny_model):
    p = Peer(mosquitto, {hashlib.sha256(tiny_model).hexdigest(): tiny_model})
    yield p
    p.close()


@pytest.fixture
def agent(tmp_path, mosquitto):
    a = PipedAgent(tmp_path, mosquitto)
    yield a
    a.stop()
    print(a.log_text())  # shown by pytest when the test failed


def _fsize(agent: PipedAgent, limit: int) -> None:
    psutil.Process(agent.proc.pid).rlimit(psutil.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def test_a_result_that_meets_a_full_disk_waits_in_the_agent_and_is_sent_once(
    peer, agent, tiny_model
):
    agent.start(peer)
    # One job first: the model is cached and everything the job needs is on disk.
    warm = peer.command("bench", bench=bench_spec(tiny_model))
    peer.wait_ack(warm, "done")
    wait_for(lambda: len(peer.results) == 1, "the first result")

    # Long enough that the disk is surely full before it ends, even when the "running" ack
    # reaches the peer late on a loaded machine.
    cmd_id = peer.command("bench", bench=bench_spec(tiny_model, min_seconds=12.0))
    peer.wait_ack(cmd_id, "running")
    _fsize(agent, 0)  # the disk is full before the measurement ends
    assert agent.query("SELECT state FROM jobs ORDER BY seq DESC LIMIT 1") == [("running",)], (
        "the benchmark ended before the disk was full: the test cannot show anything"
    )
    wait_for(lambda: "cannot store the result of job" in agent.log_text(), "the logged error")
    assert "free space there" in agent.log_text()
    assert agent.proc.poll() is None  # the daemon is still up
    assert len(peer.results) == 1 and "done" not in peer.states(cmd_id)

    _fsize(agent, resource.RLIM_INFINITY)  # space is back
    peer.wait_ack(cmd_id, "done")
    wait_for(lambda: len(peer.results) == 2, "the kept result")
    (late,) = [r for r in peer.results.values() if r.cmd_id == cmd_id]
    assert late.status == "ok"
    assert agent.query("SELECT state, attempts FROM jobs ORDER BY seq") == [
        ("done", 1),
        ("done", 1),
    ]
    assert "stored after" in agent.log_text()
    assert agent.proc.poll() is None
