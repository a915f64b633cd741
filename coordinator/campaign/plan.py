"""A campaign's plan: which model, in which configuration, on which device, in which order.

Every (model, configuration) pair runs ``repetitions`` times per device. Each repetition is a
round: all pairs once, in an order drawn per device and per round from the campaign's seed, so
slow drift on a board (heat, background load) does not line up with the architectures, and a
campaign stopped half-way leaves whole rounds rather than some models measured three times and
others never. The same seed, devices and models give the same plan.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import numpy as np

from coordinator.campaign.spec import Campaign


@dataclass(frozen=True)
class ModelRef:
    """One model of the campaign: its content hash (what a device is sent) and name."""

    sha256: str
    name: str
    arch: str | None = None
    space: str | None = None


@dataclass(frozen=True)
class Config:
    threads: int
    xnnpack: bool


@dataclass(frozen=True)
class PlannedJob:
    device: str
    model: ModelRef
    config: Config
    repetition: int  # 0-based round; for a canary, its block on the device
    position: int  # order on its device, 0-based
    kind: str = "measure"  # or "canary"

    @property
    def key(self) -> str:
        """Stable identity of this job in the campaign (survives a restart and a re-plan)."""
        parts = [self.device, self.model.sha256, str(self.config.threads),
                 str(int(self.config.xnnpack)), str(self.repetition)]  # fmt: skip
        if self.kind != "measure":
            parts.append(self.kind)
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def configs(campaign: Campaign) -> list[Config]:
    return [Config(t, x) for t in campaign.bench.threads for x in campaign.bench.xnnpack]


def device_seed(seed: int, device: str) -> list[int]:
    """Seed material for one device: the campaign seed and a stable hash of the device id
    (Python's hash() is salted per process, so it would change the order on every run)."""
    digest = hashlib.sha256(device.encode()).digest()
    return [seed, int.from_bytes(digest[:8], "big")]


def plan(campaign: Campaign, devices: list[str], models: list[ModelRef]) -> list[PlannedJob]:
    """Every job of the campaign, device by device, each device's jobs in run order."""
    if not devices:
        raise ValueError("the campaign selects no device")
    if not models:
        raise ValueError("the campaign has no models")
    pairs = [(m, c) for m in models for c in configs(campaign)]
    jobs: list[PlannedJob] = []
    for device in sorted(set(devices)):
        rng = np.random.default_rng(device_seed(campaign.order_seed, device))
        position = 0
        for rep in range(campaign.repetitions):
            for i in rng.permutation(len(pairs)):
                model, config = pairs[i]
                jobs.append(PlannedJob(device, model, config, rep, position))
                position += 1
    return jobs


def with_canaries(
    jobs: list[PlannedJob], canaries: list[ModelRef], config: Config, every: int
) -> list[PlannedJob]:
    """Each device's jobs with a block of canary measurements first, after every `every`
    measurements, and last (so drift over the whole campaign is bracketed)."""
    if not canaries:
        return jobs
    out: list[PlannedJob] = []
    by_device: dict[str, list[PlannedJob]] = {}
    for job in jobs:
        by_device.setdefault(job.device, []).append(job)
    for device, own in by_device.items():
        sequence = [("canary", m, config, 0) for m in canaries]
        blocks = 1
        for i, job in enumerate(own, start=1):
            sequence.append(("measure", job.model, job.config, job.repetition))
            if i % every == 0 or i == len(own):
                sequence.extend(("canary", m, config, blocks) for m in canaries)
                blocks += 1
        out.extend(
            PlannedJob(device, model, cfg, rep, position, kind)
            for position, (kind, model, cfg, rep) in enumerate(sequence)
        )
    return out


def reference_archs() -> list[str]:
    """The 10 NB201 architectures whose latencies are HELP's hardware embedding, in order."""
    text = resources.files("coordinator.campaign").joinpath("reference_archs.txt").read_text()
    return [line.split("\t")[1] for line in text.splitlines() if line.strip()]
