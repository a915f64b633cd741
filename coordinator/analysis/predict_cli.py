"""`halo-coord predict`: few-shot latency prediction for an unseen target device from source
datasets in the store, and `halo-coord predict eval`: leave-target-out evaluation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import click

from coordinator.analysis import evaluate as ev
from coordinator.analysis import features as feat
from coordinator.analysis import predictors as pred
from coordinator.dataset.rows import Dataset, resolve
from coordinator.dataset.select import load
from coordinator.errors import UserError
from coordinator.farm_cli import json_option, store_option
from coordinator.render import table
from coordinator.store import Store
from coordinator.zoo.spaces.common import ArchError

HEADER = ["arch", "latency_ms"]
OUT_HEADER = ["arch", "latency_ms", "lo_ms", "hi_ms"]


def find_dataset(datasets: list[Dataset], name: str, option: str) -> Dataset:
    """The one dataset of device `name`, else the dataset whose id is or starts with `name`."""
    hits = [d for d in datasets if d.key.device == name]
    if len(hits) == 1:
        return hits[0]
    if hits:
        ids = ", ".join(d.id for d in hits)
        raise UserError(f"{option}: device {name!r} has several datasets ({ids}); give the id")
    try:
        return resolve(datasets, name)
    except UserError as exc:
        devices = sorted({d.key.device for d in datasets})
        raise UserError(
            f"{option}: {exc}; devices are {', '.join(devices) or '-'}".replace("\n", " ")
        ) from None


def latencies(d: Dataset) -> dict[str, float]:
    return {
        r.arch: float(r.figures.latency_p50_ms)
        for r in d.rows
        if r.figures.latency_p50_ms is not None
    }


def load_sources(
    store_path: Path | None, space: str, names: tuple[str, ...], target: str | None = None
) -> tuple[dict[str, dict[str, float]], dict[str, float] | None]:
    if not names:
        raise UserError("--source: at least one source device is needed")
    with Store(store_path) as store:
        datasets = load(store, space=space)
    sources: dict[str, dict[str, float]] = {}
    chosen_ids = set()
    for name in names:
        d = find_dataset(datasets, name, "--source")
        if d.id in chosen_ids:
            raise UserError(f"--source: {name!r} is given twice ({d.id})")
        chosen_ids.add(d.id)
        sources[name] = latencies(d)
    target_lat = None
    if target is not None:
        t = find_dataset(datasets, target, "--target")
        if t.id in chosen_ids:
            raise UserError(f"--target {target!r} is also a --source; leave it out of the sources")
        target_lat = latencies(t)
    return sources, target_lat


def load_table(store_path: Path | None, name: str | None) -> dict[str, float] | None:
    """The target's per-layer lookup table: op arch -> ms from an `op`-space dataset."""
    if name is None:
        return None
    with Store(store_path) as store:
        datasets = load(store, space="op")
    return latencies(find_dataset(datasets, name, "--lut"))


def _arch(space: str, text: str, where: str) -> str:
    try:
        return feat.canonical(space, text)
    except ArchError as exc:
        raise UserError(f"{where}: {exc}") from None


def read_samples(path: Path, space: str) -> dict[str, float]:
    """TARGET.csv (header arch,latency_ms) -> {canonical arch: ms}; every problem is a
    one-line UserError naming the line."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            records = list(csv.reader(f))
    except OSError as exc:
        raise UserError(f"--samples: cannot read {path}: {exc.strerror}") from None
    records = [(n, r) for n, r in enumerate(records, start=1) if any(c.strip() for c in r)]
    if not records:
        raise UserError(f"{path}: empty file; expected the header arch,latency_ms and samples")
    n, header = records[0]
    if [h.strip() for h in header] != HEADER:
        raise UserError(f"{path}:{n}: header must be arch,latency_ms, got {','.join(header)}")
    if len(records) == 1:
        raise UserError(f"{path}: no samples after the header")
    out: dict[str, float] = {}
    for n, rec in records[1:]:
        if len(rec) != 2:
            raise UserError(f"{path}:{n}: expected 2 fields (arch,latency_ms), got {len(rec)}")
        arch = _arch(space, rec[0], f"{path}:{n}")
        try:
            ms = float(rec[1])
        except ValueError:
            raise UserError(f"{path}:{n}: latency_ms {rec[1]!r} is not a number") from None
        if not math.isfinite(ms) or ms <= 0:
            raise UserError(f"{path}:{n}: latency_ms must be finite and positive, got {rec[1]}")
        if arch in out:
            raise UserError(f"{path}:{n}: duplicate arch {arch} (each arch once)")
        out[arch] = ms
    if len(out) < pred.MIN_SAMPLES:
        raise UserError(f"{path}: {len(out)} samples; at least {pred.MIN_SAMPLES} are needed")
    return out


def read_archs(path: Path, space: str) -> list[str]:
    """QUERY.txt: one arch per line (blank lines skipped) -> canonical archs, in order."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"--archs: cannot read {path}: {exc.strerror}") from None
    archs = [_arch(space, t, f"{path}:{n}") for n, t in enumerate(lines, start=1) if t.strip()]
    if not archs:
        raise UserError(f"{path}: empty file; expected one arch per line")
    return archs


