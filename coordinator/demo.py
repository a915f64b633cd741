"""`halo-coord demo`: a whole farm on this machine, end to end.

A private mosquitto on a free loopback port, this machine as the device (a `halo-agent run`
subprocess), a small campaign of NAS-Bench-201 models from the zoo, run through the broker
exactly as on a real board, the resulting dataset table and a PNG plot, and everything stopped
again.

Energy comes from a simulated board (:mod:`power.simboard`, a Jetson TX2 by default): its INA3221
sysfs tree is written under the demo directory and its total rail follows the CPU load of the
agent and its benchmark child, so the agent's real readers and sampler measure it. Those figures
are labelled ``simulated`` everywhere they appear.

With ``--mcu`` the agent also gets an MLPerf Tiny device under test and a PPK2 meter, both the
protocol-faithful fakes of :mod:`firmware_bridge` (``fake-dut://``, ``fake-ppk2://`` on one fake
supply), and the demo ends with an ``mcu`` job through the broker.
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

from coordinator import farm
from coordinator.broker import BrokerConfig, ManagedBroker
from coordinator.campaign import session
from coordinator.campaign.canary import drift
from coordinator.campaign.cli import LiveProgress
from coordinator.connect import BrokerTarget
from coordinator.dataset.cli import rows_table
from coordinator.dataset.select import load
from coordinator.errors import UserError
from coordinator.farm_cli import results_table
from coordinator.mcu_cli import mcu_spec, run_mcu
from coordinator.store import Store
from power.boards import rail_policy
from power.simboard import LAYOUTS, Driver, FollowLoad, SimBoard, rail_names

AGENT_START_TIMEOUT_S = 60.0
# Layouts with a total-power rule (the Pi's needs rail names from its config).
DEMO_BOARDS = tuple(k for k in LAYOUTS if rail_policy(rail_names(k)).total)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_device_id() -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "host"
    return f"local-{name}"[:64]


# The simulated board's total rail: its idle power, plus this much per busy CPU.
BUSY_EXTRA_MW = 4000.0
DEMO_IDLE_S = 1.0
DEMO_ENERGY_S = 2.0


DEMO_DUT = "kws-demo"
DEMO_INFER_US = 1800


def mcu_config(device: str) -> str:
    """A fake DUT and a fake PPK2 sharing one fake supply, as [[power.meters]]/[[mcu.duts]]."""
    board = f"demo-{device}"
    return (
        "\n[[power.meters]]\n"
        f'name = "ppk2-demo"\nkind = "ppk2"\nurl = "fake-ppk2://?board={board}"\n'
        "\n[[mcu.duts]]\n"
        f'name = "{DEMO_DUT}"\nmeter = "ppk2-demo"\n'
        f'url = "fake-dut://kws01?board={board}&infer_us={DEMO_INFER_US}"\n'
    )


def agent_config(
    root: Path, device: str, broker_url: str, board: Path | None, mcu: bool = False
) -> str:
    text = (
        f'device_id = "{device}"\n'
        f'state_dir = "{root / "agent"}"\n'
        "heartbeat_s = 2\n"
        'tags = ["demo"]\n\n'
        "[broker]\n"
        f'url = "{broker_url}"\n'
    )
    if board is not None:
        text += f'\n[power]\nsysfs_root = "{board}"\n'
    return text + (mcu_config(device) if mcu else "")


@contextmanager
def simulated_board(root: Path, layout: str):
    """A board tree under root/board; yields (root, start(pid)) where start makes the total
    rails follow the CPU load of process ``pid`` and its children until the demo ends."""
    sim = SimBoard(str(root / "board"), layout).create()
    total = rail_policy(sim.rails()).total
    drivers = []

    def start(pid: int) -> None:
        waves = {
            rail: FollowLoad(pid, sim.actual(rail), sim.actual(rail) + BUSY_EXTRA_MW / len(total))
            for rail in total
        }
        drivers.append(Driver(sim.root, layout, waves).start())

    try:
        yield Path(sim.root), start
    finally:
        for driver in drivers:
            driver.stop()
        sim.close()


@contextmanager
def running_broker(root: Path):
    broker = ManagedBroker(root / "broker")
    status = broker.start(BrokerConfig(state_dir=root / "broker", port=free_port()))
    try:
        yield BrokerTarget(status.host or "127.0.0.1", status.port)
    finally:
        broker.stop()


@contextmanager
def running_agent(
    root: Path, device: str, broker: BrokerTarget, board: Path | None, mcu: bool = False
):
    config = root / "agent.toml"
    config.write_text(agent_config(root, device, broker.url, board, mcu), encoding="utf-8")
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


def campaign_text(device: str, n_models: int, seed: int, timing: dict, energy: bool) -> str:
    """A small campaign: n nb201 models, one canary measured first and last."""
    lines = [
        'name = "demo"',
        "repetitions = 1",
        "",
        "[devices]",
        f'ids = ["{device}"]',
        "",
        "[models]",
        f'zoo = {{ space = "nb201", sample = {n_models}, seed = {seed}, dataset = "cifar10" }}',
        "",
        "[bench]",
        "threads = [1]",
        *(f"{k} = {v!r}" for k, v in timing.items()),
        f"energy = {str(energy).lower()}",
    ]
    if energy:
        lines += [f"idle_seconds = {DEMO_IDLE_S}", f"energy_seconds = {DEMO_ENERGY_S}"]
    lines += ["", "[canary]", "models = 1", f"every = {n_models}", ""]
    return "\n".join(lines)


def plot_dataset(datasets, out: Path) -> Path | None:
    """Latency against MACs of the demo's dataset; None (with a note) without matplotlib."""
    from coordinator import plots

    points = {
        d.key.device: [(r.macs, r.figures.latency_p50_ms) for r in d.rows if r.macs]
        for d in datasets
    }
    try:
        return plots.latency_vs_macs(points, out, "halofarm demo: nb201 p50 latency vs MACs")
    except UserError as exc:
        click.echo(f"note: no plot: {exc}", err=True)
        return None


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
@click.option(
    "--board",
    type=click.Choice(DEMO_BOARDS),
    default="tx2-jp4",
    show_default=True,
    help="Simulated board whose INA3221 rails the agent reads.",
)
@click.option("--no-power", is_flag=True, help="Latency only: no simulated board, no energy.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("halofarm-demo.png"),
    show_default=True,
    help="Where to write the latency-vs-MACs plot of the dataset.",
)
@click.option(
    "--mcu",
    is_flag=True,
    help="Also benchmark a fake MLPerf Tiny MCU with a fake PPK2 meter (labelled simulated).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the dataset and results as JSON.")
