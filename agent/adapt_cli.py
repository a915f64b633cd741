"""`halo-agent adapt`: HALO-style on-device adaptation on this board, with its energy.

Pretrain on the source domain (Adam), adapt on the target's training rows with the learned
optimizer (the shipped one or ``--optimizer-file``) or a hand-written baseline (``--lr`` or
``--tune-lr`` on a validation split of the training rows), evaluate on the target's test rows.
Energy is always modelled (``halo.energy``: counted work x per-board constants, ``method:
model``) and, when the board has a power source, also measured around the adaptation loop
(``method: measured``, or ``simulated`` on a simulated board), evaluations left out of both.

``--calibrate`` instead measures this board's constants and writes them where later runs
find them. Errors a user can fix print one line and exit 2 (``click.ClickException``, which
``agent.cli.main`` reports).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

import click

BASELINES = ("sgd", "momentum", "adam", "adagrad", "rmsprop")
OPTIMIZERS = ("halo",) + BASELINES
TASKS = ("thyroid", "digits", "drift")
CONSTANTS_FILE = "energy_constants.json"
# Board keys of power.boards -> rows of halo.energy.BOARDS (the closest core and power class).
BOARD_FROM_POWER = {
    "rpi": "rpi4",
    "tx2": "tx2",
    "tx2-nx": "tx2",
    "tx1": "nano",
    "nano": "nano",
    "xavier-nx": "xavier-nx",
    "agx-xavier": "xavier-nx",
    "orin-nx": "orin-nx",
    "agx-orin": "orin-nx",
}


def _fail(message: str) -> NoReturn:
    """A one-line error, exit code 2 (reported by ``agent.cli.main``)."""
    raise click.ClickException(message)


# --- power measurement around the adaptation loop -------------------------------------------


class Meter:
    """The board's power source sampled in a thread around the adaptation, with an idle
    baseline first (power.md §11). ``unavailable`` says why there is none."""

    def __init__(self, wanted: str, power: Any) -> None:
        from power.discover import NONE, open_source
        from power.errors import PowerError

        self.power = power
        self.source: Any = None
        self.policy: Any = None
        self.unavailable: Optional[str] = None
        self.sampler: Any = None
        self.log: Any = None
        self.idle_window: Optional[Tuple[int, int]] = None
        self._closed = False
        if wanted == NONE:
            self.unavailable = "not asked for (--power none)"
            return
        try:
            source, policy = open_source(wanted, power.options)
        except PowerError as exc:
            if wanted != "auto":
                _fail(str(exc))
            self.unavailable = str(exc)
            return
        if source.method == "model":
            # A CPU-load estimate is a model, not a measurement: it does not go in this slot.
            source.close()
            self.unavailable = (
                f"only a model-based power estimate ({source.name}) is configured; no measurement"
            )
            return
        if not policy.total:
            source.close()
            self.unavailable = f"{source.name} has no total-power rails ({policy.rule})"
            return
        self.source, self.policy = source, policy

    @property
    def available(self) -> bool:
        return self.source is not None

    def start(self, idle_s: float) -> None:
        from power.sampler import ThreadSampler

        if self.source is None:
            return
        self.sampler = ThreadSampler(self.source, self.power.period_ms / 1000.0).start()
        if idle_s > 0:
            t0 = time.monotonic_ns()
            time.sleep(idle_s)
            self.idle_window = (t0, time.monotonic_ns())

    def stop(self) -> None:
        if self.sampler is not None:
            # Two more periods, so that samples cover the end of the measured window.
            time.sleep(2 * self.power.period_ms / 1000.0)
            self.log = self.sampler.stop()
            self.sampler = None
        if self.source is not None and not self._closed:
            self.source.close()
            self._closed = True

    def _series(self) -> Tuple[List[int], List[float]]:
        from power.report import total_series

        times, values, _ = total_series(self.log, self.policy.total)
        return times, values

    def idle_w(self) -> Optional[float]:
        from power.energy import baseline

        if self.idle_window is None or self.log is None:
            return None
        times, values = self._series()
        mean, _, n = baseline(times, values, *self.idle_window)
        return mean / 1000.0 if mean is not None and n else None

    def energy_j(self, start: int, end: int) -> float:
        """Total energy in [start, end] (monotonic ns) by the trapezoid rule."""
        from power.energy import trapezoid_mj

        times, values = self._series()
        return trapezoid_mj(times, values, start, end) / 1000.0

    def dynamic_j(self, start: int, end: int) -> float:
        idle = self.idle_w() or 0.0
        return self.energy_j(start, end) - idle * (end - start) / 1e9

    def report(self, window: Tuple[int, int], exclude: List[Tuple[int, int]], steps: int) -> Dict:
        from power.energy import NotEnoughSamples

        if self.source is None or self.log is None:
            return {"status": "unavailable", "reason": self.unavailable or "no samples"}
        try:
            total = self.energy_j(*window) - sum(self.energy_j(*w) for w in exclude)
        except NotEnoughSamples as exc:
            return {"status": "insufficient-samples", "reason": str(exc)}
        seconds = (window[1] - window[0] - sum(b - a for a, b in exclude)) / 1e9
        idle = self.idle_w()
        out: Dict[str, Any] = {
            "status": "ok",
            "method": self.source.method,
            "source": self.source.name,
            "total_rails": list(self.policy.total),
            "total_j": total,
            "per_step_j": total / steps if steps else 0.0,
            "seconds": seconds,
            "idle_w": idle,
            "dynamic_j": None if idle is None else total - idle * seconds,
            "n_samples": len(self.log.t_ns),
            "note": "adaptation steps only: the evaluations inside the loop are left out",
        }
        return out


# --- what to adapt ----------------------------------------------------------------------------


def _task(opts: Dict[str, Any]) -> Any:
    from halo.errors import HaloError
    from halo.tasks import csv_files_task, digits_task, drift_task, thyroid_task

    files = [opts["source"], opts["target"], opts["target_test"]]
    if opts["task"] is not None:
        if any(f is not None for f in files):
            _fail("give either --task or --source/--target/--target-test, not both")
        build = {
            "thyroid": lambda: thyroid_task(seed=opts["seed"]),
            "digits": lambda: digits_task(seed=opts["seed"]),
            "drift": lambda: drift_task(),
        }[opts["task"]]
    else:
        if any(f is None for f in files):
            _fail(
                "give --task thyroid|digits|drift, or all of --source SRC.csv --target "
                "TRAIN.csv --target-test TEST.csv"
            )

        def build() -> Any:
            return csv_files_task(*files, label=opts["label"])

    try:
        task = build()
    except HaloError as exc:
        _fail(str(exc))
    if opts["class_balanced"]:
        task.source = replace(task.source, class_balanced=True)
        task.target = replace(task.target, class_balanced=True)
    return task


def _network(task: Any, spec: Optional[str]) -> Any:
    from halo.errors import HaloError
    from halo.optimizees.zoo import parse_model

    if spec is None:
        return task.optimizee()
    try:
        return parse_model(spec, task.input_shape, task.n_classes)
    except HaloError as exc:
        _fail(str(exc))


def _check_combinations(opts: Dict[str, Any]) -> None:
    name = opts["optimizer"]
    if opts["lr"] is not None and opts["tune_lr"]:
        _fail("--lr and --tune-lr exclude each other: give a learning rate or let it be tuned")
    if name == "halo":
        if opts["lr"] is not None or opts["tune_lr"]:
            _fail("--lr/--tune-lr apply to the hand-written optimizers; halo learns its own")
    elif opts["optimizer_file"] is not None:
        _fail("--optimizer-file applies to --optimizer halo")
    if opts["lr"] is not None and not (math.isfinite(opts["lr"]) and opts["lr"] > 0):
        _fail(f"--lr must be a positive number, got {opts['lr']}")
    if opts["steps"] < 1 or opts["batch"] < 1 or opts["eval_every"] < 0:
        _fail("--steps and --batch must be >= 1 and --eval-every >= 0")


def _load_halo(opts: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """The learned optimizer and where it came from (checked before any work is done)."""
    from halo.errors import HaloError
    from halo.optim.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, read_metadata
    from halo.optim.hrnn_config import HRNNConfig

    path = opts["optimizer_file"] or str(DEFAULT_CHECKPOINT)
    try:
        optimizer = load_checkpoint(path, expect=HRNNConfig())
        extra = read_metadata(path).get("extra", {})
    except HaloError as exc:
        _fail(str(exc))
    return optimizer, {
        "file": path,
        "shipped": opts["optimizer_file"] is None,
        "made_by": extra.get("made_by"),
        "selected_iteration": extra.get("selected_iteration"),
        "meta_training_wall_s": extra.get("wall_time_s"),
    }


def _baseline(
    opts: Dict[str, Any], net: Any, start: Any, task: Any, settings: Any, sparsity, should_stop
):
    """(optimizer, description, tuning result or None) for a hand-written optimizer."""
    from halo.errors import HaloError
    from halo.optim import make_baseline
    from halo.tune import tune_lr

    name = opts["optimizer"]
    try:
        tuning = None
        lr = opts["lr"]
        if opts["tune_lr"]:
            tuning = tune_lr(
                net,
                start,
                task.target,
                name,
                settings,
                sparsity,
                opts["tune_metric"],
                should_stop=should_stop,
            )
            lr = tuning.lr
        optimizer = make_baseline(name) if lr is None else make_baseline(name, lr=lr)
    except HaloError as exc:
        _fail(str(exc))
    source = "tuned" if tuning is not None else ("--lr" if opts["lr"] is not None else "default")
    return optimizer, {"lr": optimizer.lr, "lr_from": source}, tuning


# --- energy constants -------------------------------------------------------------------------


def _detect_board(power: Any) -> Tuple[str, str]:
    from halo.energy import DEFAULT_BOARD
    from power.boards import board_key, read_model

    key = power.options.board or board_key(read_model(power.options.sysfs_root))
    if key in BOARD_FROM_POWER:
        return BOARD_FROM_POWER[key], f"detected board {key!r}"
    return DEFAULT_BOARD, "board not recognised: generic host figures"


def _constants(opts: Dict[str, Any], power: Any, state_dir: Path) -> Tuple[Any, Dict[str, Any]]:
    from halo.energy import EnergyConstants, EnergyConstantsError

    try:
        if opts["energy_constants"] is not None:
            c = EnergyConstants.load(opts["energy_constants"])
            return c, {"file": opts["energy_constants"]}
        if opts["board"] is not None:
            return EnergyConstants.for_board(opts["board"]), {"from": "--board"}
        saved = state_dir / CONSTANTS_FILE
        if saved.exists():
            return EnergyConstants.load(saved), {"file": str(saved)}
        board, why = _detect_board(power)
        return EnergyConstants.for_board(board), {"from": why}
    except EnergyConstantsError as exc:
        _fail(str(exc))


def _calibrate(opts: Dict[str, Any], power: Any, state_dir: Path) -> Dict[str, Any]:
    from halo.calibrate import calibrate
    from halo.energy import EnergyConstants, EnergyConstantsError

    try:
        if opts["board"] is not None:
            base, why = EnergyConstants.for_board(opts["board"]), "--board"
        else:
            board, why = _detect_board(power)
            base = EnergyConstants.for_board(board)
    except EnergyConstantsError as exc:
        _fail(str(exc))
    out_path = Path(opts["energy_constants"] or state_dir / CONSTANTS_FILE)
    meter = Meter(opts["power"], power)
    seconds = opts["calibrate_seconds"]
    if seconds is None:
        # Windows long against the sensor's smoothing when measuring (power.md §11).
        seconds = max(10.0, 20 * meter.source.tau_s) if meter.available else 0.5
    idle_s = opts["idle_seconds"] if opts["idle_seconds"] is not None else power.idle_seconds
    if not meter.available:
        click.echo(
            f"no power source ({meter.unavailable}): measuring time only; the joules are a "
            f"time-based estimate (seconds here x the {base.board} table's busy-core power)",
            err=True,
        )
    meter.start(idle_s)

    def energy_of() -> Any:
        # Called by calibrate() once every workload ran: the log is complete when stopped.
        meter.stop()
        return meter.dynamic_j

    try:
        result = calibrate(base, seconds, energy_of if meter.available else None)
    finally:
        meter.stop()
    constants = result.constants
    if meter.available:
        idle = meter.idle_w()
        if idle is not None:
            constants = replace(constants, idle_w=idle)
    constants.calibration["power"] = (
        {"source": meter.source.name, "method": meter.source.method, "idle_w": meter.idle_w()}
        if meter.available
        else {"source": None, "reason": meter.unavailable}
    )
    constants.save(out_path)
    return {
        "path": str(out_path),
        "board_from": why,
        "origin": constants.origin,
        "label": "measured energy fit"
        if constants.origin == "calibrated-energy"
        else "time-based estimate: seconds measured here, power from the board table",
        "constants": constants.to_json(),
    }


# --- the command ------------------------------------------------------------------------------


def _curve(result: Any, cumulative: List[float]) -> List[Dict[str, Any]]:
    return [
        {
            "step": step,
            "train_loss": result.train_loss[i],
            "test_loss": result.test_loss[i],
            "test_acc": result.test_accuracy[i],
            "test_balanced_acc": result.test_balanced_accuracy[i],
            "energy_j": cumulative[step],
        }
        for i, step in enumerate(result.eval_steps)
    ]


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: a diverged run's losses become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _table(out: Dict[str, Any]) -> str:
    lines = [
        f"optimizer  {out['optimizer']}  model {out['network']['name']} "
        f"({out['network']['n_params']} parameters)",
        f"{'step':>6} {'train loss':>10} {'test loss':>10} {'test acc':>8} {'bal acc':>8} "
        f"{'energy J':>10}",
    ]
    for p in out["curve"]:
        lines.append(
            "{:>6} {:>10} {:>10} {:>8.4f} {:>8.4f} {:>10.4g}".format(
                p["step"],
                "-" if p["train_loss"] is None else f"{p['train_loss']:.4f}",
                "-" if p["test_loss"] is None else f"{p['test_loss']:.4f}",
                p["test_acc"],
                p["test_balanced_acc"],
                p["energy_j"],
            )
        )
    e = out["energy"]
    lines.append(
        f"energy (model, {e['constants']['board']}, {e['constants']['label']}): "
        f"{e['total_j']:.4g} J, {e['per_step_j'] * 1e3:.4g} mJ/step"
    )
    m = out["energy_measured"]
    if m is not None and m.get("status") == "ok":
        lines.append(
            f"energy ({m['method']}, {m['source']}): {m['total_j']:.4g} J, "
            f"{m['per_step_j'] * 1e3:.4g} mJ/step"
        )
    else:
        lines.append(f"energy (measured): none -- {out['energy_measured_status']}")
    return "\n".join(lines)


@click.command()
@click.option("--task", type=click.Choice(TASKS), help="A built-in task (no CSV files needed).")
@click.option("--source", type=click.Path(dir_okay=False), help="Source-domain CSV (pretraining).")
@click.option("--target", type=click.Path(dir_okay=False), help="Target-domain training CSV.")
@click.option("--target-test", type=click.Path(dir_okay=False), help="Target-domain test CSV.")
@click.option("--label", default="label", show_default=True, help="Label column of the CSVs.")
@click.option("--model", help="mlp:30,30 | cnn1d:8,8 | cnn2d:8,8 (default: the task's own).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="halo", show_default=True)
@click.option(
    "--optimizer-file",
    type=click.Path(dir_okay=False),
    help="A learned-optimizer checkpoint (.npz; default: the shipped one).",
)
@click.option("--lr", type=float, help="Learning rate of a hand-written optimizer.")
@click.option("--tune-lr", is_flag=True, help="Pick the lr on a validation split of TRAIN.")
@click.option(
    "--tune-metric",
    type=click.Choice(["loss", "accuracy", "balanced_accuracy"]),
    default="loss",
    show_default=True,
    help="What --tune-lr maximises on the validation split (loss: minimises).",
)
@click.option("--steps", type=int, default=300, show_default=True)
@click.option("--batch", type=int, default=64, show_default=True)
@click.option(
    "--class-balanced",
    is_flag=True,
    help="Train on class-balanced minibatches, rare classes re-sampled (thyroid always is).",
)
@click.option("--sparsity", help="Layer-wise update probabilities, e.g. 0.1,0.3,0.5 (dense).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-every", type=int, default=10, show_default=True, help="0: first/last.")
@click.option("--pretrain-steps", type=int, default=500, show_default=True)
@click.option("--board", help="Energy constants of a known board (rpi4, tx2, nano, ...).")
@click.option(
    "--energy-constants",
    type=click.Path(dir_okay=False),
    help="Energy constants file to use (or, with --calibrate, to write).",
)
@click.option("--calibrate", is_flag=True, help="Measure this board's energy constants.")
@click.option("--calibrate-seconds", type=float, help="Seconds per calibration workload.")
@click.option(
    "--power",
    default="auto",
    show_default=True,
    metavar="auto|none|SOURCE",
    help="Power source to measure energy with (auto: any measured source there is).",
)
@click.option("--idle-seconds", type=float, help="Idle baseline (default: [power] config).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Agent TOML file ([power], state_dir).",
)
@click.option(
    "--sysfs-root",
    type=click.Path(file_okay=False),
    help="Read power sysfs under this directory (a simulated board).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def adapt(**opts: Any) -> None:
    """Adapt a pretrained model to a new domain on this board and report accuracy and energy.

    \b
    Examples:
      halo-agent adapt --task thyroid --optimizer halo --json
      halo-agent adapt --task digits --optimizer adam --tune-lr --sparsity 0.1,0.3,0.5
      halo-agent adapt --source male.csv --target female_train.csv \\
          --target-test female_test.csv --model mlp:30,30 --optimizer halo --json
      halo-agent adapt --calibrate --json
    """
    from agent.config import ConfigError, load_config

    try:
        config = load_config(opts["config_path"])
    except ConfigError as exc:
        _fail(str(exc))
    power = config.power
    if opts["sysfs_root"] is not None:
        power = replace(power, options=replace(power.options, sysfs_root=opts["sysfs_root"]))
    if opts["calibrate"]:
        adapting = ("task", "source", "target", "target_test", "model", "optimizer_file", "lr")
        if any(opts[k] is not None for k in adapting) or opts["tune_lr"]:
            _fail("--calibrate runs on its own; adapt in a separate run")
        out = _calibrate(opts, power, config.state_dir)
        if opts["as_json"]:
            click.echo(json.dumps(out, indent=1))
        else:
            c = out["constants"]
            click.echo(f"wrote {out['path']} ({out['label']})")
            for unit, j in c["joules"].items():
                click.echo(f"  {unit:15s} {j:.4g} J  {c['seconds'][unit]:.4g} s")
        return
    _run(opts, power, config.state_dir)


# Every key adaptation_document() reads, with the CLI's defaults.
DEFAULT_OPTIONS: Dict[str, Any] = {
    "task": None,
    "source": None,
    "target": None,
    "target_test": None,
    "label": "label",
    "model": None,
    "optimizer": "halo",
    "optimizer_file": None,
    "lr": None,
    "tune_lr": False,
    "tune_metric": "loss",
    "steps": 300,
    "batch": 64,
    "class_balanced": False,
    "sparsity": None,
    "seed": 0,
    "eval_every": 10,
    "pretrain_steps": 500,
    "board": None,
    "energy_constants": None,
    "power": "auto",
    "idle_seconds": None,
}


def _run(opts: Dict[str, Any], power: Any, state_dir: Path) -> None:
    out = adaptation_document(opts, power, state_dir)
    if opts["as_json"]:
        click.echo(json.dumps(out, indent=1))
    else:
        click.echo(_table(out))


def adaptation_document(
    opts: Dict[str, Any],
    power: Any,
    state_dir: Path,
    should_stop: Optional[Callable[[], bool]] = None,
) -> Dict[str, Any]:
    """Run one adaptation as ``opts`` say (keys of :data:`DEFAULT_OPTIONS`) and return its JSON
    document; shared by ``halo-agent adapt`` and the daemon's ``adapt`` job. A problem the
    caller can fix raises ``click.ClickException`` with a one-line message. ``should_stop``
    is asked before every optimizer step (pretraining and LR tuning included): a yes raises
    :class:`halo.errors.Stopped`."""
    from halo.adapt import AdaptSettings, run_adaptation, start_point
    from halo.energy import cumulative_j, model_report, run_work
    from halo.errors import HaloError
    from halo.sparsity import SparsitySchedule

    _check_combinations(opts)
    try:
        sparsity = SparsitySchedule.parse(opts["sparsity"]) if opts["sparsity"] else None
        settings = AdaptSettings(opts["steps"], opts["batch"], opts["seed"], opts["eval_every"])
    except HaloError as exc:
        _fail(str(exc))
    constants, constants_from = _constants(opts, power, state_dir)
    halo = _load_halo(opts) if opts["optimizer"] == "halo" else None
    task = _task(opts)
    net = _network(task, opts["model"])
    t0 = time.perf_counter()
    try:
        start = start_point(
            task, net, seed=opts["seed"], steps=opts["pretrain_steps"], should_stop=should_stop
        )
    except HaloError as exc:
        _fail(str(exc))
    pretrain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if halo is not None:
        (optimizer, optimizer_info), tuning = halo, None
    else:
        optimizer, optimizer_info, tuning = _baseline(
            opts, net, start, task, settings, sparsity, should_stop
        )
    tune_s = time.perf_counter() - t0

    meter = Meter(opts["power"], power)
    idle_s = opts["idle_seconds"] if opts["idle_seconds"] is not None else power.idle_seconds
    meter.start(idle_s)
    t0 = time.perf_counter()
    try:
        _, result = run_adaptation(
            net, start, optimizer, task.target, settings, sparsity, should_stop
        )
    except HaloError as exc:
        meter.stop()
        _fail(str(exc))
    finally:
        meter.stop()
    adapt_s = time.perf_counter() - t0

    itemsize = start[0].dtype.itemsize
    works = run_work(net, result.steps, itemsize)
    energy = model_report(constants, works, itemsize)
    energy["constants"].update(constants_from)
    measured = meter.report(result.window_ns, result.eval_windows_ns, settings.steps)
    measured_ok = meter.available and measured.get("status") == "ok"
    step_ms = [r.step_ns / 1e6 for r in result.steps]
    opt_ms = [r.optimizer_ns / 1e6 for r in result.steps]
    eval_s = sum(b - a for a, b in result.eval_windows_ns) / 1e9
    tuning_info = None
    if tuning is not None:
        tuning_info = tuning.as_dict()
        tuning_info["energy_j"] = sum(
            model_report(constants, run_work(net, r.steps, itemsize), itemsize)["total_j"]
            for r in tuning.runs
        )
    out: Dict[str, Any] = {
        "optimizer": opts["optimizer"],
        "optimizer_info": optimizer_info,
        "settings": {
            "task": opts["task"],
            "source": opts["source"],
            "target": opts["target"],
            "target_test": opts["target_test"],
            "label": opts["label"],
            "model": opts["model"],
            "lr": getattr(optimizer, "lr", None),
            "tune_lr": opts["tune_lr"],
            "steps": settings.steps,
            "batch": settings.batch_size,
            "class_balanced": task.target.class_balanced,
            "sparsity": list(sparsity.probs) if sparsity is not None else None,
            "seed": settings.seed,
            "eval_every": settings.eval_every,
            "pretrain_steps": opts["pretrain_steps"],
            "dtype": str(start[0].dtype),
        },
        "task": {
            "name": task.name,
            "classes": task.class_names,
            "n_train": int(len(task.target.y_train)),
            "n_test": int(len(task.target.y_test)),
        },
        "network": {"name": net.name, "n_params": net.n_params, "tensors": net.tensor_names},
        "curve": _curve(result, cumulative_j(constants, works)),
        "initial_test_acc": result.test_accuracy[0],
        "final_test_acc": result.test_accuracy[-1],
        "final_test_balanced_acc": result.test_balanced_accuracy[-1],
        "final_test_loss": result.test_loss[-1],
        "final_train_loss": result.train_loss[-1],
        "update_fraction": float(result.updated.mean()) if settings.steps else 0.0,
        "energy": energy,
        "energy_measured": measured if measured_ok else None,
        "energy_measured_status": "ok"
        if measured_ok
        else (meter.unavailable or measured.get("reason", "unavailable")),
        "wall_s": {
            "pretrain": pretrain_s,
            "tune": tune_s,
            "adapt": adapt_s,
            "adapt_without_eval": adapt_s - eval_s,
            "step_mean_ms": sum(step_ms) / len(step_ms) if step_ms else 0.0,
            "optimizer_step_mean_ms": sum(opt_ms) / len(opt_ms) if opt_ms else 0.0,
        },
        "tuning": tuning_info,
    }
    return _finite(out)