METHOD = click.Choice(pred.ALL_METHODS)


def _check_lut(method: str | None, lut_name: str | None) -> None:
    if lut_name is not None and method not in (None, "lut", "auto"):
        raise UserError(f"--lut is used by --method lut and auto, not {method}")


lut_option = click.option(
    "--lut",
    "lut_name",
    metavar="DATASET",
    help="The target's per-layer lookup table for --method lut (and auto): the dataset of the "
    "single-block models written by `halo-coord zoo lut` measured on the target (device name, "
    "or dataset id or a unique prefix of it). Example: --lut tx2-01",
)


@click.group(invoke_without_command=True)
@click.option("--space", help="Search space: nb201 or fbnet. Example: --space nb201")
@click.option(
    "--source",
    "sources",
    multiple=True,
    help="Source dataset in the store (device name, or dataset id or a unique prefix of it); "
    "repeatable. Example: --source pixel3 --source gold_6240",
)
@click.option(
    "--samples",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CSV of the k measured target archs, header arch,latency_ms (arch: canonical "
    "encoding or NB201 index). Example: --samples target.csv",
)
@click.option(
    "--archs",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Text file of the archs to predict, one per line (blank lines skipped). "
    "Example: --archs query.txt",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the predictions: header arch,latency_ms,lo_ms,hi_ms, one row per "
    "query line in order. Example: --out pred.csv",
)
@click.option(
    "--method",
    type=METHOD,
    default="auto",
    show_default=True,
    help="Predictor. Example: --method nnls",
)
@lut_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed. Example: --seed 1")
@click.option(
    "--suggest",
    type=click.IntRange(1, 1000),
    help="Also print the N query archs to measure next, where the help model is least sure "
    "(active sampling), one per line on stdout. Example: --suggest 5 > next.txt",
)
@store_option
@click.pass_context
def predict(
    ctx: click.Context,
    space: str | None,
    sources: tuple[str, ...],
    samples: Path | None,
    archs: Path | None,
    out: Path | None,
    method: str,
    lut_name: str | None,
    seed: int,
    suggest: int | None,
    store_path: Path | None,
) -> None:
    """Predict an unseen target device's latencies from source datasets in the store and k
    measured target samples; every prediction has a nominal 90 % interval.

    \b
    Example:
      halo-coord predict --space nb201 --source pixel3 --source gold_6240 \\
          --samples target.csv --archs query.txt --out pred.csv --method auto --seed 0
      halo-coord predict --space fbnet --method lut --lut tx2-01 \\
          --samples target.csv --archs query.txt --out pred.csv
      halo-coord predict eval --space nb201 --target pixel3 --source gold_6240 \\
          --source samsung_s7 --samples 10 --draws 20
    """
    if ctx.invoked_subcommand is not None:
        return
    missing = [
        f"--{n}"
        for n, v in (
            ("space", space),
            ("source", sources or method == "lut"),
            ("samples", samples),
            ("archs", archs),
            ("out", out),
        )
        if not v
    ]
    if missing:
        raise UserError(
            f"predict needs {', '.join(missing)} (see `halo-coord predict --help`; "
            "`halo-coord predict eval` evaluates)"
        )
    feat.check_space(space)
    _check_lut(method, lut_name)
    target = read_samples(samples, space)
    query = read_archs(archs, space)
    source_lat, _ = load_sources(store_path, space, sources) if sources else ({}, None)
    p = pred.make(method, space, seed, load_table(store_path, lut_name)).fit(source_lat)
    p.adapt(target)
    mean, lo, hi = p.predict(query)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(OUT_HEADER)
        for row in zip(query, mean, lo, hi, strict=True):
            w.writerow([row[0], *(repr(float(v)) for v in row[1:])])
    tmp.replace(out)
    picked = f" (auto chose {p.chosen})" if isinstance(p, pred.Auto) else ""
    click.echo(
        f"{len(query)} predictions written to {out}; method {method}{picked}, "
        f"LOO RMSE of log latency {p.loo_rmse:.3f} on {len(target)} samples",
        err=True,
    )
    if suggest:
        helper = p if isinstance(p, pred.Help) else pred.make("help", space, seed)
        if helper is not p:
            helper.fit(source_lat).adapt(target)
        unmeasured = [a for a in dict.fromkeys(query) if a not in target]
        for arch in helper.suggest(unmeasured, suggest):
            click.echo(arch)


def _clean(row: dict) -> dict:
    """NaN (a method that could not run) as null: JSON has no NaN."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def _num(v: float, fmt: str = "{:.3f}") -> str:
    return "-" if v is None or math.isnan(v) else fmt.format(v)


def _pct(v: float | None) -> float | None:
    return None if v is None else 100 * v


def render(report: dict) -> str:
    rows = []
    for r in report["methods"]:
        if r["error"]:
            rows.append([r["method"], "-", "-", "-", "-", "-", "-", r["error"]])
            continue
        note = ""
        if r["chosen"]:
            note = "chose " + ", ".join(f"{m} {n}x" for m, n in r["chosen"].items())
        rows.append(
            [
                r["method"],
                f"{_num(r['spearman'])} ± {_num(r['spearman_std'])}",
                f"{_num(r['kendall'])} ± {_num(r['kendall_std'])}",
                f"{_num(r['mape'], '{:.1f}')} ± {_num(r['mape_std'], '{:.1f}')}",
                _num(r["mape_connected"], "{:.1f}"),
                f"{_num(_pct(r['acc10']), '{:.0f}')} ± {_num(_pct(r['acc10_std']), '{:.0f}')}",
                _num(_pct(r["coverage"]), "{:.0f}"),
                note,
            ]
        )
    head = (
        f"target {report['target']}, space {report['space']}, k = {report['k']}, "
        f"{report['draws']} draws, sources {', '.join(report['sources'])}:"
    )
    header = ["method", "spearman", "kendall", "MAPE %", "MAPE connected %", "±10 % acc %",
              "90% cover %", ""]  # fmt: skip
    return head + "\n" + table(header, rows)


@predict.command("eval")
@click.option("--space", required=True, help="Search space: nb201 or fbnet. Example: --space nb201")
@click.option(
    "--target",
    required=True,
    help="Target dataset (device name or dataset id/prefix), left out of the sources. "
    "Example: --target pixel3",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    required=True,
    help="Source dataset (device name or dataset id/prefix); repeatable. "
    "Example: --source gold_6240 --source samsung_s7",
)
@click.option(
    "--samples",
    "k",
    type=int,
    required=True,
    help="k: target archs drawn as samples per draw. Example: --samples 10",
)
@click.option(
    "--draws", type=int, default=20, show_default=True, help="Seeded draws. Example: --draws 20"
)
@click.option(
    "--method",
    type=METHOD,
    default=None,
    help="Evaluate this method beside the baselines (default: all methods; lut with --lut). "
    "Example: --method adaproxy",
)
@lut_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed. Example: --seed 1")
@store_option
@json_option
def eval_command(
    space: str,
    target: str,
    sources: tuple[str, ...],
    k: int,
    draws: int,
    method: str | None,
    lut_name: str | None,
    seed: int,
    store_path: Path | None,
    as_json: bool,
) -> None:
    """Leave-target-out evaluation: per draw, k target archs are the samples and every other
    target arch is predicted; Spearman, Kendall tau-b, MAPE, ±10 % accuracy and interval
    coverage, mean ± std over draws, one row per method (baselines flops, ridge, nnls always).

    \b
    Example:
      halo-coord predict eval --space nb201 --target pixel3 --source gold_6240 \\
          --source samsung_s7 --source 1080ti_1 --samples 10 --draws 20 --json
    """
    feat.check_space(space)
    _check_lut(method, lut_name)
    table = load_table(store_path, lut_name)
    if method == "lut":
        pred.make(method, space, seed, table)  # says what is missing before any draw
    methods = ev.methods_for(method, bool(table))
    source_lat, target_lat = load_sources(store_path, space, sources, target)
    results = ev.evaluate(space, target_lat, source_lat, k, draws, methods, seed, table)
    report = {
        "space": space,
        "target": target,
        "sources": list(sources),
        "k": k,
        "draws": draws,
        "seed": seed,
        "n_target": len(target_lat),
        "methods": [_clean(r.to_dict()) for r in results],
    }
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
