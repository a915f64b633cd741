"""`halo-coord analyze monotonicity`: how well devices agree on the latency ranking of a
space's archs, and which device is the best proxy for each target."""

from __future__ import annotations

import json
from pathlib import Path

import click

from coordinator import plots
from coordinator.analysis import features
from coordinator.analysis import monotonicity as mono
from coordinator.dataset.cli import plot_option
from coordinator.dataset.rows import Dataset
from coordinator.dataset.select import load
from coordinator.errors import UserError
from coordinator.farm_cli import json_option, store_option
from coordinator.render import table
from coordinator.store import Store
from coordinator.zoo.spaces import SPACES

NO_PARETO = (
    "pareto recovery '-': fewer than 3 archs of the pair have MACs (imported rows get MACs "
    "from the store's models, i.e. archs of the zoo)"
)


def select(datasets: list[Dataset], wanted: tuple[str, ...]) -> list[Dataset]:
    """The datasets whose device is one of `wanted`, or whose id equals or starts with one;
    all of them when nothing is wanted. Order: as given (by id)."""
    if not wanted:
        return datasets
    chosen: set[str] = set()
    for w in wanted:
        hits = [d.id for d in datasets if d.key.device == w or d.id.startswith(w)]
        if not hits:
            devices = sorted({d.key.device for d in datasets})
            raise UserError(
                f"--device: no dataset of device {w!r}; devices are {', '.join(devices) or '-'}"
            )
        chosen.update(hits)
    return [d for d in datasets if d.id in chosen]


def labels_of(datasets: list[Dataset]) -> list[str]:
    """The device names when each device has one dataset (readable), else the dataset ids."""
    devices = [d.key.device for d in datasets]
    return devices if len(set(devices)) == len(devices) else [d.id for d in datasets]


def latency_of(d: Dataset) -> dict[str, float]:
    return {r.arch: r.figures.latency_p50_ms for r in d.rows}


def macs_of(d: Dataset) -> dict[str, float]:
    """MACs stand in for accuracy (more MACs, taken as more accurate) until accuracy is
    stored: the zoo's own count where the store has the model, else, for nb201, the analytic
    count at CIFAR size (only the order matters for a Pareto front, and every op's MACs scale
    alike with the input size)."""
    known = {r.arch: float(r.macs) for r in d.rows if r.macs is not None}
    missing = [r.arch for r in d.rows if r.macs is None]
    if missing and d.key.space == "nb201":
        known.update(zip(missing, map(float, features.macs("nb201", missing)), strict=True))
    return known


def analyse(space: str, datasets: list[Dataset]) -> dict:
    """The monotonicity report (the --json document)."""
    labels = labels_of(datasets)
    series = {label: latency_of(d) for label, d in zip(labels, datasets, strict=True)}
    m = mono.matrices(series)
    by_label = dict(zip(labels, datasets, strict=True))
    best = {}
    for p in mono.proxies(m):
        recovery = None
        if p.proxy is not None:
            score = macs_of(by_label[p.target])  # the target's own models: its front counts
            recovery = mono.pareto_recovery(series[p.proxy], series[p.target], score)
        best[p.target] = {
            "proxy": p.proxy,
            "spearman": p.spearman,
            "kendall": p.kendall,
            "pareto_recovery": recovery,
        }
    return {
        "space": space,
        "labels": labels,
        "datasets": [d.id for d in datasets],
        "spearman": m.spearman,
        "kendall": m.kendall,
        "n": m.n,
        "best_proxy": best,
    }


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _matrix_table(labels: list[str], matrix: list[list[float | None]]) -> str:
    # Numbered columns: 19 device names as headers would make the table ~250 characters wide.
    header = ["#", "dataset" if "/" in labels[0] else "device"]
    header += [str(j + 1) for j in range(len(labels))]
    rows = [
        [i + 1, label, *map(_num, row)]
        for i, (label, row) in enumerate(zip(labels, matrix, strict=True))
    ]
    return table(header, rows)


def render(report: dict) -> str:
    labels = report["labels"]
    proxies = [
        [
            target,
            b["proxy"] or "-",
            _num(b["spearman"]),
            _num(b["kendall"]),
            "-" if b["pareto_recovery"] is None else f"{b['pareto_recovery']:.0%}",
        ]
        for target, b in report["best_proxy"].items()
    ]
    parts = [
        f"Spearman rank correlation of p50 latency, space {report['space']}:",
        _matrix_table(labels, report["spearman"]),
        "",
        "Kendall tau-b:",
        _matrix_table(labels, report["kendall"]),
        "",
        "Best proxy per target (highest Spearman; >= 0.9: reuse the proxy's search directly):",
        table(["target", "best proxy", "spearman", "kendall", "pareto recovery"], proxies),
    ]
    if any(b["proxy"] and b["pareto_recovery"] is None for b in report["best_proxy"].values()):
        parts.append(NO_PARETO)
    return "\n".join(parts)


@click.group()
def analyze() -> None:
    """Analyses across datasets (needs the `analysis` extra: pip install 'halofarm[analysis]').

    \b
    Example:
      halo-coord analyze monotonicity --space nb201 --plot srcc.png
    """


@analyze.command()
@click.option("--space", required=True, help="Search space whose datasets to compare.")
@click.option(
    "--device",
    "devices",
    multiple=True,
    help="Only this device's datasets (or datasets whose id starts with it); repeatable.",
)
@plot_option
@store_option
@json_option
def monotonicity(
    space: str, devices: tuple[str, ...], plot: Path | None, store_path: Path | None, as_json: bool
) -> None:
    """Latency monotonicity: pairwise Spearman and Kendall tau-b of the p50 latencies of the
    archs two datasets share, the best proxy device for each target and the share of the
    target's latency/MACs Pareto front that the proxy's front recovers (MACs stand in for
    accuracy: more MACs taken as more accurate).

    \b
    Example:
      halo-coord analyze monotonicity --space nb201 --device pixel3 --device samsung_s7 \\
          --device 1080ti_1 --plot srcc.png
    """
    if space not in SPACES:
        raise UserError(f"--space: unknown space {space!r} (spaces: {', '.join(SPACES)})")
    with Store(store_path) as store:
        datasets = select(load(store, space=space), devices)
    if len(datasets) < 2:
        raise UserError(
            f"monotonicity compares datasets: {len(datasets)} of space {space} selected, "
            "2 or more needed (`halo-coord dataset list` shows them)"
        )
    report = analyse(space, datasets)
    if plot is not None:
        plots.rank_heatmap(
            report["labels"], report["spearman"], plot, f"Spearman of p50 latency, {space}"
        )
        click.echo(f"plot written to {plot}", err=True)
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