def demo(
    n_models: int,
    seed: int,
    min_runs: int,
    min_seconds: float,
    keep: Path | None,
    board: str,
    no_power: bool,
    plot: Path,
    mcu: bool,
    as_json: bool,
) -> None:
    """Run a one-machine farm end to end: a private broker on a free loopback port, this
    machine as the device, a small campaign of nb201 models run through the broker, with energy
    from a simulated board whose power follows the agent's CPU load (labelled "simulated");
    ends with the dataset table and a PNG plot.

    \b
    Example:
      halo-coord demo --models 5 --keep demo-farm/
      halo-coord demo --board orin-nx-jp5 --json
      halo-coord demo --mcu
    """
    say = (lambda *_: None) if as_json else (lambda m: click.echo(m, err=True))
    started = time.monotonic()
    with ExitStack() as stack:
        if keep is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="halofarm-demo-")))
        else:
            root = keep.resolve()
            root.mkdir(parents=True, exist_ok=True)
        device = demo_device_id()
        broker = stack.enter_context(running_broker(root))
        say(f"broker   {broker.url} (state in {root / 'broker'})")
        board_root = None
        if not no_power:
            board_root, follow = stack.enter_context(simulated_board(root, board))
        proc, log_path = stack.enter_context(running_agent(root, device, broker, board_root, mcu))
        say(f"agent    {device}, pid {proc.pid} (log {log_path})")
        if board_root is not None:
            follow(proc.pid)
            say(f"board    simulated {board} in {board_root}, power following pid {proc.pid}")
        store = stack.enter_context(Store(root / "store.sqlite"))
        wait_online(store, broker, device, proc, log_path)
        file = root / "demo-campaign.toml"
        timing = {"min_runs": min_runs, "min_seconds": min_seconds}
        file.write_text(campaign_text(device, n_models, seed, timing, not no_power))
        record = session.start(store, file, time.time())
        say(f"campaign {record.campaign_id}: {n_models} nb201 cifar10 float32 models + a canary "
            f"({file})")  # fmt: skip
        session.drive(store, broker, [record.campaign_id], None if as_json else LiveProgress())
        mcu_rows: list = []
        if mcu:
            say(f"mcu      {DEMO_DUT}: MLPerf Tiny rules, 3 windows of >= 1 s, fake PPK2 meter")
            spec = mcu_spec(DEMO_DUT, 3, 1.0, 1, "auto")
            mcu_rows, _ = run_mcu(store, broker, [device], spec, 120.0)
        datasets = load(store)
        drifts = drift(store, record.campaign_id)
        results = store.results()
        failed = [r for r in results if r.status != "ok"]
        written = None if as_json else plot_dataset(datasets, plot)
    if as_json:
        click.echo(json.dumps({
            "campaign_id": record.campaign_id,
            "datasets": [{"id": d.id, "rows": [r.values() for r in d.rows]} for d in datasets],
            "results": [r.to_dict() for r in results],
        }, indent=2))  # fmt: skip
    else:
        for d in datasets:
            click.echo(f"\ndataset {d.id}")
            click.echo(rows_table(d.rows))
        for d in drifts:
            if d.flagged:
                click.echo(f"drift: {d.device}'s canary p50 moved {d.max_abs_drift:.1%} between "
                           f"its measurements (threshold {d.threshold:.0%}): its rows are "
                           "flagged")  # fmt: skip
        if mcu:
            click.echo(f"\nmcu {DEMO_DUT} (fake DUT, {DEMO_INFER_US} us per inference)")
            click.echo(results_table(mcu_rows))
        if written is not None:
            click.echo(f"\nplot: {written}")
        say(f"demo took {time.monotonic() - started:.0f} s")
    if failed or (mcu and not mcu_rows):
        sys.exit(1)
