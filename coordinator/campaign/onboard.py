"""`halo-coord onboard DEVICE`: measure the 10 NB201 reference architectures on a new board.

Their latencies, in HELP's order, are the board's hardware embedding: with them a few-shot
latency predictor places an unseen device among the known ones. Onboarding is an ordinary
campaign (named ``onboard-DEVICE``, file kept next to the store), so it is resumable, shows in
`campaign list`, and its results form an nb201 dataset like any other.

With ``--suggest N`` a second campaign (``onboard-DEVICE-active``) then measures the N archs
that active sampling picks: the `help` predictor, fitted on source datasets in the store and
adapted to the embedding, chooses where its posterior is least sure (`predict --suggest`). An
interrupted second campaign resumes without measuring the embedding again.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import click

from coordinator import farm
from coordinator.analysis import predictors as pred
from coordinator.analysis.predict_cli import find_dataset, latencies
from coordinator.campaign import session
from coordinator.campaign import state as st
from coordinator.campaign.plan import reference_archs
from coordinator.connect import resolve_broker
from coordinator.dataset.select import load
from coordinator.errors import UserError
from coordinator.farm_cli import broker_option, json_option, store_option
from coordinator.render import table
from coordinator.store import Store
from coordinator.zoo.generate import Generator, make_spec
from coordinator.zoo.spaces import nb201

ACTIVE_DATASET = "cifar10"  # the reference models' setting, so both campaigns form one dataset


def campaign_text(
    device: str,
    threads: int,
    xnnpack: bool,
    repetitions: int,
    energy: bool,
    timing: dict,
    models_dir: Path | None = None,
) -> str:
    """The onboarding campaign: the reference archs, or (`models_dir`) the active picks."""
    name, models = f"onboard-{device}", "reference = true"
    if models_dir is not None:
        name, models = f"onboard-{device}-active", f"dir = {json.dumps(str(models_dir))}"
    return (
        f'name = "{name}"\n'
        f"repetitions = {repetitions}\n\n"
        f'[devices]\nids = ["{device}"]\n\n'
        f"[models]\n{models}\n\n"
        f"[bench]\nthreads = [{threads}]\nxnnpack = [{str(xnnpack).lower()}]\n"
        f"energy = {str(energy).lower()}\n"
        + "".join(f"{k} = {v!r}\n" for k, v in timing.items() if v is not None)
    )


def measured(store: Store, campaign_id: str) -> dict[str, tuple[int | None, float]]:
    """arch -> (nb201 index, median p50 in ms over its repetitions) of a campaign's done
    measurements."""
    rows = store.query(
        "SELECT m.arch, m.arch_index, r.p50_ns FROM campaign_jobs j "
        "JOIN results r ON r.result_id = j.result_id JOIN models m ON m.sha256 = j.model_sha256 "
        "WHERE j.campaign_id = ? AND j.kind = 'measure' AND j.state = 'done'",
        (campaign_id,),
    )
    by_arch: dict[str, list[float]] = {}
    index = {}
    for arch, idx, p50 in rows:
        by_arch.setdefault(arch, []).append(p50 / 1e6)
        index[arch] = idx
    return {a: (index[a], statistics.median(v)) for a, v in by_arch.items()}


def embedding(store: Store, campaign_id: str) -> list[dict]:
    """The reference archs in HELP's order with the median p50 (ms) of their repetitions and
    the min-max normalised value HELP uses."""
    done = measured(store, campaign_id)
    out = []
    for arch in reference_archs():
        index, median = done.get(arch, (None, None))
        out.append({"index": index, "arch": arch, "latency_ms": median})
    known = [e["latency_ms"] for e in out if e["latency_ms"] is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 0.0)
    for e in out:
        v = e["latency_ms"]
        e["normalised"] = None if v is None or hi == lo else (v - lo) / (hi - lo)
    return out


def help_sources(store: Store, device: str, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """The nb201 datasets `--suggest` fits on: the named ones, else every dataset of another
    device."""
    datasets = load(store, space="nb201")
    if names:
        chosen = [find_dataset(datasets, n, "--source") for n in names]
    else:
        chosen = [d for d in datasets if d.key.device != device]
    if any(d.key.device == device for d in chosen):
        raise UserError(f"--source: {device} is the board being onboarded; leave it out")
    if len({d.id for d in chosen}) < 2:
        raise UserError(
            "--suggest: the help predictor needs at least 2 nb201 source datasets in the store "
            "(measured boards, or public tables via `halo-coord dataset import`)"
        )
    return {d.id: latencies(d) for d in chosen}


def suggestions(
    sources: dict[str, dict[str, float]], samples: dict[str, float], n: int, seed: int
) -> list[dict]:
    """The n archs active sampling picks, each with the prediction before it is measured."""
    helper = pred.make("help", "nb201", seed).fit(sources).adapt(samples)
    candidates = [a for a in helper.archs if a not in samples]
    picks = helper.suggest(candidates, n)
    mean, lo, hi = helper.predict(picks)
    return [
        {"index": nb201.index_of(a), "arch": a, "predicted_ms": float(m),
         "lo_ms": float(a_lo), "hi_ms": float(a_hi)}
        for a, m, a_lo, a_hi in zip(picks, mean, lo, hi, strict=True)
    ]  # fmt: skip


def write_models(folder: Path, device: str, picks: list[dict]) -> Path:
    """The picked archs as a zoo directory; its name carries the picks, so a later onboarding
    that picks differently never mixes its models with these."""
    digest = hashlib.sha256("\n".join(p["arch"] for p in picks).encode()).hexdigest()[:10]
    out = folder / f"onboard-{device}-active-{digest}"
    with Generator(out) as gen:
        for p in picks:
            gen.add(make_spec("nb201", p["arch"], ACTIVE_DATASET))
    return out


def run_campaign(store: Store, broker, file: Path, text: str, device: str) -> st.CampaignRecord:
    """Resume the campaign in FILE if an unfinished run has exactly this text, else start it;
    then drive it to the end."""
    open_runs = st.unfinished(store, file.stem)  # each file is named after its campaign
    if open_runs and file.is_file() and file.read_text() == text:
        record = session.resumable(store, file)
    else:
        file.write_text(text, encoding="utf-8")
        farm.sync(store, broker)
        record = session.start(store, file, time.time())
    try:
        session.drive(store, broker, [record.campaign_id])
    except KeyboardInterrupt:
        click.echo(f"interrupted; `halo-coord onboard {device}` continues it", err=True)
        sys.exit(130)
    return record


def last_done(store: Store, name: str) -> st.CampaignRecord | None:
    done = [r for r in st.all_campaigns(store) if r.name == name and r.state == st.DONE]
    return max(done, key=lambda r: r.created_at) if done else None


@click.command()
@click.argument("device")
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--no-xnnpack", is_flag=True, help="Measure without the XNNPACK delegate.")
@click.option("--repetitions", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--energy", is_flag=True, help="Measure energy too (power source 'auto').")
@click.option("--min-runs", type=click.IntRange(1), help="Timed runs per measurement (default 50).")
@click.option("--min-seconds", type=click.FloatRange(0), help="Measure at least this long (1 s).")
@click.option(
    "--suggest",
    "n_more",
    type=click.IntRange(0, 1000),
    default=0,
    show_default=True,
    help="Then measure N more nb201 archs, where the help predictor (fitted on the sources, "
    "adapted to the embedding) is least sure: active sampling. Example: --suggest 10",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    help="Source dataset for --suggest (device name, or dataset id or a unique prefix); "
    "repeatable; default: every nb201 dataset of another device. Example: --source pixel3",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --suggest.")
@broker_option
@store_option
@json_option
def onboard(
    device,
    threads,
    no_xnnpack,
    repetitions,
    energy,
    min_runs,
    min_seconds,
    n_more,
    sources,
    seed,
    broker_url,
    store_path,
    as_json,
):
    """Measure the 10 NB201 reference architectures on DEVICE: its hardware embedding for
    few-shot latency prediction; with --suggest N, then N more archs chosen by active
    sampling. Resumable: running it again continues an interrupted run.

    \b
    Examples:
      halo-coord onboard orin-nx-01 --threads 4
      halo-coord onboard orin-nx-01 --suggest 10 --source pixel3 --source gold_6240
    """
    if sources and not n_more:
        raise UserError("--source is used by --suggest N; give both or neither")
    broker = resolve_broker(broker_url)
    timing = {"min_runs": min_runs, "min_seconds": min_seconds}
    settings = (threads, not no_xnnpack, repetitions, energy, timing)
    active_doc = None
    with Store(store_path) as store:
        folder = store.path.parent / "onboard"
        folder.mkdir(parents=True, exist_ok=True)
        src = help_sources(store, device, sources) if n_more else {}
        active_file = folder / f"onboard-{device}-active.toml"
        active_open = st.unfinished(store, f"onboard-{device}-active")
        base = last_done(store, f"onboard-{device}") if n_more and active_open else None
        if base is None:
            text = campaign_text(device, *settings)
            click.echo(f"onboard {device}: 10 reference architectures x {repetitions}", err=True)
            base = run_campaign(store, broker, folder / f"onboard-{device}.toml", text, device)
        rows = embedding(store, base.campaign_id)
        final = st.get(store, base.campaign_id)
        complete = all(e["latency_ms"] is not None for e in rows)
        if n_more and complete:
            picks = suggestions(src, {e["arch"]: e["latency_ms"] for e in rows}, n_more, seed)
            text = campaign_text(device, *settings, write_models(folder, device, picks))
            if active_open and active_file.is_file() and active_file.read_text() != text:
                session_id = active_open[-1].campaign_id
                raise UserError(
                    f"an earlier onboard-{device}-active run ({session_id}) picked other archs; "
                    f"cancel it with `halo-coord campaign cancel {session_id}` and run again"
                )
            click.echo(f"onboard {device}: {len(picks)} archs by active sampling", err=True)
            record = run_campaign(store, broker, active_file, text, device)
            done = measured(store, record.campaign_id)
            for p in picks:
                p["latency_ms"] = done.get(p["arch"], (None, None))[1]
            active_doc = {"campaign_id": record.campaign_id, "sources": sorted(src),
                          "archs": picks}  # fmt: skip
            complete = all(p["latency_ms"] is not None for p in picks)
    if as_json:
        doc = {"device": device, "campaign_id": base.campaign_id, "state": final.state,
               "embedding": rows}  # fmt: skip
        if active_doc is not None:
            doc["active"] = active_doc
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(_embedding_table(rows))
        if active_doc is not None:
            click.echo("\n" + _active_table(active_doc["archs"]))
    if not complete:
        sys.exit(1)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _embedding_table(rows: list[dict]) -> str:
    return table(
        ["#", "nb201 index", "latency ms", "normalised"],
        [[i, e["index"], _ms(e["latency_ms"]), _ms(e["normalised"])] for i, e in enumerate(rows)],
    )


def _active_table(picks: list[dict]) -> str:
    return table(
        ["active #", "nb201 index", "predicted ms", "90 % interval", "measured ms"],
        [[i, p["index"], _ms(p["predicted_ms"]), f"{_ms(p['lo_ms'])}-{_ms(p['hi_ms'])}",
          _ms(p["latency_ms"])] for i, p in enumerate(picks)],
    )  # fmt: skip
