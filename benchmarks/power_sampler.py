"""Power sampler: how fast each source can be read here, and how much sampling disturbs a
benchmark.

(a) Max sustainable rate per source. For every simulated board layout (the real INA3221
readers on a tree written by power.simboard) and the model estimate: the p50 time of one full
`source.read()` (every rail, kept-open files, pread) over back-to-back reads, and the rate a
ThreadSampler actually keeps when asked for 0.5 ms (samples/s and dropped periods). Reference in
the same run: one bare `os.pread` of one kept-open sysfs-style file, so `reads/sample` says how
many file reads a sample costs. Reads of a real board's sysfs also pay for I2C (~0.2-0.5 ms per
attribute, power.md §7): these figures are the Python-side floor.

(b) Perturbation. The agent's benchmark job (run_bench_job, child pinned to one CPU, nb201
cifar10 float32, XNNPACK, 1 thread) with power off, with the sampler as a thread of the
supervising process, and as its own process, both at 100 Hz on the orin-nx-jp5 tree (hwmon: 6
file reads per sample). Conditions interleave round by round (off, thread, process, ...); the
figure is the median over rounds of p50(on) / p50(off) of the same round. Target: within 1 %.

    python benchmarks/power_sampler.py [--quick] [--rounds N] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
from machine import machine_facts
from report import print_rows, write_json  # noqa: E402

from agent.bench.job import run_bench_job
from agent.config import PowerConfig
from agent.runtime import load_runtime, runtime_info
from coordinator.zoo.generate import build_model, make_spec
from power.discover import PowerOptions, discover
from power.estimate import EstimateSource
from power.sampler import ThreadSampler
from power.simboard import LAYOUTS, SimBoard
from protocol.bodies import BenchSpec

NAME = "power_sampler"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / f"{NAME}.json"
TARGET = 0.01
ROUNDS, QUICK_ROUNDS = 6, 2
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


def perturbation(tmp: Path, cpu: int, n_rounds: int, quick: bool) -> dict:
    data, row, _ = build_model(make_spec(*MODEL[:2], dataset=MODEL[2]))
    model = tmp / "nb201.tflite"
    model.write_bytes(data)
    root = tmp / "perturb-board"
    board = SimBoard(str(root), PERTURB_LAYOUT).create()
    seconds = 1.0 if quick else 4.0
    base = BenchSpec(
        model_sha256=hashlib.sha256(data).hexdigest(),
        model_name="nb201-13291",
        threads=1,
        affinity=[cpu],
        min_seconds=seconds,
        warmup_seconds=0.5,
    )
    power = PowerConfig(options=PowerOptions(sysfs_root=str(root)), idle_seconds=0.0)
    conditions = {
        "off": (base, power),
        "thread": (
            replace(base, power="auto", energy_seconds=seconds, power_period_ms=10.0),
            power,
        ),
        "process": (
            replace(base, power="auto", energy_seconds=seconds, power_period_ms=10.0),
            replace(power, sampler="process"),
        ),
    }
    p50s: dict[str, list[float]] = {k: [] for k in conditions}
    samples: dict[str, list[int]] = {k: [] for k in conditions}
    for _ in range(n_rounds):
        for name, (spec, cfg) in conditions.items():
            result = run_bench_job(
                str(model), spec, "perturb", uuid.uuid4().hex, uuid.uuid4().hex, power=cfg
            )
            if result.status != "ok":
                sys.exit(f"benchmark ({name}) failed: {result.reason}")
            p50s[name].append(result.stats.p50)
            if result.energy is not None:
                samples[name].append(result.energy["sampler"]["n_in_window"])
    board.close()
    off = np.array(p50s["off"])
    out = {"model": "/".join(MODEL), "macs": row["macs"], "seconds": seconds, "p50_ns": p50s}
    for name in ("thread", "process"):
        ratio = np.array(p50s[name]) / off
        out[name] = {
            "ratio_p50": float(np.median(ratio)),
            "ratio_rounds": ratio.round(4).tolist(),
            "samples_in_window": samples[name],
        }
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--quick", action="store_true", help="2 rounds, short runs")
    p.add_argument("--rounds", type=int, help=f"rounds (default {ROUNDS}, --quick {QUICK_ROUNDS})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n_rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    cpu = max(os.sched_getaffinity(0))
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="power-sampler-") as tmp:
        rate_rows = rates(Path(tmp), args.quick)
        perturb = perturbation(Path(tmp), cpu, n_rounds, args.quick)

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
    lines = [("sampler @100 Hz", "p50 on/off", "range", "samples in window", "within 1%")]
    for name in ("thread", "process"):
        p = perturb[name]
        lo, hi = min(p["ratio_rounds"]), max(p["ratio_rounds"])
        lines.append(
            (
                name,
                f"{p['ratio_p50']:.4f}",
                f"{lo:.4f}-{hi:.4f}",
                str(int(np.median(p["samples_in_window"]))),
                "yes" if abs(p["ratio_p50"] - 1) <= TARGET else "no",
            )
        )
    print_rows(lines)
    out = {
        "benchmark": NAME,
        "quick": args.quick,
        "rounds": n_rounds,
        "pinned_cpu": cpu,
        "target_perturbation": TARGET,
        "wall_s": time.monotonic() - start,
        "machine": {**machine_facts(), "runtime": runtime_info(load_runtime())},
        "rates": rate_rows,
        "perturbation": perturb,
    }
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
