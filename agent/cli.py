"""`halo-agent`: the board agent's command line.

Errors a user can fix print one line (``halo-agent: error: ...``) and exit 2; a benchmark that
ran but failed (bad model, crash, timeout) prints its reason and exits 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import uuid
from dataclasses import fields, replace
from typing import Any, Dict, List, Optional

import click

from agent import sysfacts
from agent.bench.job import run_bench_job, spec_problem
from agent.config import ConfigError, PowerConfig, load_config
from protocol.bodies import BenchResult, BenchSpec
from protocol.errors import ProtocolError

PROG = "halo-agent"
_SPEC_DEFAULTS = {fl.name: fl.default for fl in fields(BenchSpec)}


class UserError(Exception):
    """Printed as one line, exit code 2."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """halofarm board agent: benchmark TFLite models on this board and report the results.

    \b
    Examples:
      halo-agent info
      halo-agent bench model.tflite --threads 1 --min-runs 100
      halo-agent power probe
    """


@cli.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Agent TOML file (default: built-in defaults plus HALOFARM_* variables).",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING"]),
    default="INFO",
    show_default=True,
)
def run(config_path: Optional[str], log_level: str) -> None:
    """Run the daemon: connect to the broker, publish caps and heartbeats, run the jobs sent.

    \b
    Example:
      halo-agent run --config /etc/halofarm/agent.toml
    """
    # Imported here: `bench` and `info` must work on a board without a broker library set up.
    from agent.daemon import configure_logging, run_daemon
    from agent.statedb import StateDBError

    configure_logging(log_level)
    try:
        code = run_daemon(load_config(config_path))
    except (ConfigError, StateDBError) as exc:
        raise UserError(str(exc)) from None
    sys.exit(code)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_affinity(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Any:
    if value is None:
        return None
    try:
        cpus = sysfacts.parse_cpu_list(value)
    except ValueError:
        cpus = []
    if not cpus:
        raise click.BadParameter(f"expected CPU numbers like 0,1 or 0-3, got {value!r}")
    return sorted(set(cpus))


def _default(name: str) -> str:
    return f"default: {_SPEC_DEFAULTS[name]}"


def _option_of(field: str) -> str:
    """The command-line option behind a BenchSpec field path such as ``spec.min_runs``."""
    name = re.sub(r"^spec\.|\[.*$", "", field)
    return "--" + {"timeout_s": "timeout"}.get(name, name).replace("_", "-")


def _fmt_ns(ns: Optional[float]) -> str:
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.0f} ns"


def _rows(rows: List[List[str]]) -> str:
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{r[0].ljust(width)}  {r[1]}" for r in rows)


def _bench_table(result: BenchResult) -> str:
    spec = result.spec
    rows = [
        ["model", f"{spec.model_name} ({result.model_bytes} bytes)"],
        [
            "runtime",
            "{} {}, XNNPACK {}{}, {} thread{}".format(
                result.runtime,
                result.runtime_version,
                "on" if spec.xnnpack else "off",
                " (delegated)" if result.delegated else " (not delegated)",
                spec.threads,
                "" if spec.threads == 1 else "s",
            ),
        ],
        ["init", _fmt_ns(result.init_ns)],
        ["first", _fmt_ns(result.first_ns)],
        ["warmup", f"{result.warmup_count} runs, mean {_fmt_ns(result.warmup_mean_ns)}"],
    ]
    s = result.stats
    if s is not None:
        rows += [
            ["runs", str(s.count)],
            ["p50 / p90 / p99", " / ".join(_fmt_ns(v) for v in (s.p50, s.p90, s.p99))],
            ["min / max", " / ".join(_fmt_ns(v) for v in (s.min, s.max))],
            ["mean / std / cv", f"{_fmt_ns(s.mean)} / {_fmt_ns(s.std)} / {s.cv:.3f}"],
        ]
    if result.peak_rss_bytes is not None:
        rows.append(["peak RSS", f"{result.peak_rss_bytes / 2**20:.1f} MiB"])
    if result.energy is not None:
        rows += _energy_rows(result.energy)
    return _rows(rows)


def _energy_rows(energy: Dict[str, Any]) -> List[List[str]]:
    if energy.get("status") != "ok":
        return [["energy", f"{energy.get('status')}: {energy.get('reason')}"]]
    window = energy["window"]
    total = energy["total"]
    rows = [
        [
            "energy source",
            f"{energy['source']['name']} ({energy['method']}), total = "
            f"{' + '.join(total['rails'])}",
        ],
        [
            "window",
            f"{window['seconds']:.2f} s, {window['inferences']} inferences, "
            f"{energy['sampler']['n_in_window']} samples",
        ],
        ["energy / inference", f"{energy['e_per_inference_mj']:.4g} mJ"],
        ["power mean / peak", f"{energy['p_mean_mw']:.0f} / {energy['p_peak_mw']:.0f} mW"],
    ]
    if energy.get("e_dyn_per_inference_mj") is not None:
        idle = energy["idle"]
        rows += [
            ["dynamic / inference", f"{energy['e_dyn_per_inference_mj']:.4g} mJ"],
            ["idle power", f"{idle['p_mean_mw']:.0f} mW (std {idle['p_std_mw'] or 0:.0f})"],
        ]
    check = energy["integration_check"]
    if check["flagged"]:
        rows.append(["WARNING", "trapezoid and mean x duration differ by more than 1 %"])
    return rows


def _progress_printer(enabled: bool) -> Any:
    if not enabled:
        return None

    def show(phase: str, done: int, total: Optional[int]) -> None:
        click.echo(f"\r{phase} {done} runs   ", nl=False, err=True)

    return show


def _config_options(func: Any) -> Any:
    func = click.option(
        "--sysfs-root",
        type=click.Path(file_okay=False),
        help="Read power sysfs under this directory (a simulated board); overrides the config.",
    )(func)
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help="Agent TOML file; its [power] section applies.",
    )(func)


def _power_config(config_path: Optional[str], sysfs_root: Optional[str]) -> PowerConfig:
    try:
        power = load_config(config_path).power
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    if sysfs_root is not None:
        power = replace(power, options=replace(power.options, sysfs_root=sysfs_root))
    return power


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--threads", type=int, help="Interpreter threads ({}).".format(_default("threads")))
@click.option("--no-xnnpack", is_flag=True, help="Disable the default XNNPACK delegate.")
@click.option(
    "--affinity",
    callback=_parse_affinity,
    metavar="CPUS",
    help="Pin the benchmark process to these CPUs, e.g. 0,1 or 2-3.",
)
@click.option("--seed", type=int, help="Seed of the random inputs ({}).".format(_default("seed")))
@click.option(
    "--warmup-runs", type=int, help=f"At least this many warmup runs ({_default('warmup_runs')})."
)
@click.option(
    "--warmup-seconds",
    type=float,
    help=f"Warm up at least this many seconds ({_default('warmup_seconds')}).",
)
@click.option(
    "--min-runs", type=int, help=f"Measure at least this many runs ({_default('min_runs')})."
)
@click.option(
    "--min-seconds",
    type=float,
    help=f"Measure at least this many seconds ({_default('min_seconds')}).",
)
@click.option(
    "--max-seconds",
    type=float,
    help=f"Start no run after this many seconds per phase ({_default('max_seconds')}).",
)
@click.option(
    "--timeout",
    type=float,
    help="Kill the benchmark after this many seconds (default: max + warmup seconds + 60).",
)
@click.option(
    "--power",
    metavar="auto|none|SOURCE",
    help="Measure energy with this power source ('halo-agent power probe' lists them; "
    "default: none).",
)
@click.option(
    "--idle-seconds", type=float, help="Idle baseline before the run (default: [power] config)."
)
@click.option(
    "--energy-seconds",
    type=float,
    help="Measured window in energy mode (default: max(10 s, 20 sensor time constants)).",
)
@click.option(
    "--power-period-ms", type=float, help="Power sampling period (default: [power] config)."
)
@_config_options
@click.option("--json", "as_json", is_flag=True, help="Print the BenchResult as JSON.")
def bench(
    model: str,
    as_json: bool,
    no_xnnpack: bool,
    timeout: Optional[float],
    config_path: Optional[str],
    sysfs_root: Optional[str],
    **opts: Any,
) -> None:
    """Benchmark MODEL (.tflite) here, with the same job the daemon runs.

    Timing follows TFLite benchmark_model: warmup >= runs and >= seconds, then measure >= runs and
    >= seconds, capped at --max-seconds; invoke() alone is timed. With --power the board's rails
    are sampled too: an idle baseline with the model loaded, then a window of at least 10 s.

    \b
    Example:
      halo-agent bench model.tflite --power auto --json > result.json
    """
    power = _power_config(config_path, sysfs_root)
    values: Dict[str, Any] = {k: v for k, v in opts.items() if v is not None}
    try:
        spec = BenchSpec(
            model_sha256=_sha256(model),
            model_name=os.path.basename(model)[:128],
            xnnpack=not no_xnnpack,
            timeout_s=timeout,
            **values,
        )
        spec.validate("spec")
    except ProtocolError as exc:
        raise UserError(f"{_option_of(exc.field)}: {exc.reason}") from None
    except OSError as exc:
        raise UserError(f"cannot read {model}: {exc.strerror or exc}") from None
    problem = spec_problem(spec, power)
    if problem:
        raise UserError(problem)

    progress = _progress_printer(not as_json and sys.stderr.isatty())
    result = run_bench_job(
        os.path.abspath(model),
        spec,
        job_id="local-" + uuid.uuid4().hex[:12],
        cmd_id=uuid.uuid4().hex,
        result_id=uuid.uuid4().hex,
        progress=progress,
        power=power,
    )
    if progress is not None:
        click.echo("\r" + " " * 40 + "\r", nl=False, err=True)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    elif result.status == "ok":
        click.echo(_bench_table(result))
    if result.status != "ok":
        click.echo(f"{PROG}: benchmark failed: {result.reason}", err=True)
        sys.exit(1)


@cli.command()
@_config_options
@click.option("--json", "as_json", is_flag=True, help="Print the caps as JSON.")
def info(config_path: Optional[str], sysfs_root: Optional[str], as_json: bool) -> None:
    """What this board is and can run (the caps message the agent publishes)."""
    caps = sysfacts.caps(power=_power_config(config_path, sysfs_root).options)
    if as_json:
        click.echo(json.dumps(caps, indent=1))
        return
    click.echo(
        _rows([[k, ", ".join(v) if isinstance(v, list) else str(v)] for k, v in caps.items()])
    )


@cli.group()
def power() -> None:
    """Power sources on this board: probe them, cross-check with tegrastats.

    \b
    Examples:
      halo-agent power probe --seconds 2
      halo-agent power probe --sysfs-root /tmp/sim-tx2 --json
      halo-agent power tegrastats tegrastats.log
    """


@power.command()
@_config_options
@click.option(
    "--seconds",
    type=click.FloatRange(0.0, 3600.0),
    default=1.0,
    show_default=True,
    help="Sample each source this long (0: one reading).",
)
@click.option(
    "--period-ms",
    type=click.FloatRange(0.5, 10000.0),
    default=10.0,
    show_default=True,
    help="Sampling period.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the probe as JSON.")
def probe(
    config_path: Optional[str],
    sysfs_root: Optional[str],
    seconds: float,
    period_ms: float,
    as_json: bool,
) -> None:
    """List power sources, rails with live readings, the total-power rails and sensor settings."""
    from power.probe import format_probe
    from power.probe import probe as run_probe

    options = _power_config(config_path, sysfs_root).options
    result = run_probe(options, seconds, period_ms / 1000.0)
    click.echo(json.dumps(result, indent=1) if as_json else format_probe(result))


@power.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def tegrastats(file: str, as_json: bool) -> None:
    """Summarise a tegrastats log (JetPack 4-7): per-rail mean/min/max and total power.

    \b
    Example:
      tegrastats --interval 100 --logfile ts.log & sleep 10; kill %1
      halo-agent power tegrastats ts.log
    """
    from power.tegrastats import format_summary, parse_file, summarize

    try:
        summary = summarize(parse_file(file))
    except OSError as exc:
        raise UserError(f"cannot read {file}: {exc.strerror or exc}") from None
    if summary["lines"] == 0:
        raise UserError(f"{file}: no tegrastats rail readings found")
    click.echo(json.dumps(summary, indent=1) if as_json else format_summary(summary))


# Commands registered here, defined in their own modules (adaptation, microcontrollers).
from agent.adapt_cli import adapt  # noqa: E402
from agent.mcu_cli import mcu  # noqa: E402

cli.add_command(adapt)
cli.add_command(mcu)


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"{PROG}: error: {message}", err=True)
    sys.exit(code)


def main(argv: Optional[List[str]] = None) -> None:
    try:
        code = cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        _fail(exc.format_message().replace("\n", " "))
    except UserError as exc:
        _fail(str(exc).replace("\n", " "))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
