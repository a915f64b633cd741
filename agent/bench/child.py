"""The benchmark child: runs in a fresh process (forked by the fork server, or spawned) so an
untrusted model that crashes or hangs the runtime takes down only this process.

It talks to the parent over a one-way :func:`multiprocessing.Pipe`, sending tuples:

* ``("runtime", name, version)`` once the runtime is imported;
* ``("phase", phase, done, total)`` for progress ("init", "warmup", "measure");
* ``("loaded", facts)`` after the interpreter is built (init time, ops, delegate, context);
* ``("idle", t_start_ns, t_end_ns)`` in energy mode: the model loaded and the process asleep
  for ``spec.idle_seconds`` -- the power baseline window, on ``time.monotonic_ns``;
* then exactly one of ``("done", timings)`` or ``("failed", reason)``.

A crash or hang sends nothing more; the parent reads that from the exit code or its timeout.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from typing import Any, Dict, List, Optional

from agent.bench.inputs import random_inputs
from agent.bench.ops import is_delegated, op_histogram
from agent.bench.timing import TimingPlan, run_timing
from agent.runtime import RuntimeNotFound, load_runtime, make_interpreter

# Test hooks, read only here in the child (used by tests/agent/test_bench_job.py): after the
# runtime is imported, HANG=1 makes the child sleep forever and CRASH=1 makes it kill itself
# with SIGSEGV, so the parent's timeout and crash handling run against a real process.
TEST_HANG_ENV = "HALOFARM_TEST_CHILD_HANG"
TEST_CRASH_ENV = "HALOFARM_TEST_CHILD_CRASH"

REASON_MAX_CHARS = 300


class BenchFailure(Exception):
    """A benchmark that cannot complete; the message is the result's reason."""


def first_line(text: str, limit: int = REASON_MAX_CHARS) -> str:
    """The first non-empty line of an error message, at most ``limit`` characters."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def resolver_for(xnnpack: bool) -> str:
    return "auto" if xnnpack else "xnnpack_off"


def peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux (bytes on macOS, which is not a target).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _test_hooks() -> None:
    if os.environ.get(TEST_HANG_ENV) == "1":
        while True:
            time.sleep(3600)
    if os.environ.get(TEST_CRASH_ENV) == "1":
        os.kill(os.getpid(), signal.SIGSEGV)


def _pin(affinity: Optional[List[int]]) -> None:
    if not affinity:
        return
    try:
        os.sched_setaffinity(0, affinity)
    except OSError as exc:
        raise BenchFailure(
            f"cannot pin the benchmark to CPUs {affinity}: {exc.strerror or exc}"
        ) from None


def _load(conn: Any, runtime: Any, model_path: str, spec: Any) -> Any:
    conn.send(("phase", "init", 0, None))
    start = time.perf_counter_ns()
    try:
        interpreter = make_interpreter(
            runtime,
            model_path=model_path,
            num_threads=spec.threads,
            resolver=resolver_for(spec.xnnpack),
        )
        interpreter.allocate_tensors()
    except Exception as exc:  # the runtime's own message for a bad model is the reason
        raise BenchFailure("cannot load model: " + first_line(str(exc) or repr(exc))) from None
    init_ns = time.perf_counter_ns() - start

    details = interpreter.get_input_details()
    try:
        arrays = random_inputs(details, spec.seed)
        for detail, array in zip(details, arrays):
            interpreter.set_tensor(detail["index"], array)
    except ValueError as exc:  # UnsupportedInput, or the runtime refusing the array
        raise BenchFailure("cannot fill the inputs: " + first_line(str(exc))) from None

    conn.send(
        (
            "loaded",
            {
                "init_ns": init_ns,
                "ops": op_histogram(interpreter),
                "delegated": is_delegated(interpreter),
                "context": {
                    "pid": os.getpid(),
                    "affinity": sorted(os.sched_getaffinity(0)),
                    "resolver": resolver_for(spec.xnnpack),
                    "num_threads": spec.threads,
                    "inputs": [
                        {
                            "name": str(d.get("name", "")),
                            "shape": [int(x) for x in d["shape"]],
                            "dtype": str(arrays[i].dtype),
                        }
                        for i, d in enumerate(details)
                    ],
                },
            },
        )
    )
    return interpreter


def _run(conn: Any, model_path: str, spec: Any) -> Dict[str, Any]:
    _pin(spec.affinity)
    try:
        runtime = load_runtime()
    except RuntimeNotFound as exc:
        raise BenchFailure(str(exc)) from None
    conn.send(("runtime", runtime.name, runtime.version))
    _test_hooks()

    interpreter = _load(conn, runtime, model_path, spec)
    if spec.power != "none" and spec.idle_seconds:
        conn.send(("phase", "idle", 0, None))
        idle_start = time.monotonic_ns()
        time.sleep(spec.idle_seconds)
        conn.send(("idle", idle_start, time.monotonic_ns()))
    plan = TimingPlan(
        warmup_runs=spec.warmup_runs,
        warmup_seconds=spec.warmup_seconds,
        min_runs=spec.min_runs,
        min_seconds=spec.min_seconds,
        max_seconds=spec.max_seconds,
        run_past_max_runs=spec.power != "none",
    )
    try:
        timings = run_timing(
            interpreter.invoke,
            plan,
            on_progress=lambda phase, done: conn.send(("phase", phase, done, None)),
        )
    except Exception as exc:
        raise BenchFailure("inference failed: " + first_line(str(exc) or repr(exc))) from None
    return {
        "first_ns": timings.first_ns,
        "warmup_count": timings.warmup_count,
        "warmup_mean_ns": timings.warmup_mean_ns,
        "raw_ns": timings.raw_ns,
        "measure_start_ns": timings.measure_start_ns,
        "measure_end_ns": timings.measure_end_ns,
        "measure_count": timings.measure_count,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def child_main(
    conn: Any, model_path: str, spec: Any, environ: Optional[Dict[str, str]] = None
) -> None:
    """Process target: measure ``model_path`` per ``spec`` (a BenchSpec), report over ``conn``.
    ``environ`` replaces the inherited environment (a fork server's is from its own start)."""
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    try:
        conn.send(("done", _run(conn, model_path, spec)))
    except BenchFailure as exc:
        conn.send(("failed", str(exc)))
    except Exception as exc:  # a bug of ours: report it instead of a bare non-zero exit
        conn.send(("failed", "benchmark process error: " + first_line(repr(exc))))
    finally:
        conn.close()
