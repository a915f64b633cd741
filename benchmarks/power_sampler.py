"""Power sampler: how fast each source can be read here, and how much sampling disturbs a
benchmark.

(a) Max sustainable rate per source. For every simulated board layout (the real INA3221
readers on a tree written by power.simboard) and the model estimate: the p50 time of one full
`source.read()` (every rail, kept-open files, pread) over back-to-back reads, and the rate a
ThreadSampler actually keeps when asked for 0.5 ms (samples/s and dropped periods). Reference in
the same run: one bare `os.pread` of one kept-open sysfs-style file, so `reads/sample` says how
many file reads a sample costs. Reads of a real board's sysfs also pay for I2C (~0.2-0.5 ms per
attribute, power.md §7): these figures are the Python-side floor.

(b) Perturbation. One long run of the agent's benchmark job (run_bench_job, child pinned to one
CPU, nb201 cifar10 float32, XNNPACK, 1 thread, power off) while this process switches a 100 Hz
sampler on the orin-nx-jp5 tree (hwmon: 6 file reads per sample) on and off in alternating
0.5 s blocks: as a thread of this process (the supervising parent, as in the agent), and as its
own process (stopped with SIGSTOP in the off blocks). Each run's start time comes from the
measure window and the cumulative run times; runs within 20 ms of a switch are dropped. The
figure is median(latency in on blocks) / median(latency in off blocks) -- paired in time, so the
machine's drift cancels. Reference in the same run: the same ratio between the odd and even off
blocks (A/A), which is the resolution of the measurement. Target: within 1 %.

(c) Accuracy against the simulator's ground truth. A 3 W / 6 W square wave (period 2.3371 s,
duty 0.45) written into the tx2-jp4 tree's VDD_IN by the simulator's own process, sampled at
10 ms: the trapezoid's relative error over 40 windows of 2 s at random offsets (target 0.5 %).
Then the benchmark job in energy mode (default 10 s window, 2 s idle baseline) while VDD_IN
follows this process tree's CPU load (2.1 W idle + 4 W per busy CPU): energy per inference
against the integral of what the simulator wrote over the same window (target 2 %).

    python benchmarks/power_sampler.py [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from machine import machine_facts
from report import print_rows, write_json  # noqa: E402

from agent.bench.job import run_bench_job
from agent.config import PowerConfig
from agent.runtime import load_runtime, runtime_info
from coordinator.zoo.generate import build_model, make_spec
from power import energy
from power.discover import PowerOptions, discover, open_for_sampler
from power.estimate import EstimateSource
from power.sampler import ProcessSampler, ThreadSampler
from power.simboard import (
    LAYOUTS,
    Driver,
    FollowLoad,
    SimBoard,
    Square,
    log_energy_mj,
    square_energy_mj,
)
from protocol.bodies import BenchSpec

NAME = "power_sampler"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / f"{NAME}.json"
TARGET = 0.01
MODEL = ("nb201", "13291", "cifar10")
PERTURB_LAYOUT = "orin-nx-jp5"


def pread_reference(path: str, n: int) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        times = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            os.pread(fd, 64, 0)
            times.append(time.perf_counter_ns() - t0)
    finally:
        os.close(fd)
    return float(np.median(times))


def read_rate(source, n: int, sample_s: float) -> dict:
    spans = []
    for _ in range(n):
        spans.append(source.read().span_ns)
    sampler = ThreadSampler(source, 0.0005).start()
    time.sleep(sample_s)
    log = sampler.stop()
    elapsed = (log.t_ns[-1] - log.t_ns[0]) / 1e9 if len(log.t_ns) > 1 else 0.0
    return {
        "rails": len(source.rails),
        "read_p50_us": float(np.median(spans)) / 1e3,
        "read_p99_us": float(np.percentile(spans, 99)) / 1e3,
        "max_rate_hz": 1e9 / float(np.median(spans)),
        "kept_rate_hz_at_2khz": (len(log.t_ns) - 1) / elapsed if elapsed else 0.0,
        "dropped_at_2khz": log.dropped,
    }


def rates(tmp: Path, quick: bool) -> list[dict]:
    n, sample_s = (300, 0.3) if quick else (3000, 2.0)
    ref_file = tmp / "in1_input"
    ref_file.write_text("4824\n")
    rows = []
    for layout in LAYOUTS:
        root = tmp / f"rate-{layout}"
        board = SimBoard(str(root), layout).create()
        for source in discover(PowerOptions(sysfs_root=str(root))):
            with source:
                ref = pread_reference(str(ref_file), n)
                row = {"source": f"{layout}: {source.name}", **read_rate(source, n, sample_s)}
                row["pread_ref_us"] = ref / 1e3
                row["reads_per_sample"] = row["read_p50_us"] * 1e3 / ref
                rows.append(row)
        board.close()
    with EstimateSource(1000.0, 5000.0) as est:
        rows.append({"source": "estimate (psutil)", **read_rate(est, n, sample_s)})
    return rows


def run_start_times(result) -> np.ndarray:
    """Each measured run's start on time.monotonic_ns: the window start plus the run times so
    far (the timing loop's own ~0.3 us per run is ignored: < 1 ms over a whole run)."""
    start, _ = result.env_pre["process"]["measure_window_ns"]
    raw = np.array(result.raw(), dtype=np.int64)
    return start + np.concatenate(([0], np.cumsum(raw)[:-1])), raw


def toggled_run(model: Path, spec: BenchSpec, switch, block_s: float) -> dict:
    """Run the job while ``switch(on)`` flips the sampler every ``block_s``; compare blocks."""
    marks: list[tuple[int, bool]] = []
    done = threading.Event()

    def toggler() -> None:
        on = False
        while not done.wait(block_s):
            on = not on
            switch(on)
            marks.append((time.monotonic_ns(), on))
        switch(False)

    thread = threading.Thread(target=toggler)
    thread.start()
    try:
        result = run_bench_job(str(model), spec, "perturb", uuid.uuid4().hex, uuid.uuid4().hex)
    finally:
        done.set()
        thread.join()
    if result.status != "ok":
        sys.exit(f"benchmark failed: {result.reason}")
    starts, raw = run_start_times(result)
    times = np.array([t for t, _ in marks], dtype=np.int64)
    states = np.array([on for _, on in marks])
    block = np.searchsorted(times, starts, side="right") - 1  # index of the last switch
    guard = 20_000_000
    near = np.zeros(len(starts), dtype=bool)
    for t in times:
        near |= np.abs(starts - t) < guard
    valid = (block >= 0) & ~near
    on = valid & states[np.clip(block, 0, None)]
    off = valid & ~states[np.clip(block, 0, None)]
    odd_off = off & (block % 4 == 1)  # off blocks alternate: switch k is off for odd k
    even_off = off & (block % 4 == 3)
    return {
        "runs": int(len(raw)),
        "on_runs": int(on.sum()),
        "off_runs": int(off.sum()),
        "blocks": len(marks),
        "on_p50_ns": float(np.median(raw[on])),
        "off_p50_ns": float(np.median(raw[off])),
        "ratio_p50": float(np.median(raw[on]) / np.median(raw[off])),
        "aa_ratio_p50": float(np.median(raw[odd_off]) / np.median(raw[even_off])),
    }


def perturbation(tmp: Path, cpu: int, quick: bool) -> dict:
    data, row, _ = build_model(make_spec(*MODEL[:2], dataset=MODEL[2]))
    model = tmp / "nb201.tflite"
    model.write_bytes(data)
    board = SimBoard(str(tmp / "perturb-board"), PERTURB_LAYOUT).create()
    options = PowerOptions(sysfs_root=board.root)
    seconds, block_s = (6.0, 0.5) if quick else (20.0, 0.5)
    spec = BenchSpec(
        model_sha256=hashlib.sha256(data).hexdigest(),
        model_name="nb201-13291",
        threads=1,
        affinity=[cpu],
        min_seconds=seconds,
        warmup_seconds=1.0,
    )
    out = {"model": "/".join(MODEL), "macs": row["macs"], "seconds": seconds, "block_s": block_s}

    (source,) = discover(options)
    state: dict = {}

    def thread_switch(on: bool) -> None:
        if on:
            state["sampler"] = ThreadSampler(source, 0.010, avoid_cpus=[cpu]).start()
        elif "sampler" in state:
            state.pop("sampler").stop()

    out["thread"] = toggled_run(model, spec, thread_switch, block_s)
    source.close()

    sampler = ProcessSampler(open_for_sampler, ("auto", options), 0.010, avoid_cpus=[cpu])
    sampler.start()
    pid = sampler.pid
    os.kill(pid, signal.SIGSTOP)

    def process_switch(on: bool) -> None:
        os.kill(pid, signal.SIGCONT if on else signal.SIGSTOP)

    try:
        out["process"] = toggled_run(model, spec, process_switch, block_s)
    finally:
        os.kill(pid, signal.SIGCONT)
        sampler.stop()
    board.close()
    return out


def accuracy(tmp: Path, cpu: int, quick: bool) -> dict:
    sim = SimBoard(str(tmp / "accuracy-board"), "tx2-jp4").create()
    options = PowerOptions(sysfs_root=sim.root)
    low, high = sim.quantise("VDD_IN", 3000.0), sim.quantise("VDD_IN", 6000.0)
    period, duty = 2.3371, 0.45
    t0 = time.monotonic_ns() + 200_000_000
    seconds = 6.0 if quick else 12.0
    (source,) = discover(options)
    with source, Driver(sim.root, "tx2-jp4", {"VDD_IN": Square(low, high, period, duty, t0)}):
        sampler = ThreadSampler(source, 0.010).start()
        time.sleep(seconds + 0.4)
        log = sampler.stop()
    times, values = log.series("VDD_IN")
    rng = np.random.default_rng(0)
    errors = []
    for offset in rng.uniform(0, seconds - 2.0, 40):
        start = t0 + int(offset * 1e9)
        end = start + 2_000_000_000
        exact = square_energy_mj(low, high, period, duty, t0, start, end)
        errors.append((energy.trapezoid_mj(times, values, start, end) - exact) / exact)
    errors_abs = np.abs(errors)

    data, _, _ = build_model(make_spec(*MODEL[:2], dataset=MODEL[2]))
    model = tmp / "accuracy.tflite"
    model.write_bytes(data)
    spec = BenchSpec(
        model_sha256=hashlib.sha256(data).hexdigest(),
        model_name="nb201-13291",
        affinity=[cpu],
        power="auto",
        energy_seconds=3.0 if quick else None,
    )
    power = PowerConfig(options=options, idle_seconds=2.0)
    follow = []
    for _ in range(1 if quick else 2):
        wave = FollowLoad(os.getpid(), 2100.0, 6100.0)
        with Driver(sim.root, "tx2-jp4", {"VDD_IN": wave}) as driver:
            result = run_bench_job(
                str(model), spec, "accuracy", uuid.uuid4().hex, uuid.uuid4().hex, power=power
            )
        records = driver.log()  # after stop: the driver flushes its log every 0.1 s
        e = result.energy
        if result.status != "ok" or e.get("status") != "ok":
            sys.exit(f"energy run failed: {result.reason or e}")
        w = e["window"]
        truth = log_energy_mj(records, "VDD_IN", w["t_start_ns"], w["t_end_ns"])
        follow.append(
            {
                "window_s": w["seconds"],
                "inferences": w["inferences"],
                "e_per_inference_mj": e["e_per_inference_mj"],
                "truth_per_inference_mj": truth / w["inferences"],
                "error": e["e_total_mj"] / truth - 1,
                "e_dyn_per_inference_mj": e["e_dyn_per_inference_mj"],
                "idle_mw": e["idle"]["p_mean_mw"],
                "cross_check": e["integration_check"]["relative_difference"],
            }
        )
    sim.close()
    return {
        "square": {
            "low_mw": low,
            "high_mw": high,
            "period_s": period,
            "duty": duty,
            "window_s": 2.0,
            "windows": len(errors),
            "max_abs_error": float(errors_abs.max()),
            "p95_abs_error": float(np.percentile(errors_abs, 95)),
            "mean_error": float(np.mean(errors)),
        },
        "follow_load": follow,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--quick", action="store_true", help="fewer reads, a 6 s run instead of 20 s")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpu = max(os.sched_getaffinity(0))
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="power-sampler-") as tmp:
        rate_rows = rates(Path(tmp), args.quick)
        perturb = perturbation(Path(tmp), cpu, args.quick)
        acc = accuracy(Path(tmp), cpu, args.quick)

    lines = [("source", "rails", "read p50 us", "p99 us", "reads/sample", "max Hz", "kept Hz @2k",
              "dropped")]  # fmt: skip
    for r in rate_rows:
        lines.append(
            (
                r["source"],
                str(r["rails"]),
                f"{r['read_p50_us']:.1f}",
                f"{r['read_p99_us']:.1f}",
                f"{r['reads_per_sample']:.1f}" if "reads_per_sample" in r else "-",
                f"{r['max_rate_hz']:.0f}",
                f"{r['kept_rate_hz_at_2khz']:.0f}",
                str(r["dropped_at_2khz"]),
            )
        )
    print_rows(lines)
    print()
    lines = [("sampler @100 Hz", "runs on/off", "p50 on us", "p50 off us", "on/off", "A/A off",
              "within 1%")]  # fmt: skip
    for name in ("thread", "process"):
        p = perturb[name]
        lines.append(
            (
                name,
                f"{p['on_runs']}/{p['off_runs']}",
                f"{p['on_p50_ns'] / 1e3:.1f}",
                f"{p['off_p50_ns'] / 1e3:.1f}",
                f"{p['ratio_p50']:.4f}",
                f"{p['aa_ratio_p50']:.4f}",
                "yes" if abs(p["ratio_p50"] - 1) <= TARGET else "no",
            )
        )
    print_rows(lines)
    print()
    sq = acc["square"]
    print(
        f"square wave, {sq['windows']} windows of 2 s: max |error| {sq['max_abs_error']:.3%}, "
        f"p95 {sq['p95_abs_error']:.3%}, mean {sq['mean_error']:+.3%} (target 0.5 %)"
    )
    for f in acc["follow_load"]:
        print(
            f"follow-load benchmark, {f['window_s']:.1f} s window, {f['inferences']} inferences: "
            f"{f['e_per_inference_mj']:.4f} mJ/inference vs truth "
            f"{f['truth_per_inference_mj']:.4f} ({f['error']:+.3%}, target 2 %), "
            f"dynamic {f['e_dyn_per_inference_mj']:.4f} mJ, idle {f['idle_mw']:.0f} mW"
        )
    out = {
        "benchmark": NAME,
        "quick": args.quick,
        "pinned_cpu": cpu,
        "target_perturbation": TARGET,
        "wall_s": time.monotonic() - start,
        "machine": {**machine_facts(), "runtime": runtime_info(load_runtime())},
        "rates": rate_rows,
        "perturbation": perturb,
        "accuracy": acc,
    }
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
