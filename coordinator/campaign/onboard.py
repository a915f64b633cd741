"""`halo-coord onboard DEVICE`: measure the 10 NB201 reference architectures on a new board.

Their latencies, in HELP's order, are the board's hardware embedding: with them a few-shot
latency predictor places an unseen device among the known ones. Onboarding is an ordinary
campaign (named ``onboard-DEVICE``, file kept next to the store), so it is resumable, shows in
`campaign list`, and its results form an nb201 dataset like any other.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import click

from coordinator import farm
from coordinator.campaign import session
from coordinator.campaign import state as st
from coordinator.campaign.plan import reference_archs
from coordinator.connect import resolve_broker
from coordinator.farm_cli import broker_option, json_option, store_option
from coordinator.render import table
from coordinator.store import Store


def campaign_text(
    device: str, threads: int, xnnpack: bool, repetitions: int, energy: bool, timing: dict
) -> str:
    return (
        f'name = "onboard-{device}"\n'
        f"repetitions = {repetitions}\n\n"
        f'[devices]\nids = ["{device}"]\n\n'
        "[models]\nreference = true\n\n"
        f"[bench]\nthreads = [{threads}]\nxnnpack = [{str(xnnpack).lower()}]\n"
        f"energy = {str(energy).lower()}\n"
        + "".join(f"{k} = {v!r}\n" for k, v in timing.items() if v is not None)
    )


def embedding(store: Store, campaign_id: str) -> list[dict]:
    """The reference archs in HELP's order with the median p50 (ms) of their repetitions and
    the min-max normalised value HELP uses."""
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
    out = []
    for arch in reference_archs():
        values = by_arch.get(arch)
        median = statistics.median(values) if values else None
        out.append({"index": index.get(arch), "arch": arch, "latency_ms": median})
    known = [e["latency_ms"] for e in out if e["latency_ms"] is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 0.0)
    for e in out:
        v = e["latency_ms"]
        e["normalised"] = None if v is None or hi == lo else (v - lo) / (hi - lo)
    return out


@click.command()
@click.argument("device")
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--no-xnnpack", is_flag=True, help="Measure without the XNNPACK delegate.")
@click.option("--repetitions", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--energy", is_flag=True, help="Measure energy too (power source 'auto').")
@click.option("--min-runs", type=click.IntRange(1), help="Timed runs per measurement (default 50).")
@click.option("--min-seconds", type=click.FloatRange(0), help="Measure at least this long (1 s).")
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
    broker_url,
    store_path,
    as_json,
):
    """Measure the 10 NB201 reference architectures on DEVICE: its hardware embedding for
    few-shot latency prediction. Resumable: running it again continues an interrupted run.

    \b
    Example:
      halo-coord onboard orin-nx-01 --threads 4
    """
    broker = resolve_broker(broker_url)
    with Store(store_path) as store:
        folder = store.path.parent / "onboard"
        folder.mkdir(parents=True, exist_ok=True)
        file = folder / f"onboard-{device}.toml"
        timing = {"min_runs": min_runs, "min_seconds": min_seconds}
        text = campaign_text(device, threads, not no_xnnpack, repetitions, energy, timing)
        open_runs = st.unfinished(store, f"onboard-{device}")
        if open_runs and file.is_file() and file.read_text() == text:
            record = session.resumable(store, file)
        else:
            file.write_text(text, encoding="utf-8")
            farm.sync(store, broker)
            record = session.start(store, file, time.time())
        click.echo(f"campaign {record.campaign_id}: 10 reference architectures x "
                   f"{repetitions} on {device}", err=True)  # fmt: skip
        try:
            session.drive(store, broker, [record.campaign_id])
        except KeyboardInterrupt:
            click.echo(f"interrupted; `halo-coord onboard {device}` continues it", err=True)
            sys.exit(130)
        rows = embedding(store, record.campaign_id)
        final = st.get(store, record.campaign_id)
    if as_json:
        click.echo(json.dumps({"device": device, "campaign_id": record.campaign_id,
                               "state": final.state, "embedding": rows}, indent=2))  # fmt: skip
    else:
        click.echo(table(
            ["#", "nb201 index", "latency ms", "normalised"],
            [[i, e["index"], "-" if e["latency_ms"] is None else f"{e['latency_ms']:.3f}",
              "-" if e["normalised"] is None else f"{e['normalised']:.3f}"]
             for i, e in enumerate(rows)],
        ))  # fmt: skip
    if any(e["latency_ms"] is None for e in rows):
        sys.exit(1)
