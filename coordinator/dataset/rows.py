"""What a dataset is: its key (space, input dataset and device configuration), its per-arch rows,
and how a user names one (the readable id or a unique prefix of it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from coordinator.errors import UserError

# The exported columns, in order (CSV header, parquet schema, JSONL fields).
COLUMNS = (
    "space",
    "dataset",
    "arch",
    "index",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_mean_ms",
    "latency_std_ms",
    "latency_rep_cv",
    "energy_mj",
    "energy_dyn_mj",
    "power_mw",
    "energy_method",
    "n_runs",
    "n_results",
    "macs",
    "params",
    "device",
    "runtime",
    "runtime_version",
    "threads",
    "dtype",
    "delegate",
    "drift_flagged",
)
MEASURED = "measured"
IMPORTED = "imported"
MAX_CANDIDATES = 5


@dataclass(frozen=True, order=True, slots=True)
class DatasetKey:
    space: str
    dataset: str
    device: str
    runtime: str
    runtime_version: str
    threads: int
    dtype: str
    delegate: str

    @property
    def id(self) -> str:
        return (
            f"{self.space}/{self.dataset}/{self.device}/{self.runtime}-{self.runtime_version}"
            f"/t{self.threads}/{self.dtype}/{self.delegate}"
        )

    @property
    def config(self) -> str:
        """The device configuration without the device: tells a device's datasets apart."""
        return f"t{self.threads}-{self.dtype}-{self.delegate}"


@dataclass(slots=True)
class Aggregate:
    """One arch's figures in one dataset (measured: over its results; imported: as given)."""

    latency_p50_ms: float
    latency_p90_ms: float | None = None
    latency_mean_ms: float | None = None
    latency_std_ms: float | None = None
    latency_rep_cv: float | None = None
    energy_mj: float | None = None
    energy_dyn_mj: float | None = None
    power_mw: float | None = None
    energy_method: str | None = None
    n_runs: int | None = None
    n_results: int | None = None


@dataclass(slots=True)
class Row:
    """One (dataset, arch) row as exported."""

    key: DatasetKey
    arch: str
    index: int | None
    figures: Aggregate
    macs: int | None = None
    params: int | None = None
    # None: unknown (an imported row that did not carry the flag)
    drift_flagged: bool | None = None
    origin: str = MEASURED
    result_ids: list[str] = field(default_factory=list)

    @property
    def dataset_id(self) -> str:
        return self.key.id

    def sort_key(self) -> tuple:
        return (self.key.id, *arch_order(self.index, self.arch))

    def values(self) -> dict[str, object]:
        """The COLUMNS of this row, in order."""
        return dict(zip(COLUMNS, self.cells(), strict=True))

    def cells(self) -> tuple:
        """The COLUMNS' values as a tuple (what the writers of large tables use)."""
        k, f = self.key, self.figures
        return (
            k.space, k.dataset, self.arch, self.index, f.latency_p50_ms, f.latency_p90_ms,
            f.latency_mean_ms, f.latency_std_ms, f.latency_rep_cv, f.energy_mj, f.energy_dyn_mj,
            f.power_mw, f.energy_method, f.n_runs, f.n_results, self.macs, self.params,
            k.device, k.runtime, k.runtime_version, k.threads, k.dtype, k.delegate,
            self.drift_flagged,
        )  # fmt: skip


def arch_order(index: int | None, arch: str) -> tuple:
    """Rows by index, archs without one after those with one, then by arch text."""
    return (index is None, -1 if index is None else index, arch)


@dataclass
class Dataset:
    key: DatasetKey
    rows: list[Row]  # sorted by index, then arch
    n_shadowed: int = 0  # imported rows ignored because the arch was measured

    @property
    def id(self) -> str:
        return self.key.id

    @property
    def n_measured(self) -> int:
        return sum(r.origin == MEASURED for r in self.rows)

    @property
    def n_imported(self) -> int:
        return sum(r.origin == IMPORTED for r in self.rows)

    @property
    def n_results(self) -> int:
        return sum(len(r.result_ids) for r in self.rows)

    @property
    def origin(self) -> str:
        imported = self.n_imported > 0 or self.n_shadowed > 0
        if self.n_measured and imported:
            return "both"
        return MEASURED if self.n_measured else IMPORTED

    @property
    def drift_flagged(self) -> bool:
        return any(r.drift_flagged for r in self.rows)


def resolve(datasets: Iterable[Dataset], wanted: str) -> Dataset:
    """The dataset whose id is `wanted`, or the only one it is a prefix of."""
    by_id = {d.id: d for d in datasets}
    if wanted in by_id:
        return by_id[wanted]
    matches = sorted(i for i in by_id if i.startswith(wanted))
    if len(matches) == 1:
        return by_id[matches[0]]
    if matches:
        raise UserError(
            f"dataset id {wanted!r} is ambiguous: it starts {_candidates(matches)}; "
            "give more of the id"
        )
    if not by_id:
        raise UserError(
            f"no dataset {wanted!r}: the store has no datasets yet (measure with `halo-coord "
            "bench` or `campaign`, or `halo-coord dataset import` a latency table)"
        )
    raise UserError(
        f"no dataset {wanted!r}; datasets are {_candidates(sorted(by_id))} "
        "(`halo-coord dataset list` shows them all)"
    )


def _candidates(ids: list[str]) -> str:
    shown = ", ".join(ids[:MAX_CANDIDATES])
    more = len(ids) - MAX_CANDIDATES
    return shown + (f" and {more} more" if more > 0 else "")
