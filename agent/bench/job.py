"""One benchmark job: environment before, the timing protocol in a child process, environment
after, all folded into a :class:`protocol.bodies.BenchResult`.

The parent (the daemon or ``halo-agent bench``) never loads the model itself and never raises
for a bad one: a load error, a crash (signal), a hang (timeout) or a child that exits without a
word all become ``status="failed"`` with a one-line reason.

Result fields beyond the timings: ``env_pre``/``env_post`` are :func:`agent.sysfacts.env_snapshot`
taken just before the child starts and just after it ends; ``env_pre["process"]`` is what the
child reported about itself (pid, effective CPU affinity, resolver, threads, input tensors), the
timeout used and the measure phase's ``[start, end]`` on ``time.monotonic_ns``. ``raw_ns`` holds
every measured run (unless ``spec.keep_raw`` is false) and ``stats`` is computed from it here, in
the parent.

Clock steps: every duration is measured on ``perf_counter``/``monotonic``, so a wall-clock step
during the job (NTP on a board without an RTC) changes no timing; ``started_at``/``finished_at``
are wall-clock stamps, and when they moved apart by more than the job took (a step beyond
CLOCK_STEP_TOLERANCE_S) ``env_post["clock_step_s"]`` says by how much.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Dict, Optional, Tuple

from agent.bench.child import child_main
from agent.bench.energy import EnergyRun, check_power, energy_spec
from agent.bench.stats import compute_stats
from agent.bench.timing import MAX_RUNS
from agent.config import PowerConfig
from agent.runtime import RUNTIMES
from agent.sysfacts import env_snapshot
from protocol.bodies import BenchResult, BenchSpec, pack_ns

log = logging.getLogger(__name__)

# progress(phase, done, total): phase "init" | "idle" | "warmup" | "measure"; total None when
# time-bound.
ProgressCallback = Callable[[str, int, Optional[int]], None]

PROGRESS_MIN_INTERVAL_S = 1.0
POLL_S = 0.25
# After its final message the child only has to exit; give it this long before killing it.
EXIT_GRACE_S = 10.0
TIMEOUT_MARGIN_S = 60.0
CANCELLED = "cancelled"
# Sampling periods the power sampler runs on after the measured window, so it is covered.
SAMPLES_PAST_END = 3
# NTP slews small offsets; anything past this is a step, recorded as env_post["clock_step_s"].
CLOCK_STEP_TOLERANCE_S = 1.0


def default_timeout(spec: BenchSpec) -> float:
    """The contract's default when ``spec.timeout_s`` is None: max_seconds + warmup + 60 s
    (+ the idle baseline in energy mode)."""
    idle = spec.idle_seconds if spec.power != "none" and spec.idle_seconds else 0.0
    return spec.max_seconds + spec.warmup_seconds + idle + TIMEOUT_MARGIN_S


def installed_runtime() -> Tuple[str, str]:
    """(name, version) of the runtime the child will use, found without importing it; reported
    when the child dies before saying which runtime it loaded."""
    for name, module in RUNTIMES:
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            try:
                return name, metadata.version(name)
            except metadata.PackageNotFoundError:
                return name, "unknown"
    return "none", "none"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _Throttle:
    """Forwards progress at most once per interval; the newest update waits for its turn."""

    def __init__(self, callback: Optional[ProgressCallback]) -> None:
        self.callback = callback
        self.last = float("-inf")
        self.pending: Optional[Tuple[str, int, Optional[int]]] = None

    def update(self, phase: str, done: int, total: Optional[int]) -> None:
        self.pending = (phase, done, total)
        self.flush()

    def flush(self) -> None:
        now = time.monotonic()
        if self.callback is None or self.pending is None:
            return
        if now - self.last < PROGRESS_MIN_INTERVAL_S:
            return
        update, self.pending = self.pending, None
        try:
            self.callback(*update)
        except Exception:  # progress is best effort; the measurement goes on
            log.warning("progress callback failed", exc_info=True)
        # Counted from the callback's end, so deliveries are an interval apart as the callback
        # sees them even when one call was slow to start.
        self.last = time.monotonic()


@dataclass
class _ChildReport:
    runtime: Optional[Tuple[str, str]] = None
    loaded: Dict[str, Any] = field(default_factory=dict)
    timings: Optional[Dict[str, Any]] = None
    idle: Optional[Tuple[int, int]] = None
    reason: Optional[str] = None


def _context() -> Any:
    """The start method for benchmark children. A spawn child pays for a new interpreter and
    numpy on every job (0.3 s on a 2-core x86 VM, seconds on a Pi), which dominated short
    benchmarks; the fork server starts once with the child's imports preloaded and forks a
    fresh single-threaded child per job. Spawn where there is no fork server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # Only the runtime load_runtime() would pick: two TFLite builds in one process may clash.
    runtime = [m for _, m in RUNTIMES if importlib.util.find_spec(m.split(".")[0]) is not None]
    # Each child runs the parent's main script again (multiprocessing's __main__ fix-up); for
    # the `halo-agent` script that is `from agent.cli import main`, cheap once the daemon's
    # imports are loaded. (agent.cli itself must not be: `python -m agent.cli` would warn.)
    preload = [
        "agent.bench.forkserver_setup",
        child_main.__module__,
        "numpy.random",
        *runtime[:1],
        "agent.daemon",
    ]
    ctx.set_forkserver_preload(preload)
    return ctx


