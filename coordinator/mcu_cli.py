"""`halo-coord mcu bench`: benchmark an MCU device under test attached to a board of the farm.

The command names the DUT as the board's agent config does (`[[mcu.duts]]`, listed in the
board's caps as `mcu_duts`); the agent runs the MLPerf Tiny rules and its result is stored like
any benchmark (`halo-coord results`).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from coordinator import farm
from coordinator.connect import BrokerTarget, resolve_broker
from coordinator.dispatch import Controller, new_command
from coordinator.errors import UserError
from coordinator.farm_cli import broker_option, json_option, results_table, store_option
from coordinator.store import ResultRow, Store
from protocol import McuSpec, ProtocolError


def mcu_spec(dut: str, windows: int, min_window_s: float, warmups: int, power: str) -> McuSpec:
    spec = McuSpec(dut=dut, windows=windows, min_window_s=min_window_s, warmups=warmups,
                   power=power)  # fmt: skip
    try:
        McuSpec.from_dict(spec.to_dict(), "mcu")  # the protocol's own checks, as the agent's
    except ProtocolError as exc:
        option = exc.field.split(".")[-1].replace("_", "-")
        raise UserError(f"--{option}: {exc.reason}") from None
    return spec


def check_duts(store: Store, devices: list[str], dut: str) -> None:
    """Every chosen device must list the DUT in its caps (a command to a board without it is
    rejected anyway, but after a round trip)."""
    caps = {d.device: (d.caps or {}) for d in store.devices()}
    for dev in devices:
        known = caps.get(dev, {}).get("mcu_duts") or []
        if dut not in known:
            raise UserError(
                f"device {dev} has no DUT {dut!r} (its caps list: {', '.join(known) or 'none'}; "
                "DUTs are [[mcu.duts]] entries of the board's agent config)"
            )


def run_mcu(
    store: Store, broker: BrokerTarget, targets: list[str], spec: McuSpec, timeout_s: float
) -> tuple[list[ResultRow], int]:
    """Send the mcu command to each target and wait: (the stored results, how many were
    sent). Rejections are reported on stderr."""
    with Controller(store, broker) as controller:
        cmd_ids = []
        for dev in targets:
            command = new_command("mcu", mcu=spec)
            controller.send(dev, command)
            cmd_ids.append(command.cmd_id)
        jobs = farm.wait_for(store, broker, cmd_ids, farm.FINAL, timeout_s)
    for j in jobs.values():
        if j.state in ("rejected", "cancelled"):
            click.echo(f"{j.device}: {j.state}: {j.reason or '-'}", err=True)
    return [r for c in cmd_ids for r in store.results(job=c)], len(cmd_ids)


@click.group()
def mcu() -> None:
    """MCU devices under test attached to the farm's boards."""


@mcu.command("bench")
@click.option("--device", "device_ids", multiple=True, help="Board the DUT is attached to.")
@click.option("--dut", required=True, help="The DUT's name in the board's [[mcu.duts]].")
@click.option("--windows", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--min-window-s", type=float, default=10.0, show_default=True)
@click.option("--warmups", type=click.IntRange(0, 1000), default=1, show_default=True)
@click.option(
    "--power",
    default="auto",
    show_default=True,
    help="Meter: auto (the DUT's configured one), none, or a meter name.",
)
@click.option("--wait-timeout", type=float, default=600.0, show_default=True)
@broker_option
@store_option
@json_option
def bench(
    device_ids: tuple[str, ...],
    dut: str,
    windows: int,
    min_window_s: float,
    warmups: int,
    power: str,
    wait_timeout: float,
    broker_url: str | None,
    store_path: Path | None,
    as_json: bool,
) -> None:
    """Benchmark DUT on each --device by the MLPerf Tiny rules and wait for the results.

    \b
    Example:
      halo-coord mcu bench --device pi4-01 --dut l4r5 --windows 5 --json
    """
    spec = mcu_spec(dut, windows, min_window_s, warmups, power)
    broker = resolve_broker(broker_url)
    with Store(store_path) as store:
        farm.sync(store, broker)
        targets = farm.select_devices(store, device_ids, ())
        check_duts(store, targets, dut)
        rows, expected = run_mcu(store, broker, targets, spec, wait_timeout)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        click.echo(results_table(rows))
    if len(rows) < expected or any(r.status != "ok" for r in rows):
        raise SystemExit(1)
