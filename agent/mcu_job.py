"""The ``mcu`` job: benchmark an MLPerf Tiny / EEMBC device under test that this board's config
names ([[mcu.duts]]), with its meter ([[power.meters]]) when there is one, and report it as a
``BenchResult`` like any TFLite benchmark (same outbox path, same store columns).

The DUT's model is baked into its firmware, so the result's ``spec.model_sha256`` is the input
blob's sha256 when one was loaded, else a hash of the DUT's identity (name, profile, model):
results of one firmware stay comparable across runs. ``env_pre["mcu"]`` keeps every window.

Python 3.8 compatible.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Callable, Optional, Sequence, Tuple

from firmware_bridge import mcu_bench
from firmware_bridge.resources import DutResource
from power.serial_meter import MeterConfig
from protocol import BenchResult, BenchSpec, McuSpec, pack_ns

from .bench.stats import compute_stats
from .sysfacts import env_snapshot

ProgressCallback = Callable[[str, int, Optional[int]], None]


def find_dut(duts: Sequence[DutResource], name: str) -> Optional[DutResource]:
    return next((d for d in duts if d.name == name), None)


def resolve(
    spec: McuSpec, duts: Sequence[DutResource], meters: Sequence[MeterConfig]
) -> Tuple[Optional[DutResource], Optional[MeterConfig], Optional[str]]:
    """(the DUT, its meter or None, why the job cannot run or None)."""
    dut = find_dut(duts, spec.dut)
    if dut is None:
        names = ", ".join(d.name for d in duts) or "none; add [[mcu.duts]] to the agent config"
        return None, None, f"no DUT {spec.dut!r} on this board (configured: {names})"
    if spec.power == "none":
        return dut, None, None
    wanted = dut.meter if spec.power == "auto" else spec.power
    if wanted is None:
        return dut, None, None  # auto without a configured meter: timing only
    meter = next((m for m in meters if m.name == wanted), None)
    if meter is None:
        names = ", ".join(m.name for m in meters) or "none"
        return dut, None, f"no meter {wanted!r} on this board (configured: {names})"
    return dut, meter, None


def mcu_problem(
    spec: McuSpec, duts: Sequence[DutResource], meters: Sequence[MeterConfig]
) -> Optional[str]:
    return resolve(spec, duts, meters)[2]


def result_spec(
    spec: McuSpec, run: mcu_bench.McuBenchResult, meter: Optional[MeterConfig]
) -> BenchSpec:
    if spec.input_sha256 is not None:
        sha = spec.input_sha256
    elif run.identity is not None:
        sha = mcu_bench.identity_sha256(run.identity)
    else:
        sha = hashlib.sha256(f"unidentified DUT {spec.dut}".encode()).hexdigest()
    model = run.identity.model if run.identity is not None and run.identity.model else spec.dut
    return BenchSpec(
        model_sha256=sha,
        model_name=f"{spec.dut}: {model}"[:128],
        xnnpack=False,  # no TFLite delegate: the firmware runs the model
        warmup_runs=spec.warmups,
        min_runs=spec.windows,
        min_seconds=spec.min_window_s,
        timeout_s=spec.timeout_s,
        power=meter.name if meter is not None else "none",
    )


def run_mcu_job(
    spec: McuSpec,
    duts: Sequence[DutResource],
    meters: Sequence[MeterConfig],
    job_id: str,
    cmd_id: str,
    result_id: str,
    input_path: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
) -> BenchResult:
    """Never raises for a device problem: a failed run is a failed result saying why."""
    dut, meter, problem = resolve(spec, duts, meters)
    if dut is None or problem is not None:
        raise ValueError(problem or "no DUT")  # the command handler rejects these first
    data = None
    if input_path is not None:
        with open(input_path, "rb") as f:
            data = f.read()
    env_pre = env_snapshot()
    run = mcu_bench.run(
        dut.port.url,
        meter_url=None if meter is None else meter.url,
        windows=spec.windows,
        min_window_s=spec.min_window_s,
        warmups=spec.warmups,
        input_data=data,
        interface=dut.interface,
        baudrate=dut.port.baudrate,
        meter_kind=None if meter is None else meter.kind,
        meter_options=None if meter is None else meter.driver_options(),
        settle_s=dut.port.settle_s,
        progress=progress,
        cancel=cancel,
    )
    fields = run.bench_fields()
    env_pre["mcu"] = fields.pop("mcu")
    raw = fields.pop("raw_ns")
    status = fields["status"] if raw else "failed"
    reason = fields["reason"] or (None if raw else "no window succeeded")
    return BenchResult(
        result_id=result_id,
        job_id=job_id,
        cmd_id=cmd_id,
        status=status,
        reason=reason,
        spec=result_spec(spec, run, meter),
        model_bytes=fields["model_bytes"],
        runtime=fields["runtime"],
        runtime_version=str(fields["runtime_version"])[:64],
        init_ns=fields["init_ns"],
        first_ns=fields["first_ns"],
        warmup_count=fields["warmup_count"],
        warmup_mean_ns=fields["warmup_mean_ns"],
        stats=compute_stats(raw) if raw else None,
        raw_ns=pack_ns(raw) if raw else None,
        env_pre=env_pre,
        env_post=env_snapshot(),
        ops=fields["ops"],
        delegated=False,
        peak_rss_bytes=None,
        started_at=fields["started_at"] or time.time(),
        finished_at=fields["finished_at"] or time.time(),
        energy=fields["energy"],
    )
