"""`halo-coord campaign ...`: measurement campaigns from a TOML file."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import click

from coordinator.campaign.plan import configs, reference_archs
from coordinator.campaign.spec import Campaign, CampaignError, Problem, load
from coordinator.zoo.generate import read_manifest
from coordinator.zoo.spaces.common import ArchError


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


def next_run(cron: str, now: dt.datetime) -> dt.datetime:
    from croniter import croniter

    return croniter(cron, now).get_next(dt.datetime)


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
        out["next_run_utc"] = next_run(campaign.cron, now).isoformat()
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
