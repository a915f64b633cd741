"""Timing fidelity: the agent's benchmark job against LiteRT's own `litert-benchmark` tool.

What it measures: p50 latency of the same model from `agent.bench.job.run_bench_job` (spawn
child, `Interpreter.invoke()` timed with `perf_counter_ns`, benchmark_model rules: warm-up >= 1
run and >= 0.5 s, then >= 50 runs and >= 1 s) and from the `litert-benchmark` console script of
ai-edge-litert (CompiledModel API, `run_by_name()` timed with `perf_counter`), on three zoo
models of very different size: the tiny FULLY_CONNECTED test model, a NAS-Bench-201 cifar10
float32 network and an FBNet imagenet float32 network. Reported: agent_p50 / litert_p50 per model
(goal: within 3 %), and the same ratio of means.

How: both run with 1 thread, XNNPACK on (the agent's "auto" resolver; litert-benchmark's CPU
accelerator, which is XNNPACK), each in its own process pinned to the same CPU. Per round and
model the agent runs first, then litert-benchmark with the agent's run and warm-up counts, so both
time the same number of runs (A, B, A, B, ...). The table shows medians over rounds of the
per-run p50s; the ratios are medians of the per-round (paired) ratios, shown with their range.

Where the ratio is off, the cause is measured in the same run: per-call cost of the two timed
calls on the tiny model, in this process on the same CPU, blocks interleaved -- the agent's
`Interpreter.invoke()` against litert-benchmark's `CompiledModel.run_by_name(signature,
input_buffers, output_buffers)` (set up exactly as the tool does) and an empty timed region.

litert-benchmark rounds everything in its JSON to 0.01 ms, which would erase the tiny model
(~1 us) and leave +-0.5 % quantisation on a 1 ms model. The script therefore runs the installed
console script itself with only that rounding disabled (the module's `round` shadowed by an
identity); its percentiles, `statistics.median` and `statistics.mean`, are unchanged.

    python benchmarks/timing_fidelity.py [--quick] [--rounds N] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from machine import machine_facts
from report import print_rows, write_json  # noqa: E402

from agent.bench.job import run_bench_job
from agent.runtime import load_runtime, runtime_info
from coordinator.zoo.generate import build_model, make_spec
from coordinator.zoo.testing import tiny_model_bytes
from protocol.bodies import BenchSpec

NAME = "timing_fidelity"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / f"{NAME}.json"
TARGET = 0.03  # |agent_p50 / litert_p50 - 1|
ROUNDS, QUICK_ROUNDS = 5, 2
# (label, space, arch, dataset); None space = the tiny test model
MODELS = (
    ("tiny fc", None, None, None),
    ("nb201 cifar10", "nb201", "13291", "cifar10"),  # ~1 ms here
    ("fbnet imagenet", "fbnet", "5-4-2-2-0-0-0-1-7-5-8-4-5-8-6-5-4-5-8-2-7-6", "imagenet"),  # ~5 ms
)
# Runs litert-benchmark's console script unchanged except for the JSON rounding (see above).
LITERT_SHIM = (
    "import runpy, sys\n"
    "import ai_edge_litert.tools.benchmark_litert_model as m\n"
    "m.round = lambda x, n=None: x\n"
    "script = sys.argv.pop(1)\n"
    "sys.argv[0] = script\n"
    "runpy.run_path(script, run_name='__main__')\n"
)


def litert_script() -> str:
    path = shutil.which("litert-benchmark", path=str(Path(sys.executable).parent))
    if path is None:
        sys.exit("litert-benchmark not found next to this Python; install ai-edge-litert")
    return path


def write_models(workdir: Path) -> list[dict]:
    models = []
    for label, space, arch, dataset in MODELS:
        if space is None:
            data, info = tiny_model_bytes(), {"macs": 32}
        else:
            data, row, _ = build_model(make_spec(space, arch, dataset=dataset))
            info = {"macs": row["macs"], "space": space, "arch": row["arch"], "dataset": dataset}
        path = workdir / (label.replace(" ", "_") + ".tflite")
        path.write_bytes(data)
        models.append(
            {
                "label": label,
                "path": path,
                "bytes": len(data),
                **info,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return models


def run_agent(model: dict, cpu: int, quick: bool) -> dict:
    spec = BenchSpec(
        model_sha256=model["sha256"],
        model_name=model["label"],
        threads=1,
        xnnpack=True,
        affinity=[cpu],
        **({"warmup_seconds": 0.2, "min_seconds": 0.3} if quick else {}),
    )
    result = run_bench_job(str(model["path"]), spec, "fidelity", uuid.uuid4().hex, uuid.uuid4().hex)
    if result.status != "ok":
        sys.exit(f"agent benchmark of {model['label']} failed: {result.reason}")
    return {
        "p50_ns": result.stats.p50,
        "mean_ns": result.stats.mean,
        "count": result.stats.count,
        "warmup_count": result.warmup_count,
        "delegated": result.delegated,
    }


def run_litert(model: dict, cpu: int, runs: int, warmup: int, script: str, out: Path) -> dict:
    cmd = [
        sys.executable, "-c", LITERT_SHIM, script,
        "--model", str(model["path"]),
        "--num_runs", str(runs),
        "--warmup_runs", str(warmup),
        "--num_threads", "1",
        "--result_json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
        timeout=600,
    )
    if proc.returncode != 0 or not out.exists():
        sys.exit(f"litert-benchmark failed on {model['label']}:\n{proc.stderr[-2000:]}")
    lat = json.loads(out.read_text())["latency"]
    out.unlink()
    return {
        "p50_ns": lat["median_ms"] * 1e6,
        "mean_ns": lat["avg_ms"] * 1e6,
        "count": lat["num_runs"],
        "warmup_count": lat["num_warmup_runs"],
        "json_median_ms": round(lat["median_ms"], 2),  # what the unpatched tool would print
    }


def call_overhead(tiny: Path, cpu: int, blocks: int, per_block: int) -> dict:
    """p50 ns of one timed call: Interpreter.invoke(), CompiledModel.run_by_name(), nothing."""
    from ai_edge_litert.tools import benchmark_litert_model as tool

    from agent.runtime import make_interpreter

    compiled_cls, accel_cls, env_cls, env_opts_cls, opts_cls, cpu_opts_cls = tool._import_litert()
    env = env_cls.create(options=env_opts_cls())
    options = opts_cls(
        hardware_accelerators=accel_cls(accel_cls.CPU), cpu_options=cpu_opts_cls(num_threads=1)
    )
    compiled = compiled_cls.from_file(str(tiny), environment=env, options=options)
    sig = next(iter(compiled.get_signature_list()))
    in_details = compiled.get_input_tensor_details(sig)
    inputs = {n: compiled.create_input_buffer_by_name(sig, n) for n in in_details}
    outputs = {
        n: compiled.create_output_buffer_by_name(sig, n)
        for n in compiled.get_output_tensor_details(sig)
    }
    for name, buf in inputs.items():
        tool.fill_random_input(buf, in_details[name])
    interpreter = make_interpreter(load_runtime(), model_path=tiny, num_threads=1)
    interpreter.allocate_tensors()
    calls = {
        "interpreter_invoke": interpreter.invoke,
        "compiled_run_by_name": lambda: compiled.run_by_name(sig, inputs, outputs),
        "empty": lambda: None,
    }
    times: dict[str, list[int]] = {k: [] for k in calls}
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        for _ in range(blocks):
            for name, call in calls.items():
                for _ in range(per_block):
                    t0 = time.perf_counter_ns()
                    call()
                    times[name].append(time.perf_counter_ns() - t0)
    finally:
        os.sched_setaffinity(0, saved)
    return {f"{k}_p50_ns": float(np.median(v[per_block:])) for k, v in times.items()}


def summarise(model: dict, rounds: list[dict]) -> dict:
    agent_p50 = np.array([r["agent"]["p50_ns"] for r in rounds])
    litert_p50 = np.array([r["litert"]["p50_ns"] for r in rounds])
    agent_mean = np.array([r["agent"]["mean_ns"] for r in rounds])
    litert_mean = np.array([r["litert"]["mean_ns"] for r in rounds])
    per_round = agent_p50 / litert_p50
    return {
        "model": model["label"],
        "bytes": model["bytes"],
        "macs": model["macs"],
        **{k: model[k] for k in ("space", "arch", "dataset") if k in model},
        "agent_p50_us": float(np.median(agent_p50)) / 1e3,
        "litert_p50_us": float(np.median(litert_p50)) / 1e3,
        # Headline: median of the paired per-round ratios (A and B ran back to back, so slow
        # drifts of the machine cancel); the ratio of the per-tool medians is kept beside it.
        "ratio_p50": float(np.median(per_round)),
        "ratio_p50_rounds": per_round.round(4).tolist(),
        "ratio_of_median_p50s": float(np.median(agent_p50) / np.median(litert_p50)),
        "ratio_mean": float(np.median(agent_mean / litert_mean)),
        "litert_minus_agent_p50_us": float(np.median(litert_p50) - np.median(agent_p50)) / 1e3,
        "runs_per_round": [r["agent"]["count"] for r in rounds],
        "rounds": rounds,
    }


def print_table(rows: list[dict]) -> None:
    header = ("model", "bytes", "MMACs", "runs", "agent p50 us", "litert p50 us", "litert-agent us",
              "ratio p50", "ratio range", "ratio mean", "within 3%")  # fmt: skip
    lines = [header]
    for r in rows:
        lo, hi = min(r["ratio_p50_rounds"]), max(r["ratio_p50_rounds"])
        lines.append(
            (
                r["model"],
                str(r["bytes"]),
                f"{r['macs'] / 1e6:.2f}",
                str(int(np.median(r["runs_per_round"]))),
                f"{r['agent_p50_us']:.3f}",
                f"{r['litert_p50_us']:.3f}",
                f"{r['litert_minus_agent_p50_us']:+.3f}",
                f"{r['ratio_p50']:.3f}",
                f"{lo:.3f}-{hi:.3f}",
                f"{r['ratio_mean']:.3f}",
                "yes" if abs(r["ratio_p50"] - 1) <= TARGET else "no",
            )
        )
    print_rows(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--quick", action="store_true", help="2 rounds, shorter measurements")
    p.add_argument("--rounds", type=int, help=f"rounds (default {ROUNDS}, --quick {QUICK_ROUNDS})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n_rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    cpu = max(os.sched_getaffinity(0))
    script = litert_script()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="timing-fidelity-") as tmp:
        models = write_models(Path(tmp))
        per_model: dict[str, list[dict]] = {m["label"]: [] for m in models}
        for _ in range(n_rounds):
            for m in models:
                agent = run_agent(m, cpu, args.quick)
                litert = run_litert(
                    m, cpu, agent["count"], agent["warmup_count"], script, Path(tmp) / "out.json"
                )
                per_model[m["label"]].append({"agent": agent, "litert": litert})
        overhead = call_overhead(models[0]["path"], cpu, 6, 2000 if args.quick else 10000)
    rows = [summarise(m, per_model[m["label"]]) for m in models]
    print_table(rows)
    print(
        "\nper-call p50 on the tiny model, in-process: Interpreter.invoke() "
        f"{overhead['interpreter_invoke_p50_ns'] / 1e3:.3f} us, CompiledModel.run_by_name() "
        f"{overhead['compiled_run_by_name_p50_ns'] / 1e3:.3f} us, empty timed region "
        f"{overhead['empty_p50_ns'] / 1e3:.3f} us"
    )
    out = {
        "benchmark": NAME,
        "quick": args.quick,
        "rounds": n_rounds,
        "pinned_cpu": cpu,
        "threads": 1,
        "xnnpack": True,
        "target_ratio_within": TARGET,
        "wall_s": time.monotonic() - start,
        "machine": {**machine_facts(), "runtime": runtime_info(load_runtime())},
        "results": rows,
        "call_overhead_tiny": overhead,
    }
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
