"""`halo-coord campaign ...`: measurement campaigns from a TOML file."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

import click

from coordinator import farm
from coordinator.campaign import schedule, session
from coordinator.campaign import state as st
from coordinator.campaign.plan import configs, reference_archs
from coordinator.campaign.runner import DeviceProgress, progress
from coordinator.campaign.spec import Campaign, CampaignError, Problem, load
from coordinator.connect import resolve_broker
from coordinator.dispatch import Controller, new_cmd_id
from coordinator.errors import UserError
from coordinator.farm_cli import broker_option, json_option, store_option
from coordinator.render import table
from coordinator.store import Store
from coordinator.zoo.generate import read_manifest
from coordinator.zoo.spaces.common import ArchError
from protocol.bodies import Command


def model_count(campaign: Campaign) -> int:
    models = campaign.models
    if models.kind == "dir":
        try:
            return len(read_manifest(models.dir))
        except ArchError as exc:
            raise CampaignError(campaign.source, [Problem(None, "models.dir", str(exc))]) from None
    if models.kind == "reference":
        return len(reference_archs())
    return models.sample


def summary(campaign: Campaign, now: dt.datetime | None = None) -> dict:
    n_models = model_count(campaign)
    n_configs = len(configs(campaign))
    m = campaign.models
    out = {
        "name": campaign.name,
        "devices": {
            "ids": list(campaign.devices.ids),
            "tags": list(campaign.devices.tags),
            "all_online": campaign.devices.all_online,
        },
        "models": {
            "kind": m.kind,
            "count": n_models,
            **({"dir": str(m.dir)} if m.kind == "dir" else {}),
            **(
                {"space": m.space, "seed": m.seed, "dtype": m.dtype, "dataset": m.dataset}
                if m.kind == "zoo"
                else {}
            ),
        },
        "configs": [{"threads": c.threads, "xnnpack": c.xnnpack} for c in configs(campaign)],
        "repetitions": campaign.repetitions,
        "jobs_per_device": n_models * n_configs * campaign.repetitions,
        "energy": campaign.bench.energy,
        "order_seed": campaign.order_seed,
        "schedule": campaign.cron,
    }
    if campaign.cron:
        now = now or dt.datetime.now(dt.timezone.utc)
        fire = schedule.next_fire(campaign.cron, now.timestamp())
        out["next_run_utc"] = dt.datetime.fromtimestamp(fire, dt.timezone.utc).isoformat()
    return out


@click.group()
def campaign() -> None:
    """Measurement campaigns: many models x configurations x devices, from a TOML file.

    \b
    Example:
      halo-coord campaign validate nb201-weekly.toml
    """


@campaign.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def validate(file: Path, as_json: bool) -> None:
    """Check FILE and show what it would run; every problem is listed with its line.

    \b
    Example:
      halo-coord campaign validate nb201-weekly.toml --json
    """
    try:
        spec = load(file)
        info = summary(spec)
    except CampaignError as exc:
        for line in exc.lines():
            click.echo(f"halo-coord: error: {line}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    devices = info["devices"]
    chosen = ", ".join(
        [*devices["ids"], *(f"tag:{t}" for t in devices["tags"])]
        + (["all online"] if devices["all_online"] else [])
    )
    cfgs = ", ".join(
        f"{c['threads']} thread{'s' * (c['threads'] > 1)} XNNPACK {'on' if c['xnnpack'] else 'off'}"
        for c in info["configs"]
    )
    lines = [
        f"campaign {info['name']}: valid",
        f"devices      {chosen}",
        f"models       {info['models']['count']} ({info['models']['kind']})",
        f"configs      {cfgs}",
        f"repetitions  {info['repetitions']}",
        f"jobs/device  {info['jobs_per_device']}",
        f"energy       {'on' if info['energy'] else 'off'}",
    ]
    if info["schedule"]:
        lines.append(f"schedule     {info['schedule']} (UTC), next {info['next_run_utc']}")
    click.echo("\n".join(lines))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_table(rows: list[DeviceProgress]) -> str:
    return table(
        ["device", "health", "done", "failed", "canary", "drift", "ETA", "now"],
        [
            [
                r.device,
                r.health,
                f"{r.done}/{r.total}",
                r.failed,
                f"{r.canaries_done}/{r.canaries_total}" if r.canaries_total else "-",
                "-" if r.drift is None else f"{r.drift:+.1%}" + (" FLAG" if r.drift_flagged
                                                                 else ""),
                _duration(r.eta_s),
                r.waiting or (f"{r.current} (attempt {r.attempt})" if r.current else ""),
            ]
            for r in rows
        ],
    )  # fmt: skip


class LiveProgress:
    """Progress on stderr: redrawn in place on a terminal, else a line per device whenever
    its count moves (at most every few seconds), so logs stay readable."""

    def __init__(self, min_interval_s: float = 5.0) -> None:
        self.tty = sys.stderr.isatty()
        self.drawn = 0
        self.shown: dict[str, tuple[int, float]] = {}
        self.min_interval_s = min_interval_s

    def __call__(self, cid: str, rows: list[DeviceProgress]) -> None:
        if self.tty:
            text = f"campaign {cid}\n{progress_table(rows)}"
            if self.drawn:
                click.echo(f"\x1b[{self.drawn}A\x1b[J", nl=False, err=True)
            click.echo(text, err=True)
            self.drawn = text.count("\n") + 1
            return
        now = time.monotonic()
        for r in rows:
            done, at = self.shown.get(r.device, (-1, 0.0))
            finished = r.open == 0
            if r.done != done and (finished or now - at >= self.min_interval_s or done < 0):
                self.shown[r.device] = (r.done, now)
                click.echo(
                    f"{cid} {r.device}: {r.done}/{r.total} done, {r.failed} failed, "
                    f"ETA {_duration(r.eta_s)}",
                    err=True,
                )


def _status_doc(store: Store, record: st.CampaignRecord) -> dict:
    rows = progress(store, record.campaign_id, time.time())
    return {
        "campaign_id": record.campaign_id,
        "name": record.name,
        "state": record.state,
        "reason": record.reason,
        "source": record.source,
        "created_at": record.created_at,
        "finished_at": record.finished_at,
        "driver": record.driver,
        "devices": [r.to_dict() for r in rows],
    }


@campaign.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--resume", is_flag=True, help="Continue the unfinished run of this campaign.")
@broker_option
@store_option
@json_option
def run(file: Path, resume: bool, broker_url, store_path, as_json: bool) -> None:
    """Run the campaign in FILE until every job is done, with live progress per device.

    Ctrl-C (or a crash) leaves the run resumable: `--resume` continues it without
    re-running finished jobs, and results that arrived meanwhile are kept.

    \b
    Example:
      halo-coord campaign run nb201-weekly.toml
      halo-coord campaign run nb201-weekly.toml --resume
    """
    broker = resolve_broker(broker_url)
    with Store(store_path) as store:
        try:
            if resume:
                record = session.resumable(store, file)
            else:
                farm.sync(store, broker)
                record = session.start(store, file, time.time())
        except CampaignError as exc:
            for line in exc.lines():
                click.echo(f"halo-coord: error: {line}", err=True)
            sys.exit(2)
        cid = record.campaign_id
        click.echo(f"campaign {cid}: {'resumed' if resume else 'started'}", err=True)
        live = LiveProgress()
        try:
            session.drive(store, broker, [cid], None if as_json else live)
        except KeyboardInterrupt:
            click.echo(
                f"interrupted; the run stays resumable: halo-coord campaign run {file} --resume",
                err=True,
            )
            sys.exit(130)
        record = st.get(store, cid)
        doc = _status_doc(store, record)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(f"campaign {cid}: {record.state}" + (f" ({record.reason})" if record.reason
                                                        else ""))  # fmt: skip
        click.echo(progress_table(progress_rows(doc)))
    if any(d["failed"] for d in doc["devices"]) or record.state != st.DONE:
        sys.exit(1)


def progress_rows(doc: dict) -> list[DeviceProgress]:
    return [DeviceProgress(**d) for d in doc["devices"]]


@campaign.command()
@click.argument("campaign_id", required=False)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG of jobs done over time per device.")  # fmt: skip
@store_option
@json_option
def status(campaign_id: str | None, plot: Path | None, store_path, as_json: bool) -> None:
    """Progress of a campaign run (default: the latest) per device, with canary drift.

    \b
    Example:
      halo-coord campaign status nb201-weekly-20261122-020000 --json
    """
    with Store(store_path) as store:
        record = st.find(store, campaign_id)
        doc = _status_doc(store, record)
        if plot is not None:
            from coordinator.plots import campaign_progress

            series: dict[str, list[tuple[float, int]]] = {}
            for job in sorted(st.jobs(store, record.campaign_id), key=lambda j: j.finished_at
                              or 0):  # fmt: skip
                if job.state == st.DONE and job.finished_at:
                    points = series.setdefault(job.device, [])
                    hours = (job.finished_at - record.created_at) / 3600
                    points.append((hours, len(points) + 1))
            campaign_progress(series, plot, f"campaign {record.campaign_id}")
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"campaign {record.campaign_id} ({record.name}): {record.state}"
               + (f" ({record.reason})" if record.reason else ""))  # fmt: skip
    if record.state == st.RUNNING and not record.driver:
        click.echo("no process is driving it: `halo-coord campaign run FILE --resume`")
    click.echo(progress_table(progress_rows(doc)))
    if plot is not None:
        click.echo(f"plot written to {plot}", err=True)


@campaign.command(name="list")
@store_option
@json_option
def list_(store_path, as_json: bool) -> None:
    """Every campaign run in the store, oldest first.

    \b
    Example:
      halo-coord campaign list --json
    """
    with Store(store_path) as store:
        records = st.all_campaigns(store)
        rows = []
        for r in records:
            n = st.counts(store, r.campaign_id)
            total = sum(c[k] for c in n.values() for k in c if ":" not in k)
            done = sum(c[st.DONE] for c in n.values())
            failed = sum(c[st.FAILED] for c in n.values())
            rows.append((r, len(n), total, done, failed))
    if as_json:
        click.echo(json.dumps([
            {"campaign_id": r.campaign_id, "name": r.name, "state": r.state, "devices": nd,
             "jobs": total, "done": done, "failed": failed, "created_at": r.created_at,
             "finished_at": r.finished_at}
            for r, nd, total, done, failed in rows
        ], indent=2))  # fmt: skip
        return
    if not rows:
        click.echo("no campaigns yet")
        return
    click.echo(table(
        ["campaign", "state", "devices", "done", "failed", "started (UTC)"],
        [[r.campaign_id, r.state, nd, f"{done}/{total}", failed,
          dt.datetime.fromtimestamp(r.created_at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")]
         for r, nd, total, done, failed in rows],
    ))  # fmt: skip


@campaign.command()
@click.argument("campaign_id")
@broker_option
@store_option
def cancel(campaign_id: str, broker_url, store_path) -> None:
    """Cancel a campaign run: no new jobs start, and jobs on devices are cancelled there.

    \b
    Example:
      halo-coord campaign cancel nb201-weekly-20261122-020000
    """
    with Store(store_path) as store:
        record = st.find(store, campaign_id)
        if record.state != st.RUNNING:
            raise UserError(f"campaign {record.campaign_id} is already {record.state}")
        on_device = st.cancel(store, record.campaign_id, time.time())
        if on_device:
            try:
                with Controller(store, resolve_broker(broker_url)) as controller:
                    for job in on_device:
                        controller.send(job.device, Command(
                            cmd_id=new_cmd_id(), kind="cancel", expires_at=time.time() + 3600,
                            target_cmd_id=job.cmd_id,
                        ))  # fmt: skip
            except UserError as exc:
                click.echo(f"warning: could not cancel the jobs on devices: {exc}", err=True)
    click.echo(f"campaign {record.campaign_id} cancelled ({len(on_device)} jobs were on devices)")