def _supervise(
    model_path: str,
    spec: BenchSpec,
    timeout: float,
    progress: Optional[ProgressCallback],
    cancel: Optional[threading.Event],
) -> _ChildReport:
    report = _ChildReport()
    throttle = _Throttle(progress)
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    # The fork server's environment is the one it started with: hand the child today's.
    proc = ctx.Process(
        target=child_main,
        args=(sender, model_path, spec, dict(os.environ)),
        name="halo-bench",
        daemon=True,
    )
    deadline = time.monotonic() + timeout
    proc.start()
    sender.close()  # the child holds the only write end now: EOF means it is gone
    finished = False
    try:
        while not finished:
            if cancel is not None and cancel.is_set():
                report.reason = CANCELLED
                return report
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                report.reason = f"timeout after {timeout:g} s"
                return report
            if receiver.poll(min(remaining, POLL_S)):
                try:
                    message = receiver.recv()
                except (EOFError, OSError):
                    break
                kind = message[0]
                if kind == "runtime":
                    report.runtime = (message[1], message[2])
                elif kind == "phase":
                    throttle.update(message[1], message[2], message[3])
                elif kind == "loaded":
                    report.loaded = message[1]
                elif kind == "idle":
                    report.idle = (message[1], message[2])
                elif kind == "done":
                    report.timings = message[1]
                    finished = True
                elif kind == "failed":
                    report.reason = message[1]
                    finished = True
            throttle.flush()
        proc.join(EXIT_GRACE_S if finished else max(deadline - time.monotonic(), 0.0))
        if not finished:
            code = proc.exitcode
            if code is None:
                report.reason = f"timeout after {timeout:g} s"
            elif code < 0:
                report.reason = f"runtime crashed (signal {signal_name(-code)})"
            else:
                report.reason = f"benchmark process exited with code {code} without a result"
        return report
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(EXIT_GRACE_S)
        receiver.close()


def clock_step_s(wall_s: float, monotonic_s: float) -> Optional[float]:
    """How far the wall clock was stepped (NTP, an RTC-less board setting its time) while
    ``monotonic_s`` passed, if by more than CLOCK_STEP_TOLERANCE_S; else None."""
    step = wall_s - monotonic_s
    return round(step, 3) if abs(step) > CLOCK_STEP_TOLERANCE_S else None


def spec_problem(spec: BenchSpec, power: Optional[PowerConfig] = None) -> Optional[str]:
    """Why this agent cannot run a (protocol-valid) spec, or None."""
    if spec.min_runs > MAX_RUNS:
        return (
            f"min_runs {spec.min_runs} exceeds the agent's limit of {MAX_RUNS} runs "
            "(the raw per-run array must fit one result message)"
        )
    return check_power(spec, power or PowerConfig())


def _precheck(model_path: str, spec: BenchSpec, power: PowerConfig) -> Optional[str]:
    if not os.path.isfile(model_path):
        return f"model file not found: {model_path}"
    return spec_problem(spec, power)


