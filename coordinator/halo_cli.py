"""`halo-coord halo`: HALO-style on-device adaptation with a learned optimizer.

* ``run`` sends ``adapt`` commands to boards of the farm, waits, and summarises the adaptation
  results ingest stored (table ``adapt_results``, apart from latency results).
* ``train`` meta-trains a learned optimizer here (``halo.meta.train``) and writes its weights
  (.npz) and a JSON file of its metadata next to them.
* ``compare`` runs optimizers side by side on this machine (no farm needed): same pretrained
  start per seed for all of them, hand-written baselines with their learning rate tuned on a
  validation split (``halo.tune``), accuracy and modelled energy at fixed step counts, mean and
  std over seeds.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import click

from coordinator import farm
from coordinator.connect import resolve_broker
from coordinator.dispatch import Controller, new_command
from coordinator.errors import UserError
from coordinator.farm_cli import broker_option, json_option, store_option
from coordinator.store import AdaptRow, Store
from protocol import AdaptSpec, ProtocolError
from protocol.bodies import ADAPT_OPTIMIZERS, ADAPT_TASKS

BASELINES = tuple(o for o in ADAPT_OPTIMIZERS if o != "halo")


@click.group()
def halo() -> None:
    """HALO: adapt models on the boards with a learned optimizer; train and compare optimizers.

    \b
    Examples:
      halo-coord halo run --device pi4-01 --task thyroid --optimizer halo --seeds 3
      halo-coord halo compare --task thyroid --optimizers halo,adam,sgd --seeds 10
      halo-coord halo train --out my_halo.npz --seed 0 --time-budget 1800
    """


# --- run: on the farm ---------------------------------------------------------------------------


def _spec_or_fail(**fields: Any) -> AdaptSpec:
    """The protocol's own checks (the agent's), reported by option name."""
    try:
        return AdaptSpec.from_dict(AdaptSpec(**fields).to_dict(), "adapt")
    except ProtocolError as exc:
        name = exc.field.split(".")[-1]
        option = {"source_sha256": "source", "target_sha256": "target",
                  "target_test_sha256": "target-test", "optimizer_sha256": "optimizer-file",
                  }.get(name, name).replace("_", "-")  # fmt: skip
        raise UserError(f"--{option}: {exc.reason}") from None


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _pm(values: list[float], digits: int = 4) -> str:
    mean, std = _mean_std(values)
    return "-" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _pm_g(values: list[float]) -> str:
    mean, std = _mean_std(values)
    return "-" if math.isnan(mean) else f"{mean:.4g} ± {std:.2g}"


def run_table(rows: list[AdaptRow]) -> str:
    lines = [
        f"{'device':16} {'seed':>5} {'optimizer':9} {'task':8} {'status':6} {'acc':>7} "
        f"{'bal acc':>7} {'energy J':>9} {'adapt s':>8}"
    ]
    curves: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        doc = json.loads(r.payload).get("document") or {}
        wall = (doc.get("wall_s") or {}).get("adapt")
        lines.append(
            f"{r.device:16} {r.seed:>5} {r.optimizer:9} {r.task or '-':8} {r.status:6} "
            + (
                f"{r.final_test_acc:>7.4f} {r.final_test_balanced_acc:>7.4f} "
                f"{r.energy_j:>9.4g} {wall or 0.0:>8.2f}"
                if r.status == "ok"
                else f"  {r.reason or ''}"
            )  # fmt: skip
        )
        for point in doc.get("curve") or []:
            curves.setdefault(point["step"], []).append(point)
    if curves:
        n = sum(r.status == "ok" for r in rows)
        lines += ["", f"curve over {n} run(s): mean ± std"]
        lines.append(f"{'step':>6} {'test acc':>17} {'balanced acc':>17} {'energy J (model)':>18}")
        for step in sorted(curves):
            pts = curves[step]
            lines.append(
                f"{step:>6} {_pm([p['test_acc'] for p in pts]):>17} "
                f"{_pm([p['test_balanced_acc'] for p in pts]):>17} "
                f"{_pm_g([p['energy_j'] for p in pts]):>18}"
            )
    return "\n".join(lines)


@halo.command("run")
@click.option("--device", "device_ids", multiple=True, help="Board to adapt on (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Every board with this tag.")
@click.option("--task", type=click.Choice(ADAPT_TASKS), help="A built-in task.")
@click.option("--source", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Source-domain CSV (pretraining), sent as a blob.")  # fmt: skip
@click.option("--target", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Target-domain training CSV.")  # fmt: skip
@click.option("--target-test", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Target-domain test CSV.")  # fmt: skip
@click.option("--label", default="label", show_default=True, help="Label column of the CSVs.")
@click.option("--model", help="mlp:30,30 | cnn1d:8,8 | cnn2d:8,8 (default: the task's own).")
@click.option("--optimizer", type=click.Choice(ADAPT_OPTIMIZERS), default="halo",
              show_default=True)  # fmt: skip
@click.option("--optimizer-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Learned-optimizer checkpoint (.npz) to send (default: board's).")  # fmt: skip
@click.option("--lr", type=float, help="Learning rate of a hand-written optimizer.")
@click.option("--tune-lr", is_flag=True, help="The board tunes the lr on a validation split.")
@click.option("--steps", type=int, default=300, show_default=True)
@click.option("--batch", type=int, default=64, show_default=True)
@click.option("--class-balanced", is_flag=True,
              help="Class-balanced minibatches (thyroid: always).")  # fmt: skip
@click.option("--sparsity", help="Layer-wise update probabilities, e.g. 0.1,0.3,0.5.")
@click.option("--seeds", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Runs per board, with seeds 0..K-1.")  # fmt: skip
@click.option("--eval-every", type=int, default=10, show_default=True)
@click.option("--pretrain-steps", type=int, default=500, show_default=True)
@click.option("--power", default="none", show_default=True, metavar="none|auto|SOURCE",
              help="Also measure energy with the board's power source.")  # fmt: skip
@click.option("--wait-timeout", type=float, default=3600.0, show_default=True)
@broker_option
@store_option
@json_option
def run(
    device_ids: tuple[str, ...],
    tags: tuple[str, ...],
    task: str | None,
    source: Path | None,
    target: Path | None,
    target_test: Path | None,
    label: str,
    model: str | None,
    optimizer: str,
    optimizer_file: Path | None,
    lr: float | None,
    tune_lr: bool,
    steps: int,
    batch: int,
    class_balanced: bool,
    sparsity: str | None,
    seeds: int,
    eval_every: int,
    pretrain_steps: int,
    power: str,
    wait_timeout: float,
    broker_url: str | None,
    store_path: Path | None,
    as_json: bool,
) -> None:
    """Adapt on each board (seeds 0..K-1) and wait; prints the runs and their mean curve.

    \b
    Examples:
      halo-coord halo run --device pi4-01 --task thyroid --optimizer halo --steps 300
      halo-coord halo run --device tx2-01 --task digits --optimizer adam --tune-lr --json
      halo-coord halo run --device pi4-01 --source male.csv --target female_train.csv \\
          --target-test female_test.csv --model mlp:30,30 --class-balanced
    """
    files = {"source": source, "target": target, "target_test": target_test}
    if task is not None and any(files.values()):
        raise UserError("give either --task or --source/--target/--target-test, not both")
    if task is None and not all(files.values()):
        raise UserError(
            "give --task thyroid|digits|drift, or all of --source, --target, --target-test"
        )
    common = dict(task=task, label=label, model=model, optimizer=optimizer, lr=lr,
                  tune_lr=tune_lr, steps=steps, batch=batch, sparsity=sparsity,
                  eval_every=eval_every, pretrain_steps=pretrain_steps, power=power,
                  class_balanced=class_balanced or None)  # fmt: skip
    fake = "0" * 64  # checked before blobs are stored
    _spec_or_fail(
        **common,
        **{f"{k}_sha256": fake for k, v in files.items() if v is not None},
        optimizer_sha256=fake if optimizer_file is not None else None,
    )
    broker = resolve_broker(broker_url)
    with Store(store_path) as store:
        farm.sync(store, broker)
        targets = farm.select_devices(store, device_ids, tags)
        blobs = {f"{k}_sha256": store.put_blob_file(v) for k, v in files.items() if v is not None}
        if optimizer_file is not None:
            blobs["optimizer_sha256"] = store.put_blob_file(optimizer_file)
        cmd_ids = []
        # The controller serves the blobs to the boards while they fetch them.
        with Controller(store, broker) as controller:
            for seed in range(seeds):
                spec = _spec_or_fail(**common, **blobs, seed=seed)
                for dev in targets:
                    command = new_command("adapt", adapt=spec)
                    controller.send(dev, command)
                    cmd_ids.append(command.cmd_id)
            jobs = farm.wait_for(store, broker, cmd_ids, farm.FINAL, wait_timeout)
        for j in jobs.values():
            if j.state in ("rejected", "cancelled") or (j.state == "failed"):
                click.echo(f"{j.device}: {j.state}: {j.reason or '-'}", err=True)
        missing = [
            c for c in cmd_ids if c not in jobs or not farm.settled(store, jobs[c], farm.FINAL)
        ]
        if missing:
            click.echo(f"{len(missing)} job(s) not finished after {wait_timeout:g} s", err=True)
        rows = [r for c in cmd_ids for r in store.adapt_results(job=c)]
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=1))
    else:
        click.echo(run_table(rows))
    if len(rows) < len(cmd_ids) or any(r.status != "ok" for r in rows):
        raise SystemExit(1)


# --- train: meta-training here ------------------------------------------------------------------


@halo.command("train")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("halo_optimizer.npz"), show_default=True,
              help="Checkpoint to write (.npz); its metadata goes next to it (.json).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--iterations", type=click.IntRange(1), help="Meta-iterations (default: 1600).")
@click.option("--time-budget", type=click.FloatRange(0, min_open=True),
              help="Seconds; stop early (after a validation) when exceeded.")  # fmt: skip
@click.option("--kinds", help="Problem kinds, e.g. thyroid-mlp,digits-mlp,digits-cnn,drift-mlp.")
@click.option("--horizons", help="Episode lengths, e.g. 200,400,600.")
@click.option("--truncation", type=click.IntRange(1), help="Steps per truncation (default 20).")
@click.option("--pairs", type=click.IntRange(1), help="Antithetic pairs per estimate.")
@click.option("--estimator", type=click.Choice(["pes", "es"]))
@click.option("--meta-lr", type=float)
@click.option("--sparsity", help="Update-sparsity schedule during meta-training, or 'none'.")
@click.option("--eval-every", type=click.IntRange(1), help="Validate every N iterations.")
@click.option("--log", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the full training record (JSON) here.")  # fmt: skip
@json_option
def train(out: Path, log: Path | None, as_json: bool, **knobs: Any) -> None:
    """Meta-train a learned optimizer on this machine (ES/PES; see `python -m halo.meta.train
    --help` for every setting). Defaults reproduce the shipped optimizer.

    \b
    Examples:
      halo-coord halo train --out my_halo.npz --seed 0 --time-budget 1800
      halo-coord halo run --device pi4-01 --task thyroid --optimizer-file my_halo.npz
    """
    from halo.errors import ConfigError
    from halo.meta import train as meta
    from halo.optim.checkpoint import read_metadata

    argv = ["--out", str(out)]
    for name, value in knobs.items():
        if value is not None:
            argv += ["--" + name.replace("_", "-"), str(value)]
    if log is not None:
        argv += ["--log", str(log)]
    try:
        settings, out, log = meta.parse_args(argv)
        settings.schedule()
    except ConfigError as exc:
        raise UserError(f"halo train: {exc}") from None
    # Refused now, not after half an hour of meta-training.
    for path, option in ((out, "--out"), (log, "--log")):
        if path is not None:
            _check_writable(path, option)
    result = meta.meta_train(settings, progress=lambda line: click.echo(line, err=True))
    meta.write_checkpoint(out, settings, result, "halo-coord halo train " + " ".join(argv))
    if log is not None:
        meta.write_log(log, result)
    metadata = read_metadata(out)
    sidecar = out.with_suffix(".json")  # written by write_checkpoint
    if as_json:
        click.echo(json.dumps({"checkpoint": str(out), "metadata_file": str(sidecar),
                               "metadata": metadata}, indent=1, default=str))  # fmt: skip
    else:
        click.echo(f"wrote {out} and {sidecar}")


def _check_writable(path: Path, option: str) -> None:
    if path.exists() and path.is_dir():
        raise UserError(f"{option}: {path} is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"{option}: directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise UserError(f"{option}: cannot write in {parent}; choose another place")


# --- compare: optimizers side by side, here -------------------------------------------------------


def _build_task(name: str, seed: int) -> Any:
    from halo.tasks import digits_task, drift_task, thyroid_task

    if name == "thyroid":
        return thyroid_task(seed=seed)
    if name == "digits":
        return digits_task(seed=seed)
    return drift_task()


def _checkpoints(text: str | None, steps: int) -> list[int]:
    if text is None:
        marks = {max(1, steps // 4), max(1, steps // 2), steps}
    else:
        try:
            marks = {int(v) for v in text.split(",") if v.strip()}
        except ValueError:
            raise UserError(f"--at: give step counts like 50,100,300, got {text!r}") from None
        if not marks or any(m < 1 or m > steps for m in marks):
            raise UserError(f"--at: step counts must be within 1..{steps} (--steps)")
    return sorted(marks)


def compare_runs(
    task_name: str,
    optimizers: list[str],
    seeds: int,
    steps: int,
    at: list[int],
    batch: int,
    pretrain_steps: int,
    model: str | None,
    sparsity_text: str | None,
    tune: bool,
    board: str,
    optimizer_file: Path | None,
    progress: Any = None,
) -> dict[str, Any]:
    """Every optimizer on the same pretrained start per seed; the JSON-able comparison."""
    from halo.adapt import AdaptSettings, run_adaptation, start_point
    from halo.energy import EnergyConstants, cumulative_j, model_report, run_work
    from halo.optim import make_baseline
    from halo.optim.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
    from halo.optim.hrnn_config import HRNNConfig
    from halo.optimizees.zoo import parse_model
    from halo.sparsity import SparsitySchedule
    from halo.tune import tune_lr

    constants = EnergyConstants.for_board(board)
    sparsity = SparsitySchedule.parse(sparsity_text) if sparsity_text else None
    every = math.gcd(*at)
    halo_path = optimizer_file or DEFAULT_CHECKPOINT
    learned = load_checkpoint(halo_path, expect=HRNNConfig()) if "halo" in optimizers else None
    runs: list[dict[str, Any]] = []
    network = None
    for seed in range(seeds):
        task = _build_task(task_name, seed)
        net = parse_model(model, task.input_shape, task.n_classes) if model else task.optimizee()
        network = {"name": net.name, "n_params": net.n_params}
        start = start_point(task, net, seed=seed, steps=pretrain_steps)
        settings = AdaptSettings(steps, batch, seed, every)
        itemsize = start[0].dtype.itemsize
        for name in optimizers:
            lr = None
            if name == "halo":
                optimizer = learned
            else:
                lr = tune_lr(net, start, task.target, name, settings, sparsity).lr if tune else None
                optimizer = make_baseline(name) if lr is None else make_baseline(name, lr=lr)
                lr = optimizer.lr
            _, result = run_adaptation(net, start, optimizer, task.target, settings, sparsity)
            works = run_work(net, result.steps, itemsize)
            energy = cumulative_j(constants, works)
            points = []
            for step in at:
                i = result.eval_steps.index(step)
                points.append({
                    "step": step,
                    "test_acc": result.test_accuracy[i],
                    "test_balanced_acc": result.test_balanced_accuracy[i],
                    "energy_j": energy[step],
                })  # fmt: skip
            runs.append({
                "optimizer": name, "seed": seed, "lr": lr, "points": points,
                "initial_test_acc": result.test_accuracy[0],
                "curve": [{"step": s, "test_acc": result.test_accuracy[k], "energy_j": energy[s]}
                          for k, s in enumerate(result.eval_steps)],
                "energy": {k: v for k, v in model_report(constants, works, itemsize).items()
                           if k in ("method", "total_j", "per_step_j")},
            })  # fmt: skip
            if progress is not None:
                progress(name, seed)
    summary = []
    for name in optimizers:
        mine = [r for r in runs if r["optimizer"] == name]
        for k, step in enumerate(at):
            row: dict[str, Any] = {"optimizer": name, "step": step}
            for key in ("test_acc", "test_balanced_acc", "energy_j"):
                mean, std = _mean_std([r["points"][k][key] for r in mine])
                row[key] = {"mean": mean, "std": std}
            lrs = sorted({r["lr"] for r in mine if r["lr"] is not None})
            row["lr"] = lrs
            summary.append(row)
    return {
        "task": task_name,
        "network": network,
        "optimizers": optimizers,
        "seeds": seeds,
        "steps": steps,
        "at": at,
        "batch": batch,
        "pretrain_steps": pretrain_steps,
        "sparsity": list(sparsity.probs) if sparsity is not None else None,
        "lr": "tuned per seed on a validation split (halo.tune)" if tune else "defaults",
        "halo_checkpoint": str(halo_path) if "halo" in optimizers else None,
        "energy": {"method": "model", "board": constants.board},
        "summary": summary,
        "runs": runs,
    }


def compare_table(out: dict[str, Any]) -> str:
    balanced = out["task"] == "thyroid"
    net = out["network"]
    lines = [
        f"task {out['task']}  model {net['name']} ({net['n_params']} parameters)  "
        f"seeds {out['seeds']}  lr: {out['lr']}",
        f"energy: model ({out['energy']['board']} constants), mean ± std over seeds",
        f"{'optimizer':9} {'step':>6} {'accuracy':>17}"
        + (f" {'balanced acc':>17}" if balanced else "")
        + f" {'energy J':>17}",
    ]
    for row in out["summary"]:
        acc, bal, en = row["test_acc"], row["test_balanced_acc"], row["energy_j"]
        acc_s = f"{acc['mean']:.4f} ± {acc['std']:.4f}"
        bal_s = f" {bal['mean']:.4f} ± {bal['std']:.4f}" if balanced else ""
        en_s = f"{en['mean']:.4g} ± {en['std']:.2g}"
        lines.append(f"{row['optimizer']:9} {row['step']:>6} {acc_s:>17}{bal_s:>18} {en_s:>17}")
    return "\n".join(lines)


def _plot(out: dict[str, Any], path: Path) -> None:
    from coordinator.plots import _figure

    with _figure(path, f"{out['task']}: test accuracy vs modelled energy") as ax:
        for name in out["optimizers"]:
            mine = [r["curve"] for r in out["runs"] if r["optimizer"] == name]
            steps = [p["step"] for p in mine[0]]
            acc = [statistics.fmean(c[i]["test_acc"] for c in mine) for i in range(len(steps))]
            energy = [statistics.fmean(c[i]["energy_j"] for c in mine) for i in range(len(steps))]
            ax.plot(energy, acc, marker=".", label=name)
        ax.set_xlabel("energy (J, modelled)")
        ax.set_ylabel("test accuracy (mean over seeds)")
        ax.grid(True, alpha=0.3)
        ax.legend()


@halo.command("compare")
@click.option("--task", type=click.Choice(ADAPT_TASKS), required=True)
@click.option("--optimizers", default="halo,adam,sgd", show_default=True,
              help=f"Comma-separated, from {', '.join(ADAPT_OPTIMIZERS)}.")  # fmt: skip
@click.option("--seeds", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--steps", type=click.IntRange(1, 100000), default=300, show_default=True)
@click.option("--at", "at_text", help="Step counts to report (default: steps/4, steps/2, steps).")
@click.option("--batch", type=click.IntRange(1), default=64, show_default=True)
@click.option("--pretrain-steps", type=click.IntRange(0), default=500, show_default=True)
@click.option("--model", help="mlp:30,30 | cnn1d:8,8 | cnn2d:8,8 (default: the task's own).")
@click.option("--sparsity", help="Layer-wise update probabilities, e.g. 0.1,0.3,0.5.")
@click.option("--tune-lr/--no-tune-lr", default=True, show_default=True,
              help="Tune each baseline's lr per seed on a validation split.")  # fmt: skip
@click.option("--board", default="generic", show_default=True,
              help="Energy constants of a known board (rpi4, tx2, nano, ...).")  # fmt: skip
@click.option("--optimizer-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Learned-optimizer checkpoint for halo (default: the shipped one).")  # fmt: skip
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write accuracy vs energy as PNG (needs matplotlib).")  # fmt: skip
@json_option
def compare(
    task: str,
    optimizers: str,
    seeds: int,
    steps: int,
    at_text: str | None,
    batch: int,
    pretrain_steps: int,
    model: str | None,
    sparsity: str | None,
    tune_lr: bool,
    board: str,
    optimizer_file: Path | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Compare optimizers here (no farm needed): accuracy and modelled energy at fixed step
    counts, mean ± std over seeds, each seed's pretrained start shared by all optimizers.

    \b
    Examples:
      halo-coord halo compare --task thyroid --optimizers halo,adam,sgd --seeds 10
      halo-coord halo compare --task digits --steps 200 --at 50,100,200 --plot acc_vs_energy.png
    """
    from halo.errors import HaloError

    names = [n.strip().lower() for n in optimizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in ADAPT_OPTIMIZERS]
    if unknown or not names:
        raise UserError(
            f"--optimizers: unknown {', '.join(map(repr, unknown)) or 'none given'}; "
            f"choose from {', '.join(ADAPT_OPTIMIZERS)}"
        )
    names = list(dict.fromkeys(names))
    at = _checkpoints(at_text, steps)
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UserError("--plot needs matplotlib: pip install 'halofarm[plot]'") from None

    def progress(name: str, seed: int) -> None:
        if not as_json and sys.stderr.isatty():
            click.echo(f"  {name} seed {seed} done", err=True)

    try:
        out = compare_runs(task, names, seeds, steps, at, batch, pretrain_steps, model,
                           sparsity, tune_lr, board, optimizer_file, progress)  # fmt: skip
    except HaloError as exc:
        raise UserError(str(exc).replace("\n", " ")) from None
    if plot is not None:
        _plot(out, plot)
        out["plot"] = str(plot)
    if as_json:
        click.echo(json.dumps(out, indent=1, allow_nan=False))
    else:
        click.echo(compare_table(out))
        if plot is not None:
            click.echo(f"wrote {plot}")
