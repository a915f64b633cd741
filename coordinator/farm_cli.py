"""`halo-coord devices | bench | results | export`: the farm from the command line."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from coordinator import farm
from coordinator.connect import BrokerTarget, resolve_broker
from coordinator.dispatch import Controller
from coordinator.errors import UserError
from coordinator.registry import clock_warning, device_table
from coordinator.render import table
from coordinator.store import RESULT_COLUMNS, ResultRow, Store, is_postgres
from protocol.bodies import BenchSpec
from protocol.errors import ProtocolError

broker_option = click.option(
    "--broker",
    "broker_url",
    metavar="URL",
    help="mqtt://HOST:PORT (default: $HALOFARM_BROKER_URL, else the managed broker).",
)


def _store_target(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | Path | None:
    """A postgresql:// URL as given (a Path would fold its //), else the SQLite file's Path."""
    if value is None or is_postgres(value):
        return value
    path = Path(value)
    if path.is_dir():
        raise click.BadParameter(f"{value} is a directory; give the store file", ctx, param)
    return path


store_option = click.option(
    "--store",
    "store_path",
    metavar="FILE|URL",
    callback=_store_target,
    help="Store: a SQLite file or postgresql://USER@HOST:PORT/DB (default: $HALOFARM_STORE, "
    "else a file in the user data directory).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _ms(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1e6:.3f}"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def results_table(rows: list[ResultRow]) -> str:
    """One line per result; energy columns (mJ per inference total and dynamic, mean power,
    and how it was known: measured / simulated / model) when any result has them."""
    energy = any(r.energy_method is not None for r in rows)
    header = [
        "device",
        "model",
        "status",
        "p50 ms",
        "p90 ms",
        "mean ms",
        "cv",
        "runs",
        "thr",
        "xnn",
    ]
    if energy:
        header += ["mJ/inf", "dyn mJ/inf", "mean mW", "energy"]
    lines = []
    for r in rows:
        line = [
            r.device,
            r.model_name,
            r.status if r.status == "ok" else f"{r.status}: {(r.reason or '')[:60]}",
            _ms(r.p50_ns),
            _ms(r.p90_ns),
            _ms(r.mean_ns),
            "-" if r.cv is None else f"{r.cv:.1%}",
            r.count if r.count is not None else "-",
            r.threads,
            "on" if r.xnnpack else "off",
        ]
        if energy:
            line += [
                _num(r.e_per_inference_mj, ".4g"),
                _num(r.e_dyn_per_inference_mj, ".4g"),
                _num(r.p_mean_mw, ".0f"),
                r.energy_method or "-",
            ]
        lines.append(line)
    return table(header, lines)


@click.command()
@broker_option
@store_option
@json_option
def devices(broker_url: str | None, store_path: Path | None, as_json: bool) -> None:
    """Devices that have connected: health (online/stale/offline), board, runtime, load.

    \b
    Example:
      halo-coord devices --json
    """
    broker = resolve_broker(broker_url)
    with Store(store_path) as store:
        farm.sync(store, broker)
        rows = device_table(store.devices(), time.time())
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo(f"no device has connected to {broker.url} yet")
        return
    click.echo(
        table(
            ["device", "health", "seen s", "board", "cores", "runtime", "xnn", "temp", "queue"],
            [
                [
                    r.device,
                    r.health,
                    "-" if r.last_seen_s is None else r.last_seen_s,
                    r.board or "-",
                    r.cores or "-",
                    r.runtime or "-",
                    {True: "yes", False: "no"}.get(r.xnnpack, "-"),
                    "-" if r.temp_max_c is None else f"{r.temp_max_c:.0f}C",
                    "-" if r.queue_depth is None else r.queue_depth,
                ]
                for r in rows
            ],
        )
    )
    for r in rows:
        if r.refusing_jobs:
            click.echo(f"{r.device} refuses new jobs: {r.refusing_jobs}")
        warning = clock_warning(r)
        if warning:
            click.echo(warning)


def spec_factory(**settings) -> Callable[[str, str], BenchSpec]:
    """spec_for(sha256, name) with the given settings, None meaning the protocol default."""
    given = {k: v for k, v in settings.items() if v is not None}

    def spec_for(sha: str, name: str) -> BenchSpec:
        try:
            spec = BenchSpec(model_sha256=sha, model_name=name[:128], **given)
            return BenchSpec.from_dict(spec.to_dict())
        except ProtocolError as exc:
            raise UserError(
                f"--{exc.field.split('.')[-1].replace('_', '-')}: {exc.reason}"
            ) from None

    return spec_for


@click.command()
@click.argument(
    "models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--device", "device_ids", multiple=True, metavar="ID", help="Device id (repeatable).")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Every device with this tag.")
@click.option("--threads", type=click.IntRange(1, 64), help="Interpreter threads (default 1).")
@click.option("--no-xnnpack", is_flag=True, help="Run without the XNNPACK delegate.")
@click.option("--seed", type=click.IntRange(0), help="Seed of the random inputs (default 0).")
@click.option("--warmup-runs", type=click.IntRange(0), help="At least this many warm-up runs.")
@click.option("--warmup-seconds", type=float, help="Warm up at least this long.")
@click.option("--min-runs", type=click.IntRange(1), help="Measure at least this many runs.")
@click.option("--min-seconds", type=float, help="Measure at least this long.")
@click.option("--max-seconds", type=float, help="Start no run after this long.")
@click.option("--timeout", type=float, help="The device kills a job after this many seconds.")
@click.option(
    "--power",
    metavar="auto|none|SOURCE",
    help="Measure energy with this source of each device (see caps); default none.",
)
@click.option("--idle-seconds", type=float, help="Idle baseline before each energy run.")
@click.option(
    "--energy-seconds",
    type=float,
    help="Energy window (default: max(10 s, 20 sensor time constants)).",
)
@click.option("--wait", is_flag=True, help="Wait for the results and print them.")
@click.option(
    "--wait-timeout", type=float, default=3600.0, show_default=True, help="Give up after (s)."
)
@broker_option
@store_option
@json_option
def bench(
    models: tuple[Path, ...],
    device_ids: tuple[str, ...],
    tags: tuple[str, ...],
    threads: int | None,
    no_xnnpack: bool,
    seed: int | None,
    warmup_runs: int | None,
    warmup_seconds: float | None,
    min_runs: int | None,
    min_seconds: float | None,
    max_seconds: float | None,
    timeout: float | None,
    power: str | None,
    idle_seconds: float | None,
    energy_seconds: float | None,
    wait: bool,
    wait_timeout: float,
    broker_url: str | None,
    store_path: Path | None,
    as_json: bool,
) -> None:
    """Benchmark MODELS on devices, through the broker; with --power, energy too.

    Without --wait it returns once every device has fetched its models (the commands and the
    results are queued by the broker either way; `halo-coord results` collects them later).

    \b
    Example:
      halo-coord bench --device pi4-01 --threads 1 --wait zoo/*.tflite
      halo-coord bench --tag tx2 --power auto --wait zoo/*.tflite
    """
    broker = resolve_broker(broker_url)
    spec_for = spec_factory(
        xnnpack=False if no_xnnpack else None,
        threads=threads,
        seed=seed,
        warmup_runs=warmup_runs,
        warmup_seconds=warmup_seconds,
        min_runs=min_runs,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        timeout_s=timeout,
        power=power,
        idle_seconds=idle_seconds,
        energy_seconds=energy_seconds,
    )
    spec_for("0" * 64, "options-check")  # a bad option is reported before anything is sent
    with Store(store_path) as store:
        farm.sync(store, broker)
        targets = farm.select_devices(store, device_ids, tags)
        rows = run_bench(
            store, broker, targets, list(models), spec_for, wait, wait_timeout, quiet=as_json
        )
    if rows is None:
        return
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        click.echo(results_table(rows))
    if any(r.status != "ok" for r in rows):
        sys.exit(1)


def run_bench(
    store: Store,
    broker: BrokerTarget,
    targets: list[str],
    models: list[Path],
    spec_for,
    wait: bool,
    wait_timeout: float,
    quiet: bool = False,
) -> list[ResultRow] | None:
    """Submit, serve the blobs, wait; the results when waiting, else None."""
    until = farm.FINAL if wait else farm.FETCHED
    with Controller(store, broker) as controller:
        submitted = farm.submit(store, controller, targets, models, spec_for)
        cmd_ids = [s.cmd_id for s in submitted]
        label = "benchmarking" if wait else "sending models"
        with click.progressbar(
            length=len(cmd_ids), label=label, file=sys.stderr, show_pos=True
        ) as bar:
            shown = 0

            def progress(done: int, jobs) -> None:
                nonlocal shown
                if not quiet and done > shown:
                    bar.update(done - shown)
                    shown = done

            jobs = farm.wait_for(store, broker, cmd_ids, until, wait_timeout, progress)
    late = [c for c in cmd_ids if c not in jobs or not farm.settled(store, jobs[c], until)]
    if late:
        raise UserError(
            f"{len(late)} of {len(cmd_ids)} jobs unfinished after {wait_timeout:g} s "
            "(they stay queued; `halo-coord results` collects them later)"
        )
    rejected = [j for j in jobs.values() if j.state in ("rejected", "cancelled")]
    for j in rejected:
        click.echo(f"{j.device}: job {j.cmd_id} {j.state}: {j.reason or '-'}", err=True)
    if not wait:
        click.echo(
            f"{len(cmd_ids)} jobs on {len(targets)} devices; collect with `halo-coord results`"
        )
        return None
    rows = [r for c in cmd_ids for r in store.results(job=c)]
    return rows


@click.command()
@click.option("--device", help="Only this device.")
@click.option("--model", help="Model name or sha256 prefix.")
@click.option("--job", help="Job or command id.")
@click.option("--limit", type=click.IntRange(1), help="At most this many (oldest first).")
@click.option("--no-sync", is_flag=True, help="Do not collect pending results from the broker.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a PNG of the power trace of the (first) matching result with energy.",
)
@broker_option
@store_option
@json_option
def results(
    device: str | None,
    model: str | None,
    job: str | None,
    limit: int | None,
    no_sync: bool,
    plot: Path | None,
    broker_url: str | None,
    store_path: Path | None,
    as_json: bool,
) -> None:
    """Stored results, after collecting any the broker holds for us.

    \b
    Example:
      halo-coord results --device pi4-01 --json
      halo-coord results --job 3f2a --plot power.png
    """
    with Store(store_path) as store:
        if not no_sync:
            farm.sync(store, resolve_broker(broker_url))
        rows = store.results(device=device, model=model, job=job, limit=limit)
    if plot is not None:
        plot_power_trace(rows, plot)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    elif rows:
        click.echo(results_table(rows))
    else:
        click.echo("no results")


def plot_power_trace(rows: list[ResultRow], out: Path) -> None:
    """The total-power trace of the first result that has one (idle baseline at t < 0)."""
    from coordinator.plots import power_trace

    for r in rows:
        energy = json.loads(r.payload).get("energy") or {}
        trace = energy.get("trace")
        if trace and trace.get("t_s"):
            method = energy.get("method", "?")
            title = f"{r.device} {r.model_name}: total power ({method})"
            power_trace(trace["t_s"], {"total": trace["total_mw"]}, out, title)
            click.echo(f"power trace of result {r.result_id} written to {out}", err=True)
            return
    raise UserError("no matching result has a power trace (measure with --power)")


@click.command()
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), required=True, help="Output format."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="File to write (default: standard output).",
)
@click.option("--device", help="Only this device.")
@click.option("--model", help="Model name or sha256 prefix.")
@store_option
def export(
    fmt: str, out: Path | None, device: str | None, model: str | None, store_path: Path | None
) -> None:
    """Every stored result: CSV (one flat row each) or JSON Lines (with the whole result:
    raw per-run times, environment before/after, op histogram).

    \b
    Example:
      halo-coord export --format csv --out results.csv
    """
    with Store(store_path) as store:
        rows = store.results(device=device, model=model)
    try:
        fh = open(out, "w", newline="", encoding="utf-8") if out else sys.stdout  # noqa: SIM115
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror}") from None
    try:
        if fmt == "csv":
            columns = [c for c in RESULT_COLUMNS if c != "payload"]
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for r in rows:
                writer.writerow(r.to_dict())
        else:
            for r in rows:
                fh.write(json.dumps(r.to_dict(with_payload=True), sort_keys=True) + "\n")
    finally:
        if out:
            fh.close()
    if out:
        click.echo(f"{len(rows)} results written to {out}", err=True)
