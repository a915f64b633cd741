"""`halo-coord demo`: a whole farm on this machine, end to end.

A private mosquitto on a free loopback port, this machine as the device (a `halo-agent run`
subprocess), a few NAS-Bench-201 models from the zoo, benchmarked through the broker exactly as
a real board would be, the results table, and everything stopped again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import click
import numpy as np

from coordinator import farm
from coordinator.broker import BrokerConfig, ManagedBroker
from coordinator.connect import BrokerTarget
from coordinator.errors import UserError
from coordinator.farm_cli import results_table, run_bench, spec_factory
from coordinator.store import Store
from coordinator.zoo.generate import Generator, make_spec
from coordinator.zoo.spaces import nb201

AGENT_START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_device_id() -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "host"
    return f"local-{name}"[:64]


def agent_config(root: Path, device: str, broker_url: str) -> str:
    return (
        f'device_id = "{device}"\n'
        f'state_dir = "{root / "agent"}"\n'
        "heartbeat_s = 2\n"
        'tags = ["demo"]\n\n'
        "[broker]\n"
        f'url = "{broker_url}"\n'
    )


@contextmanager
def running_broker(root: Path):
    broker = ManagedBroker(root / "broker")
    status = broker.start(BrokerConfig(state_dir=root / "broker", port=free_port()))
    try:
        yield BrokerTarget(status.host or "127.0.0.1", status.port)
    finally:
        broker.stop()


@contextmanager
def running_agent(root: Path, device: str, broker: BrokerTarget):
    config = root / "agent.toml"
    config.write_text(agent_config(root, device, broker.url), encoding="utf-8")
    log_path = root / "agent.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from agent.cli import main; main()", "run", "--config", config],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield proc, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_online(store: Store, broker: BrokerTarget, device: str, proc, log_path: Path) -> None:
    deadline = time.monotonic() + AGENT_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"the local agent exited ({proc.returncode}): {_log_tail(log_path)}")
        farm.sync(store, broker, idle_s=0.2, max_s=2.0)
        if any(d.device == device and d.status == "online" for d in store.devices()):
            return
        time.sleep(0.2)
    raise UserError(f"the local agent did not come online: {_log_tail(log_path)}")


def generate_models(out: Path, n: int, seed: int) -> list[Path]:
    archs = nb201.sample(np.random.default_rng(seed), n)
    paths = []
    with Generator(out) as gen:
        for arch in archs:
            row, _ = gen.add(make_spec("nb201", arch, dtype="float32", dataset="cifar10"))
            paths.append(out / row["file"])
    return paths


@click.command()
@click.option("--models", "n_models", type=click.IntRange(1, 200), default=5, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True, help="Arch sample.")
@click.option("--min-runs", type=click.IntRange(1), default=50, show_default=True)
@click.option("--min-seconds", type=float, default=1.0, show_default=True)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep broker state, store, agent state, models and logs here (default: removed).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def demo(
    n_models: int, seed: int, min_runs: int, min_seconds: float, keep: Path | None, as_json: bool
) -> None:
    """Run a one-machine farm end to end: a private broker on a free loopback port, this
    machine as the device, a few nb201 models benchmarked through the broker.

    \b
    Example:
      halo-coord demo --models 5 --keep demo-farm/
    """
    say = (lambda *_: None) if as_json else (lambda m: click.echo(m, err=True))
    with ExitStack() as stack:
        if keep is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="halofarm-demo-")))
        else:
            root = keep.resolve()
            root.mkdir(parents=True, exist_ok=True)
        device = demo_device_id()
        broker = stack.enter_context(running_broker(root))
        say(f"broker   {broker.url} (state in {root / 'broker'})")
        proc, log_path = stack.enter_context(running_agent(root, device, broker))
        say(f"agent    {device}, pid {proc.pid} (log {log_path})")
        models = generate_models(root / "models", n_models, seed)
        say(f"models   {len(models)} nb201 cifar10 float32 in {root / 'models'}")
        store = stack.enter_context(Store(root / "store.sqlite"))
        wait_online(store, broker, device, proc, log_path)
        spec_for = spec_factory(min_runs=min_runs, min_seconds=min_seconds)
        rows = run_bench(store, broker, [device], models, spec_for, True, 600.0, quiet=as_json)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        click.echo(results_table(rows))
    if any(r.status != "ok" for r in rows):
        sys.exit(1)
