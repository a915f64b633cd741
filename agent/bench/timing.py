"""The timing loop of TFLite ``benchmark_model`` (reference tflite.md §7.1, §8), runtime-free.

Phases, each timing ``invoke()`` alone with ``time.perf_counter_ns()``:

* first inference: one run, reported on its own (it pays for lazy allocations, cold caches);
* warmup: runs while fewer than ``warmup_runs`` ran **or** less than ``warmup_seconds`` passed;
* measure: runs while fewer than ``min_runs`` ran **or** less than ``min_seconds`` passed.

Like ``benchmark_model``, no phase starts another run once more than ``max_seconds`` passed since
the phase began, so a slow model stops early rather than hitting the job's timeout. On top of
that the measure phase stops at ``max_runs``: the raw per-run array travels in one result message,
which has a size limit (see :data:`MAX_RUNS`). In energy mode (``run_past_max_runs``) the measure
phase is the energy window and must last its seconds: it runs on past ``max_runs``, keeping the
times of the first ``max_runs`` runs and counting the rest (``measure_count``).

"Passed" is wall time since the phase began, bookkeeping included, as in ``benchmark_model``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

# The raw array travels zlib-compressed and base64-encoded inside one result message (256 KiB
# limit). That costs 1.3-6 characters per run (measured: 1.3 for ~600 ns runs, ~4.6 for 1 ms runs
# with 30 % jitter, ~5.8 for 100 ms runs). 40 000 runs stay below ~190 KB for the latencies that
# can reach the cap within the default max_seconds (150 s), ~235 KB at worst. A model faster
# than min_seconds / MAX_RUNS (25 us at the default 1 s) stops at the cap before min_seconds.
MAX_RUNS = 40_000
NS_PER_S = 1_000_000_000
PROGRESS_INTERVAL_NS = NS_PER_S  # the loop reports its count at most this often

# on_progress(phase, done): phase is "warmup" or "measure", done the runs so far in that phase.
ProgressHook = Callable[[str, int], None]


@dataclass(frozen=True)
class TimingPlan:
    warmup_runs: int = 1
    warmup_seconds: float = 0.5
    min_runs: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 150.0
    max_runs: int = MAX_RUNS
    run_past_max_runs: bool = False

    def __post_init__(self) -> None:
        if self.warmup_runs < 0 or self.warmup_seconds < 0 or self.min_seconds < 0:
            raise ValueError("warmup_runs, warmup_seconds and min_seconds must be >= 0")
        if self.min_runs < 1 or self.max_seconds <= 0:
            raise ValueError("min_runs must be >= 1 and max_seconds > 0")
        if self.min_runs > self.max_runs:
            raise ValueError(
                f"min_runs {self.min_runs} exceeds the limit of {self.max_runs} runs per benchmark"
            )


@dataclass
class Timings:
    first_ns: int
    warmup_count: int
    warmup_mean_ns: Optional[float]  # None when no warmup run happened
    raw_ns: List[int]  # one entry per measured run, in run order
    # The measure phase on time.monotonic_ns -- the power sampler's clock -- for energy windows.
    measure_start_ns: int = 0
    measure_end_ns: int = 0
    measure_count: int = 0  # runs in the measure phase; more than len(raw_ns) past max_runs


def _phase(
    invoke: Callable[[], object],
    min_count: int,
    min_ns: int,
    max_ns: int,
    max_count: Optional[int],
    clock: Callable[[], int],
    report: Optional[Callable[[int], None]],
    keep: int,
) -> Tuple[int, int, List[int]]:
    """(runs, their total ns, per-run ns of the first ``keep`` runs) of one phase."""
    times: List[int] = []
    count = total = 0
    start = now = last_report = clock()
    while (count < min_count or now - start < min_ns) and now - start <= max_ns:
        if max_count is not None and count >= max_count:
            break
        t0 = clock()
        invoke()
        now = clock()
        elapsed = now - t0
        total += elapsed
        count += 1
        if count <= keep:
            times.append(elapsed)
        if report is not None and now - last_report >= PROGRESS_INTERVAL_NS:
            report(count)
            last_report = now
    return count, total, times


def run_timing(
    invoke: Callable[[], object],
    plan: TimingPlan,
    clock: Callable[[], int] = time.perf_counter_ns,
    on_progress: Optional[ProgressHook] = None,
    mark: Callable[[], int] = time.monotonic_ns,
) -> Timings:
    """Run first inference, warmup and measure phases of ``invoke`` per ``plan``."""
    max_ns = int(plan.max_seconds * NS_PER_S)

    def reporter(phase: str) -> Optional[Callable[[int], None]]:
        if on_progress is None:
            return None
        return lambda done: on_progress(phase, done)

    t0 = clock()
    invoke()
    first_ns = clock() - t0

    if on_progress is not None:
        on_progress("warmup", 0)
    warmup_count, warmup_total, _ = _phase(
        invoke,
        plan.warmup_runs,
        int(plan.warmup_seconds * NS_PER_S),
        max_ns,
        None,
        clock,
        reporter("warmup"),
        keep=0,
    )
    if on_progress is not None:
        on_progress("measure", 0)
    measure_start = mark()
    measure_count, _, raw = _phase(
        invoke,
        plan.min_runs,
        int(plan.min_seconds * NS_PER_S),
        max_ns,
        None if plan.run_past_max_runs else plan.max_runs,
        clock,
        reporter("measure"),
        keep=plan.max_runs,
    )
    measure_end = mark()
    return Timings(
        first_ns=first_ns,
        warmup_count=warmup_count,
        warmup_mean_ns=warmup_total / warmup_count if warmup_count else None,
        raw_ns=raw,
        measure_start_ns=measure_start,
        measure_end_ns=measure_end,
        measure_count=measure_count,
    )
