"""Shared by the dataset tests (no tests here): models registered the way the zoo describes them,
results with hand-made raw runs stored through the real ingest path, campaign rows, and the
`dataset` CLI run like `halo-coord` runs it (UserError: one line on stderr, exit 2)."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from click.testing import CliRunner

from coordinator.dataset.cli import dataset
from coordinator.errors import UserError
from coordinator.store import Store
from coordinator.zoo.spaces import nb201
from protocol import BenchResult, BenchStats, make, pack_ns
from tests.coordinator.test_ingest_support import bench_result

RUNTIME = "ai-edge-litert"
RUNTIME_VERSION = "2.3.0"
ENERGY = {
    "status": "ok",
    "method": "measured",
    "source": {"name": "ina3221-hwmon"},
    "e_per_inference_mj": 4.0,
    "e_dyn_per_inference_mj": 1.5,
    "p_mean_mw": 2000.0,
}


def nb201_model(
    store: Store,
    index: int,
    *,
    dataset: str = "cifar10",
    dtype: str = "float32",
    macs: int | None = None,
    params: int | None = None,
) -> str:
    """Register nb201 arch `index` as a zoo model would be; returns its sha256."""
    arch = nb201.from_index(index)
    sha = hashlib.sha256(f"nb201|{index}|{dataset}|{dtype}".encode()).hexdigest()
    row = {
        "space": "nb201",
        "arch": arch,
        "index": index,
        "dtype": dtype,
        "dataset": dataset,
        "macs": 1_000_000 * (index + 1) if macs is None else macs,
        "params": 1_000 * (index + 1) if params is None else params,
    }
    store.put_model(sha, f"nb201-{index:05d}", row)
    return sha


def stats_of(raw: list[int]) -> BenchStats:
    """The agent's statistics of raw runs: sorted quantiles, population std."""
    s = sorted(raw)
    n = len(s)
    mean = sum(s) / n
    std = (sum((x - mean) ** 2 for x in s) / n) ** 0.5

    def q(p: float) -> float:
        return float(s[min(n - 1, int(p * n))])

    return BenchStats(n, s[0], q(0.05), q(0.5), q(0.9), q(0.95), q(0.99), s[-1], mean, std,
                      std / mean)  # fmt: skip


def measure(
    store: Store,
    device: str,
    sha: str,
    raw: list[int],
    *,
    threads: int = 4,
    delegated: bool = True,
    cmd_id: str | None = None,
    energy: dict | None = None,
    finished_at: float | None = None,
    status: str = "ok",
) -> BenchResult:
    """Store one result of `sha` on `device` whose runs are `raw` (ns)."""
    base = bench_result(0, model_sha256=sha, cmd_id=cmd_id, status=status)
    body = replace(
        base,
        spec=replace(base.spec, threads=threads, xnnpack=delegated),
        runtime=RUNTIME,
        runtime_version=RUNTIME_VERSION,
        delegated=delegated,
        energy=energy,
        finished_at=time.time() if finished_at is None else finished_at,
    )
    if status == "ok":
        body = replace(body, stats=stats_of(raw), raw_ns=pack_ns(raw))
    store.add_results([make(body, device)])
    return body


def runs(center_ns: int, n: int, spread: int = 40_000, seed: int = 0) -> list[int]:
    """n deterministic run times around center_ns."""
    return [center_ns + ((i * 7919 + seed * 104729) % (2 * spread + 1)) - spread for i in range(n)]


@dataclass
class Campaign:
    """Campaign rows written the way the campaign runner writes them."""

    store: Store
    campaign_id: str
    canary_threshold: float = 0.05

    def __post_init__(self) -> None:
        spec = (
            f'name = "{self.campaign_id}"\n[devices]\nids = ["x"]\n[models]\nreference = true\n'
            f"[canary]\nmodels = 1\nthreshold = {self.canary_threshold}\n"
        )
        now = time.time()
        self.store.execute(
            "INSERT INTO campaigns (campaign_id, name, source, spec_text, spec_sha256, state, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
            (self.campaign_id, self.campaign_id, "/tmp/c.toml", spec, "0" * 64, now, now),
        )

    def attempt(self, key: str, device: str, sha: str, kind: str = "measure") -> str:
        """A new command for job `key` (the job is created on its first attempt)."""
        cmd_id = uuid.uuid4().hex
        now = time.time()
        self.store.execute(
            "INSERT INTO campaign_jobs (campaign_id, key, device, position, kind, model_sha256, "
            "threads, xnnpack, repetition, state, attempt, cmd_id, updated_at) "
            "VALUES (?, ?, ?, 0, ?, ?, 4, 1, 0, 'sent', 1, ?, ?) "
            "ON CONFLICT (campaign_id, key) DO UPDATE SET attempt = attempt + 1, "
            "cmd_id = excluded.cmd_id",
            (self.campaign_id, key, device, kind, sha, cmd_id, now),
        )
        self.store.execute(
            "INSERT INTO campaign_attempts (cmd_id, campaign_id, key, attempt, sent_at) "
            "VALUES (?, ?, ?, (SELECT attempt FROM campaign_jobs WHERE campaign_id = ? "
            "AND key = ?), ?)",
            (cmd_id, self.campaign_id, key, self.campaign_id, key, now),
        )
        return cmd_id

    def finish(self, key: str, result_id: str, state: str = "done") -> None:
        self.store.execute(
            "UPDATE campaign_jobs SET state = ?, result_id = ? WHERE campaign_id = ? AND key = ?",
            (state, result_id, self.campaign_id, key),
        )


@dataclass
class Run:
    code: int
    out: str
    err: str


def coord(*args: str | Path) -> Run:
    """`halo-coord dataset ARGS` with halo-coord's error handling (coordinator.cli.main)."""
    result = CliRunner().invoke(dataset, [str(a) for a in args])
    if isinstance(result.exception, UserError):
        message = str(result.exception).replace("\n", " ")
        return Run(2, result.stdout, result.stderr + f"halo-coord: error: {message}\n")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Run(result.exit_code, result.stdout, result.stderr)
