"""Calibrating the energy model on a board: run workloads of known work, measure their time (and,
when the caller has a power source, their energy), fit the per-unit constants.

Each kernel is dominated by one unit of :data:`halo.energy.UNITS` -- float32 matrix products
(``mac``), in-cache elementwise arithmetic (``op``), exp/log/tanh/asinh/sqrt (``transcendental``),
large copies (``byte``) -- and a short Adam adaptation, mostly per-call overhead, pins the
``call`` unit on code like the adaptation loop's (a loop of tiny NumPy operations would give a
several times smaller, unrepresentative figure). Every workload counts every unit it touches,
and a non-negative least-squares fit over all of them separates the units. A HALO adaptation,
not used in the fit, checks the fitted model against its measured time (and energy).

Power sampling belongs to the caller (the agent owns the power package): it passes
``energy_of(t0_ns, t1_ns) -> dynamic joules`` over ``time.monotonic_ns`` windows, computed from
samples taken while :func:`calibrate` ran. Without it, only the seconds are measured and the
joules are the board's assumed busy-core power times those seconds (``calibrated-time``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from halo.energy import UNITS, EnergyConstants, Work, fit_nonnegative, run_work

EnergyOf = Callable[[int, int], float]


@dataclass
class WorkloadRun:
    name: str
    reps: int
    work: Work  # total over all repetitions
    seconds: float
    window_ns: Tuple[int, int]
    dynamic_j: Optional[float] = None
    fitted: bool = True


@dataclass
class CalibrationResult:
    constants: EnergyConstants
    runs: List[WorkloadRun] = field(default_factory=list)
    checks: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class Measured:
    work: Work
    seconds: float  # adaptation work only (evaluations excluded)
    window_ns: Tuple[int, int]
    exclude_ns: List[Tuple[int, int]]  # windows inside ``window_ns`` that are not the work
    reps: int


def _repeat(body: Callable[[], None], work: Work, seconds: float) -> Measured:
    body()  # warm-up: allocation, first-touch, BLAS start-up
    reps = 0
    t0 = time.monotonic_ns()
    p0 = time.perf_counter()
    while True:
        body()
        reps += 1
        if time.perf_counter() - p0 >= seconds:
            break
    elapsed = time.perf_counter() - p0
    return Measured(work.scaled(reps), elapsed, (t0, time.monotonic_ns()), [], reps)


def _kernels(rng: np.random.Generator) -> List[Tuple[str, Callable[[], None], Work]]:
    """Micro-workloads, one per compute unit. In-cache traffic is not counted as ``byte``
    (the unit prices memory traffic, which only the large copy has)."""
    f4 = np.float32
    # Products of the optimizee/optimizer scale: a (64 x 256) batch through a 256 x 256 layer.
    a = rng.standard_normal((64, 256)).astype(f4)
    b = rng.standard_normal((256, 256)).astype(f4)

    def matmul() -> None:
        for _ in range(8):
            a @ b

    # Elementwise arithmetic on 16k floats (64 KiB: in cache on every board).
    n = 16384
    x, y, z = (rng.random(n).astype(f4) + 0.5 for _ in range(3))

    def elementwise() -> None:
        for _ in range(8):
            x * y + z

    def transcendental() -> None:
        for fn in (np.exp, np.log, np.tanh, np.arcsinh, np.sqrt, np.exp, np.log, np.tanh):
            fn(x)

    # Large copies (64 MiB: far beyond every cache) measure memory bandwidth.
    big = rng.random(16 * 1024 * 1024).astype(f4)
    dst = np.empty_like(big)

    def copy() -> None:
        np.copyto(dst, big)

    return [
        ("matmul", matmul, Work(mac=8 * 64 * 256 * 256, call=8)),
        ("elementwise", elementwise, Work(op=8 * 2 * n, call=16)),
        ("transcendental", transcendental, Work(transcendental=8 * n, call=8)),
        ("copy", copy, Work(byte=2 * big.nbytes, call=1)),
    ]


def _adaptation(optimizer: Any, seconds: float, step_s: float) -> Measured:
    """A real adaptation run on the synthetic drift MLP, sized to last about ``seconds``
    (``step_s``: a step's rough time on a fast host)."""
    from halo.adapt import AdaptSettings, run_adaptation
    from halo.tasks.drift import drift_task

    task = drift_task()
    net = task.optimizee()
    params = net.init(0)
    settings = AdaptSettings(max(20, int(seconds / step_s)), 64, 0)
    run_adaptation(net, params, optimizer, task.target, AdaptSettings(5, 64, 0))  # warm-up
    t0 = time.monotonic_ns()
    p0 = time.perf_counter()
    _, result = run_adaptation(net, params, optimizer, task.target, settings)
    elapsed = time.perf_counter() - p0
    window = (t0, time.monotonic_ns())
    # The evaluations inside the run are not adaptation work: leave their time out.
    elapsed -= sum(b - a for a, b in result.eval_windows_ns) / 1e9
    work = Work()
    for w in run_work(net, result.steps):
        work = work + w
    return Measured(work, elapsed, window, list(result.eval_windows_ns), len(result.steps))


def calibrate(
    base: EnergyConstants,
    seconds: float = 0.5,
    energy_of_factory: Optional[Callable[[], Optional[EnergyOf]]] = None,
    seed: int = 0,
) -> CalibrationResult:
    """Run the workloads, about ``seconds`` each, and fit new constants.

    Fitted: the four kernels and an Adam adaptation (whose per-step cost is mostly array-call
    overhead, so it pins the ``call`` unit on code like the adaptation loop's). Not fitted:
    a HALO adaptation, the check. ``base`` supplies what is not measured (the busy-core and
    idle power when there is no power source; the board's name). ``energy_of_factory`` is
    called after all runs and returns ``energy_of`` (or None if the measurement failed)."""
    from halo.optim.baselines import Adam
    from halo.optim.hrnn import HierarchicalRNN

    rng = np.random.default_rng(seed)
    runs: List[WorkloadRun] = []
    for name, body, work in _kernels(rng):
        m = _repeat(body, work, seconds)
        runs.append(WorkloadRun(name, m.reps, m.work, m.seconds, m.window_ns))
    adam = _adaptation(Adam(), seconds, 3e-4)
    runs.append(WorkloadRun("adam adaptation", adam.reps, adam.work, adam.seconds, adam.window_ns))
    halo = _adaptation(HierarchicalRNN(), seconds, 2e-3)
    energy_of = energy_of_factory() if energy_of_factory is not None else None

    def work_energy(m: Measured) -> float:
        assert energy_of is not None
        return energy_of(*m.window_ns) - sum(energy_of(*w) for w in m.exclude_ns)

    fit_rows = [r.work.vector() for r in runs]
    sec = dict(zip(UNITS, fit_nonnegative(fit_rows, [r.seconds for r in runs])))
    info: Dict[str, Any] = {
        "seconds_per_workload": seconds,
        "workloads": {
            r.name: {"reps": r.reps, "seconds": r.seconds, "work": r.work.as_dict()} for r in runs
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if energy_of is not None:
        for r in runs:
            if r.name == "adam adaptation":
                r.dynamic_j = work_energy(adam)
            else:
                r.dynamic_j = energy_of(*r.window_ns)
            info["workloads"][r.name]["dynamic_j"] = r.dynamic_j
        joules = dict(zip(UNITS, fit_nonnegative(fit_rows, [r.dynamic_j for r in runs])))
        busy_s = sum(r.seconds for r in runs)
        core_w = sum(r.dynamic_j or 0.0 for r in runs) / busy_s if busy_s else base.core_w
        constants = replace(
            base,
            seconds=sec,
            joules=joules,
            core_w=core_w,
            origin="calibrated-energy",
            calibration=info,
        )
    else:
        info["note"] = (
            "no power source: seconds measured here, joules = the board table's busy-core "
            f"power ({base.core_w:g} W, an estimate) x seconds"
        )
        constants = replace(
            base,
            seconds=sec,
            joules={u: base.core_w * v for u, v in sec.items()},
            origin="calibrated-time",
            calibration=info,
        )
    check: Dict[str, Any] = {
        "name": "halo adaptation (not fitted)",
        "steps": halo.reps,
        "measured_s": halo.seconds,
        "model_s": constants.time_s(halo.work),
    }
    check["time_error"] = check["model_s"] / halo.seconds - 1.0 if halo.seconds > 0 else None
    if energy_of is not None:
        check["measured_dynamic_j"] = work_energy(halo)
        check["model_dynamic_j"] = constants.dynamic_j(halo.work)
    constants.calibration["checks"] = [check]
    return CalibrationResult(constants, runs, [check])
