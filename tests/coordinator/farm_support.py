"""A farm of several real agents on this machine for end-to-end tests: each `halo-agent run`
process has its own device id, state directory and (optionally) simulated power board, and all
talk to one real mosquitto. `halo-coord` runs as a subprocess, as a user would run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from power.simboard import SimBoard

FAST_BENCH = """
[bench]
threads = [1]
warmup_runs = 1
warmup_seconds = 0.0
min_runs = 3
min_seconds = 0.0
"""


def coord(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coordinator", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env},
    )


def coord_popen(*args: str, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "coordinator", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )


class LocalAgent:
    def __init__(
        self,
        root: Path,
        device: str,
        broker_url: str,
        board: str | None = None,
        extra_env: dict | None = None,
        extra_config: str = "",
    ):
        self.device = device
        self.root = root / device
        self.root.mkdir(parents=True, exist_ok=True)
        self.sim = None
        power = ""
        if board is not None:
            self.sim = SimBoard(str(self.root / "board"), board).create()
            power = f'\n[power]\nsysfs_root = "{self.sim.root}"\n'
        self.config = self.root / "agent.toml"
        self.config.write_text(
            f'device_id = "{device}"\nstate_dir = "{self.root / "state"}"\nheartbeat_s = 1\n'
            f'tags = ["ci"]\n\n[broker]\nurl = "{broker_url}"\n{power}{extra_config}'
        )
        self.log = self.root / "agent.log"
        self.env = {**os.environ, **(extra_env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> LocalAgent:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from agent.cli import main; main()", "run"]
                + ["--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.sim is not None:
            self.sim.close()
            self.sim = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def wait_online(agents: list[LocalAgent], env: dict, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    want = {a.device for a in agents}
    while time.monotonic() < deadline:
        out = coord("devices", "--json", env=env)
        assert out.returncode == 0, out.stderr
        online = {d["device"] for d in json.loads(out.stdout) if d["health"] == "online"}
        if want <= online:
            return
        for a in agents:
            assert a.alive(), a.log.read_text()[-2000:]
        time.sleep(0.5)
    raise AssertionError(f"agents not online: {want - online}")
