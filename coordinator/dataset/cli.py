"""`halo-coord dataset list | show | export | import`: measurements per search space and device
configuration, aggregated per arch, in and out."""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
from pathlib import Path

import click

from coordinator import plots
from coordinator.dataset import export as writers
from coordinator.dataset import importer
from coordinator.dataset.export import row_dict, rows_of
from coordinator.dataset.rows import Dataset, Row, resolve
from coordinator.dataset.select import load, measured_results
from coordinator.errors import UserError
from coordinator.farm_cli import json_option, store_option
from coordinator.render import table
from coordinator.store import Store
from coordinator.zoo.spaces import SPACES

MAX_PROBLEMS = 50
plot_option = click.option(
    "--plot",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    metavar="OUT.png",
    help="Also draw a PNG plot to this file (needs matplotlib).",
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _summary(d: Dataset) -> dict:
    lat = [r.figures.latency_p50_ms for r in d.rows]
    energy = [r.figures.energy_mj for r in d.rows if r.figures.energy_mj is not None]
    runs = [r.figures.n_runs for r in d.rows if r.origin == "measured" and r.figures.n_runs]
    return {
        "archs": len(d.rows),
        "measured_archs": d.n_measured,
        "imported_archs": d.n_imported,
        "imported_shadowed": d.n_shadowed,
        "results": d.n_results,
        "runs": sum(runs),
        "latency_p50_ms": {"min": min(lat), "median": statistics.median(lat), "max": max(lat)},
        "energy_mj": (
            {"min": min(energy), "median": statistics.median(energy), "max": max(energy)}
            if energy
            else None
        ),
        "origin": d.origin,
        "drift_flagged": d.drift_flagged,
    }


def _describe(d: Dataset) -> dict:
    k = d.key
    return {
        "id": d.id,
        "space": k.space,
        "dataset": k.dataset,
        "device": k.device,
        "runtime": k.runtime,
        "runtime_version": k.runtime_version,
        "threads": k.threads,
        "dtype": k.dtype,
        "delegate": k.delegate,
    }


def _load(store_path: Path | None, space: str | None, device: str | None) -> list[Dataset]:
    if space is not None and space not in SPACES:
        raise UserError(f"--space: unknown space {space!r} (spaces: {', '.join(SPACES)})")
    with Store(store_path) as store:
        return load(store, space=space, device=device)


@click.group()
def dataset() -> None:
    """Datasets: the measurements of one search space on one device configuration
    (space/dataset/device/runtime-version/threads/dtype/delegate), one row per arch.

    \b
    Example:
      halo-coord dataset list
      halo-coord dataset export --format csv --out farm.csv
    """


@dataset.command("list")
@click.option("--space", help="Only datasets of this search space.")
@click.option("--device", help="Only datasets of this device.")
@plot_option
@store_option
@json_option
def list_(
    space: str | None,
    device: str | None,
    plot: Path | None,
    store_path: Path | None,
    as_json: bool,
) -> None:
    """Every dataset: its id, archs, results, where its rows come from, canary drift.

    \b
    Example:
      halo-coord dataset list --space nb201 --plot latency.png
    """
    datasets = _load(store_path, space, device)
    if plot is not None and datasets:
        groups = {d.id: [r.figures.latency_p50_ms for r in d.rows] for d in datasets}
        plots.latency_distribution(groups, plot, "p50 latency per arch, by dataset")
        click.echo(f"plot written to {plot}", err=True)
    if as_json:
        out = [{**_describe(d), **_summary(d)} for d in datasets]
        click.echo(json.dumps(out, indent=2))
        return
    if not datasets:
        click.echo("no datasets (measure models of the zoo, or `halo-coord dataset import`)")
        return
    click.echo(
        table(
            ["dataset", "archs", "results", "origin", "drift"],
            [
                [d.id, len(d.rows), d.n_results, d.origin, "FLAGGED" if d.drift_flagged else "-"]
                for d in datasets
            ],
        )
    )


def _arch_of(d: Dataset, text: str) -> Row:
    try:
        arch = SPACES[d.key.space].canonical(text)
    except ValueError as exc:
        raise UserError(f"--arch: {exc}") from None
    for r in d.rows:
        if r.arch == arch:
            return r
    raise UserError(f"--arch: {arch} is not in dataset {d.id}")


def rows_table(rows: list[Row]) -> str:
    energy = any(r.figures.energy_mj is not None for r in rows)
    header = ["arch", "index", "p50 ms", "p90 ms", "mean ms", "std ms", "rep cv", "runs", "res"]
    header += ["mJ/inf", "energy"] if energy else []
    header += ["origin", "drift"]
    lines = []
    for r in rows:
        f = r.figures
        line = [
            r.arch,
            "-" if r.index is None else r.index,
            _ms(f.latency_p50_ms),
            _ms(f.latency_p90_ms),
            _ms(f.latency_mean_ms),
            _ms(f.latency_std_ms),
            "-" if f.latency_rep_cv is None else f"{f.latency_rep_cv:.1%}",
            f.n_runs or "-",
            f.n_results or "-",
        ]
        if energy:
            line += [_ms(f.energy_mj), f.energy_method or "-"]
        line += [r.origin, {True: "FLAGGED", False: "-", None: "?"}[r.drift_flagged]]
        lines.append(line)
    return table(header, lines)


@dataset.command()
@click.argument("dataset_id", metavar="ID")
@click.option(
    "--limit", type=click.IntRange(0), default=20, show_default=True, help="Rows to show."
)
@click.option("--arch", help="Show this arch (canonical encoding, or an nb201 index) in full.")
@plot_option
@store_option
@json_option
def show(
    dataset_id: str,
    limit: int,
    arch: str | None,
    plot: Path | None,
    store_path: Path | None,
    as_json: bool,
) -> None:
    """One dataset: configuration, counts, summary and its fastest archs; with --arch, one
    arch's figures and every result they come from.

    \b
    Example:
      halo-coord dataset show nb201/cifar10/pi4-01 --limit 10 --plot lat-vs-macs.png
      halo-coord dataset show nb201/cifar10/pi4-01 --arch 1462
    """
    with Store(store_path) as store:
        d = resolve(load(store), dataset_id)
        if arch is not None:
            row = _arch_of(d, arch)
            stored = [
                s
                for s in measured_results(store, space=d.key.space, device=d.key.device)
                if s.key == d.key and s.arch == row.arch
            ]
    if plot is not None:
        points = [(r.macs, r.figures.latency_p50_ms) for r in d.rows if r.macs]
        plots.latency_vs_macs({d.id: points}, plot, f"{d.id}: latency vs MACs")
        click.echo(f"plot written to {plot}", err=True)
    if arch is not None:
        _show_arch(d, row, stored, as_json)
        return
    rows = sorted(d.rows, key=lambda r: (r.figures.latency_p50_ms, r.index is None, r.arch))
    info = {**_describe(d), **_summary(d)}
    if as_json:
        click.echo(json.dumps({**info, "rows": [row_dict(r) for r in rows[:limit]]}, indent=2))
        return
    lat, energy = info["latency_p50_ms"], info["energy_mj"]
    lines = [
        f"dataset   {d.id}",
        f"space     {d.key.space} ({d.key.dataset})",
        f"device    {d.key.device}",
        f"runtime   {d.key.runtime} {d.key.runtime_version}".rstrip(),
        f"config    {d.key.threads} threads, {d.key.dtype}, delegate {d.key.delegate}",
        f"archs     {len(d.rows)} (measured {d.n_measured}, imported {d.n_imported}"
        + (f"; {d.n_shadowed} imported rows shadowed by measurements" if d.n_shadowed else "")
        + ")",
        f"results   {info['results']} ({info['runs']} runs)",
        f"p50 ms    min {_ms(lat['min'])}  median {_ms(lat['median'])}  max {_ms(lat['max'])}",
    ]
    if energy:
        lines.append(
            f"mJ/inf    min {_ms(energy['min'])}  median {_ms(energy['median'])}  "
            f"max {_ms(energy['max'])}"
        )
    lines.append(f"drift     {'FLAGGED by canaries' if d.drift_flagged else 'not flagged'}")
    click.echo("\n".join(lines))
    if limit:
        click.echo(f"\nfastest {min(limit, len(rows))} of {len(rows)}:")
        click.echo(rows_table(rows[:limit]))


def _show_arch(d: Dataset, row: Row, stored: list, as_json: bool) -> None:
    raw = [
        {
            "result_id": s.figures.result_id,
            "job_id": s.job_id,
            "p50_ms": s.figures.p50_ns / 1e6,
            "count": s.figures.count,
            "received_at": s.received_at,
            "campaign_id": s.campaign_id,
        }
        for s in stored
    ]
    if as_json:
        click.echo(json.dumps({"row": row_dict(row), "results": raw}, indent=2))
        return
    click.echo(f"dataset   {d.id}")
    click.echo(rows_table([row]))
    if not raw:
        click.echo("\nan imported row: no results of ours behind it")
        return
    click.echo("")
    click.echo(
        table(
            ["result", "job", "p50 ms", "runs", "received (UTC)"],
            [
                [
                    x["result_id"],
                    x["job_id"],
                    _ms(x["p50_ms"]),
                    x["count"] or "-",
                    _iso(x["received_at"]),
                ]
                for x in raw
            ],
        )
    )


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@dataset.command("export")
@click.argument("dataset_ids", nargs=-1, metavar="[ID ...]")
@click.option(
    "--format", "fmt", type=click.Choice(writers.FORMATS), required=True, help="Output format."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="File to write (default: standard output; parquet needs a file).",
)
@click.option("--space", help="Only datasets of this search space.")
@click.option("--device", help="Only datasets of this device.")
@store_option
def export_(
    dataset_ids: tuple[str, ...],
    fmt: str,
    out: Path | None,
    space: str | None,
    device: str | None,
    store_path: Path | None,
) -> None:
    """Datasets as one row per (dataset, arch): CSV, Parquet, JSON Lines (with the result ids
    behind each row) or HW-NAS-Bench-style JSON ({space: {dataset: {arch, index,
    <device>_latency, <device>_energy}}}). No ID: every dataset that matches the filters.

    \b
    Example:
      halo-coord dataset export --format csv --space nb201 --out nb201.csv
      halo-coord dataset export nb201/cifar10/pi4-01 --format parquet --out pi4.parquet
    """
    if fmt == "parquet" and out is None:
        raise UserError("--format parquet writes a binary file: give --out FILE.parquet")
    datasets = _load(store_path, space, device)
    if dataset_ids:
        chosen = {d.id: d for d in (resolve(datasets, i) for i in dataset_ids)}
        datasets = sorted(chosen.values(), key=lambda d: d.id)
    if not datasets:
        raise UserError("no dataset matches; `halo-coord dataset list` shows what there is")
    rows = rows_of(datasets)
    if fmt == "parquet":
        writers.write_parquet(rows, out)
    else:
        write = {"csv": writers.write_csv, "jsonl": writers.write_jsonl}.get(
            fmt, writers.write_hwnas
        )
        if out is None:
            write(rows, sys.stdout)
            return
        try:
            with open(out, "w", newline="", encoding="utf-8") as fh:
                write(rows, fh)
        except OSError as exc:
            raise UserError(f"cannot write {out}: {exc.strerror}") from None
    click.echo(f"{len(rows)} rows of {len(datasets)} datasets written to {out}", err=True)


@dataset.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "layout",
    type=click.Choice([importer.AUTO, importer.LONG, importer.WIDE]),
    default=importer.AUTO,
    show_default=True,
    help="long: one row per device and arch; wide: index,arch_str|arch,<device columns>.",
)
@click.option("--space", help="Search space of a wide file (default: inferred), or of every row.")
@click.option(
    "--device-columns",
    metavar="A,B,...",
    help="Wide files: import only these device columns.",
)
@click.option("--skip-bad", is_flag=True, help="Import the good rows and report the bad ones.")
@store_option
@json_option
def import_(
    file: Path,
    layout: str,
    space: str | None,
    device_columns: str | None,
    skip_bad: bool,
    store_path: Path | None,
    as_json: bool,
) -> None:
    """Import latencies measured elsewhere: HELP's public NAS-Bench-201 and FBNet tables, other
    tools' tables, or our own CSV export. Every bad row is reported as FILE:LINE: column:
    message, and nothing is imported unless --skip-bad. A re-import replaces the rows it
    repeats; an arch we measured ourselves keeps our numbers. Counts per device: imported
    (new), replaced, skipped.

    \b
    Example:
      halo-coord dataset import shared/data/nb201/latency_ms.csv --device-columns pixel3
      halo-coord dataset import farm.csv --skip-bad
    """
    columns = None
    if device_columns is not None:
        columns = [c.strip() for c in device_columns.split(",") if c.strip()]
        if not columns:
            raise UserError("--device-columns: give one or more column names, comma separated")
    with Store(store_path) as store:
        parsed = importer.parse(file, layout=layout, space=space, device_columns=columns)
        if parsed.ignored:
            click.echo(f"note: ignored columns: {', '.join(parsed.ignored)}", err=True)
        if parsed.problems and not skip_bad:
            _problems(file, parsed.problems, "error")
            click.echo(
                f"halo-coord: error: nothing imported: {len(parsed.problems)} problems; fix "
                "them, or pass --skip-bad to import the good rows",
                err=True,
            )
            sys.exit(2)
        counts = importer.write(store, parsed.rows, file.name)
    for device, n in parsed.skipped.items():
        counts.setdefault(device, importer.Counts()).skipped = n
    if parsed.problems:
        _problems(file, parsed.problems, "skipped")
    devices = sorted(counts)
    totals = importer.Counts(
        sum(counts[d].imported for d in devices),
        sum(counts[d].replaced for d in devices),
        sum(counts[d].skipped for d in devices),
    )
    if as_json:
        out = {
            "source": file.name,
            "format": parsed.layout,
            "devices": {d: counts[d].to_dict() for d in devices},
            "total": totals.to_dict(),
            "problems": [p.render(file) for p in parsed.problems],
        }
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(
        table(
            ["device", "imported", "replaced", "skipped"],
            [[d, counts[d].imported, counts[d].replaced, counts[d].skipped] for d in devices]
            + [["total", totals.imported, totals.replaced, totals.skipped]],
        )
    )


def _problems(file: Path, problems: list[importer.Problem], label: str) -> None:
    for p in problems[:MAX_PROBLEMS]:
        click.echo(f"halo-coord: {label}: {p.render(file)}", err=True)
    if len(problems) > MAX_PROBLEMS:
        click.echo(f"halo-coord: {label}: ... and {len(problems) - MAX_PROBLEMS} more", err=True)