def _measure(
    model_path: str,
    spec: BenchSpec,
    power: PowerConfig,
    progress: Optional[ProgressCallback],
    cancel: Optional[threading.Event],
) -> Tuple[_ChildReport, Optional[Dict[str, Any]], float]:
    """(child report, energy object or None, timeout used): the child, with the power sampler
    running around it in energy mode."""
    if spec.power == "none":
        timeout = spec.timeout_s if spec.timeout_s is not None else default_timeout(spec)
        return _supervise(model_path, spec, timeout, progress, cancel), None, timeout
    run = EnergyRun(spec, power)
    try:
        child_spec = energy_spec(spec, run.tau_s, power)
        timeout = spec.timeout_s if spec.timeout_s is not None else default_timeout(child_spec)
        run.start(child_spec.power_period_ms)
        report = _supervise(model_path, child_spec, timeout, progress, cancel)
        if report.timings is not None:
            # The integral needs a sample past the window's end: give the sampler a few
            # periods before stopping it (a slow-starting child used to leave that by chance).
            period_ms = child_spec.power_period_ms or power.period_ms
            past_end_ns = report.timings["measure_end_ns"] + int(SAMPLES_PAST_END * period_ms * 1e6)
            time.sleep(max(0.0, (past_end_ns - time.monotonic_ns()) / 1e9))
        log = run.stop()
        timings = report.timings
        window = None
        if timings is not None and report.reason is None:
            window = (timings["measure_start_ns"], timings["measure_end_ns"])
        inferences = timings["measure_count"] if timings is not None else 0
        return report, run.report(log, window, inferences, report.idle), timeout
    finally:
        run.close()


def run_bench_job(
    model_path: str,
    spec: BenchSpec,
    job_id: str,
    cmd_id: str,
    result_id: str,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
    power: Optional[PowerConfig] = None,
) -> BenchResult:
    """Benchmark ``model_path`` per ``spec`` in a child process; never raises for a bad model.

    Setting ``cancel`` (checked every 0.25 s) kills the child: the result is failed with reason
    :data:`CANCELLED`. With ``spec.power`` other than ``none`` the power source from ``power``
    (the agent's ``[power]`` config) is sampled around the child and the result carries
    ``energy``.
    """
    power = power or PowerConfig()
    started_at, started_mono = time.time(), time.monotonic()
    model_bytes = os.path.getsize(model_path) if os.path.isfile(model_path) else None
    env_pre = env_snapshot()
    reason = _precheck(model_path, spec, power)
    energy: Optional[Dict[str, Any]] = None
    if reason:
        report, timeout = _ChildReport(reason=reason), 0.0
    else:
        report, energy, timeout = _measure(model_path, spec, power, progress, cancel)
    env_post = env_snapshot()
    finished_at = time.time()
    step = clock_step_s(finished_at - started_at, time.monotonic() - started_mono)
    if step is not None:
        # Timings are on perf_counter and unaffected; only the wall-clock stamps jumped.
        env_post["clock_step_s"] = step
        log.warning("the wall clock stepped %+.1f s during the benchmark", step)
    env_pre["process"] = dict(report.loaded.get("context", {}), timeout_s=timeout)
    if report.timings is not None:
        # The measure phase on the board's CLOCK_MONOTONIC: lines results up with other logs.
        env_pre["process"]["measure_window_ns"] = [
            report.timings["measure_start_ns"],
            report.timings["measure_end_ns"],
        ]

    runtime, runtime_version = report.runtime or installed_runtime()
    timings = report.timings
    ok = timings is not None and report.reason is None
    raw = timings["raw_ns"] if ok else None
    return BenchResult(
        result_id=result_id,
        job_id=job_id,
        cmd_id=cmd_id,
        status="ok" if ok else "failed",
        reason=None if ok else report.reason,
        spec=spec,
        model_bytes=model_bytes,
        runtime=runtime,
        runtime_version=runtime_version,
        init_ns=report.loaded.get("init_ns"),
        first_ns=timings["first_ns"] if ok else None,
        warmup_count=timings["warmup_count"] if ok else 0,
        warmup_mean_ns=timings["warmup_mean_ns"] if ok else None,
        stats=compute_stats(raw) if ok else None,
        raw_ns=pack_ns(raw) if raw and spec.keep_raw else None,
        env_pre=env_pre,
        env_post=env_post,
        ops=report.loaded.get("ops", {}),
        delegated=report.loaded.get("delegated", False),
        peak_rss_bytes=timings["peak_rss_bytes"] if ok else None,
        started_at=started_at,
        finished_at=finished_at,
        energy=energy if ok else None,
    )
