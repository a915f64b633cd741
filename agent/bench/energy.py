"""Energy mode of a benchmark job: pick the power source, lengthen the measured window, sample
beside the benchmark child, and turn the samples into the result's ``energy`` object.

The sampler runs outside the benchmark process (a thread of the supervising parent, or its own
process -- ``[power] sampler``), on the same ``CLOCK_MONOTONIC`` the child marks its idle and
measure windows with.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple, Union

from agent.config import PowerConfig
from power.boards import RailPolicy
from power.discover import AUTO, NONE, open_for_sampler, open_source
from power.errors import PowerError
from power.report import energy_report
from power.sampler import ProcessSampler, SampleLog, ThreadSampler
from power.source import PowerSource
from protocol.bodies import BenchSpec

MIN_WINDOW_S = 10.0
TAU_FACTOR = 20.0


def window_seconds(spec: BenchSpec, tau_s: float) -> float:
    """The measured window: as asked, else max(10 s, 20 sensor time constants) (power.md §11)."""
    if spec.energy_seconds is not None:
        return spec.energy_seconds
    return max(MIN_WINDOW_S, TAU_FACTOR * tau_s)


def energy_spec(spec: BenchSpec, tau_s: float, config: PowerConfig) -> BenchSpec:
    """The spec the child runs: the window made long enough, the idle baseline resolved."""
    window = window_seconds(spec, tau_s)
    return dataclasses.replace(
        spec,
        min_seconds=max(spec.min_seconds, window),
        max_seconds=max(spec.max_seconds, 2 * window),
        idle_seconds=config.idle_seconds if spec.idle_seconds is None else spec.idle_seconds,
        power_period_ms=config.period_ms if spec.power_period_ms is None else spec.power_period_ms,
    )


def check_power(spec: BenchSpec, config: PowerConfig) -> Optional[str]:
    """Why this agent cannot measure the energy ``spec`` asks for, or None. ``auto`` always
    passes: without a source the result says energy was unavailable."""
    if spec.power in (NONE, AUTO):
        return None
    try:
        source, _ = open_source(spec.power, config.options)
    except PowerError as exc:
        return str(exc)
    source.close()
    return None


class EnergyRun:
    """One job's power measurement. ``unavailable`` holds the reason when there is none."""

    def __init__(self, spec: BenchSpec, config: PowerConfig) -> None:
        self.config = config
        self.spec = spec
        self.source: Optional[PowerSource] = None
        self.policy: Optional[RailPolicy] = None
        self.unavailable: Optional[str] = None
        self.failed: Optional[str] = None
        self._sampler: Union[ThreadSampler, ProcessSampler, None] = None
        try:
            self.source, self.policy = open_source(spec.power, config.options)
        except PowerError as exc:
            self.unavailable = str(exc)

    @property
    def tau_s(self) -> float:
        return self.source.tau_s if self.source is not None else 0.0

    def start(self, period_ms: Optional[float]) -> None:
        if self.source is None:
            return
        period_ms = self.config.period_ms if period_ms is None else period_ms
        period_s = period_ms / 1000.0
        avoid = self.spec.affinity  # the benchmark's CPUs, when it is pinned
        try:
            if self.config.sampler == "process":
                self._sampler = ProcessSampler(
                    open_for_sampler, (self.spec.power, self.config.options), period_s, avoid
                ).start()
            else:
                self._sampler = ThreadSampler(self.source, period_s, avoid).start()
        except (OSError, RuntimeError, ValueError) as exc:
            # The latency measurement is still worth having; the result says why no energy.
            self.failed = f"the power sampler did not start: {exc}"

    def stop(self) -> Optional[SampleLog]:
        if self._sampler is None:
            return None
        log, self._sampler = self._sampler.stop(), None
        return log

    def close(self) -> None:
        self.stop()
        if self.source is not None:
            self.source.close()

    def report(
        self,
        log: Optional[SampleLog],
        window: Optional[Tuple[int, int]],
        inferences: int,
        idle: Optional[Tuple[int, int]],
    ) -> Dict[str, Any]:
        if self.source is None or self.policy is None:
            return {"status": "unavailable", "reason": self.unavailable or "no power source"}
        if self.failed is not None:
            return {"status": "failed", "reason": self.failed}
        if log is None or window is None:
            return {"status": "failed", "reason": "the benchmark ended before its window"}
        return energy_report(log, self.source, self.policy, window, inferences, idle)
