"""The store reads behind datasets: which results count, imported rows, canary drift.

Every raw result stays in `results`; a dataset only counts the ones a measurement was meant to
produce. A result whose command a campaign sent (its cmd_id is in `campaign_attempts`) counts
only if it is the accepted result of a measure job; that keeps out canary re-measurements,
throttled attempts that were retried, and late results of superseded attempts. A result of a
plain `halo-coord bench` counts when the store knows its model's space and arch.
"""

from __future__ import annotations

from collections.abc import Iterable

from coordinator.campaign.canary import drift
from coordinator.dataset.aggregate import Measurement, StoredResult, assemble, measured_rows
from coordinator.dataset.rows import IMPORTED, Aggregate, Dataset, DatasetKey, Row
from coordinator.store import Store

DELEGATE_XNNPACK = "xnnpack"
DELEGATE_NONE = "none"
# Columns of `imported` beyond the long format's own, which our CSV export carries so that
# exporting, importing and exporting again gives the same file.
EXTRA_IMPORTED = ("latency_rep_cv", "energy_method", "macs", "params", "drift_flagged")

_MEASURED_SQL = """
WITH accepted AS (
    SELECT result_id, min(campaign_id) AS campaign_id FROM campaign_jobs
    WHERE kind = 'measure' AND state = 'done' AND result_id IS NOT NULL
    GROUP BY result_id
)
SELECT m.space, coalesce(m.dataset, 'unknown'), r.device, r.runtime, r.runtime_version,
       r.threads, coalesce(m.dtype, 'unknown'), r.xnnpack, m.arch, m.arch_index, m.macs,
       m.params, r.job_id, r.received_at, a.campaign_id,
       r.result_id, r.p50_ns, r.p90_ns, r.mean_ns, r.std_ns, r.count, r.e_per_inference_mj,
       r.e_dyn_per_inference_mj, r.p_mean_mw, r.energy_method
FROM results r
JOIN models m ON m.sha256 = r.model_sha256
LEFT JOIN accepted a ON a.result_id = r.result_id
WHERE r.status = 'ok' AND r.p50_ns IS NOT NULL AND m.space IS NOT NULL AND m.arch IS NOT NULL
  AND (a.result_id IS NOT NULL OR r.cmd_id NOT IN (SELECT cmd_id FROM campaign_attempts))
"""


def _filters(space: str | None, device: str | None, columns: dict[str, str]) -> tuple[str, list]:
    clauses, args = [], []
    if space is not None:
        clauses.append(f"{columns['space']} = ?")
        args.append(space)
    if device is not None:
        clauses.append(f"{columns['device']} = ?")
        args.append(device)
    return "".join(f" AND {c}" for c in clauses), args


def measured_results(
    store: Store, *, space: str | None = None, device: str | None = None
) -> list[StoredResult]:
    """The results that count, oldest received first."""
    where, args = _filters(space, device, {"space": "m.space", "device": "r.device"})
    rows = store.query(_MEASURED_SQL + where + " ORDER BY r.received_at, r.rowid", args)
    out = []
    for (sp, ds, dev, rt, rtv, thr, dtype, xnnpack, arch, index, macs, params, job_id,
         received_at, campaign_id, *figures) in rows:  # fmt: skip
        # The delegate asked for, not whether it took ops: a network the converter folded to a
        # constant has nothing to delegate, yet belongs to the same configuration's dataset.
        key = DatasetKey(
            sp, ds, dev, rt, rtv, thr, dtype, DELEGATE_XNNPACK if xnnpack else DELEGATE_NONE
        )
        out.append(
            StoredResult(
                key,
                arch,
                index,
                macs,
                params,
                job_id,
                received_at,
                campaign_id,
                Measurement(*figures),
            )  # fmt: skip
        )
    return out


def imported_rows(
    store: Store, *, space: str | None = None, device: str | None = None
) -> list[Row]:
    where, args = _filters(space, device, {"space": "space", "device": "device"})
    rows = store.query(
        "SELECT space, dataset, device, runtime, runtime_version, threads, dtype, delegate, "
        "arch, arch_index, latency_ms, latency_p90_ms, latency_mean_ms, latency_std_ms, "
        "energy_mj, energy_dyn_mj, power_mw, n_runs, n_results, "
        f"{', '.join(EXTRA_IMPORTED)} FROM imported WHERE 1 = 1{where}",
        args,
    )
    sizes = model_sizes(store)
    keys: dict[tuple, DatasetKey] = {}  # one key object per dataset, not per row
    unknown = (None, None)
    out = []
    for row in rows:
        k = keys.get(row[:8])
        if k is None:
            k = keys[row[:8]] = DatasetKey(*row[:8])
        (arch, index, p50, p90, mean, std, e, e_dyn, p_mw, n_runs, n_results, cv, method,
         macs, params, flagged) = row[8:]  # fmt: skip
        if macs is None or params is None:
            known = sizes.get((k.space, arch, k.dataset), unknown) if sizes else unknown
            macs = known[0] if macs is None else macs
            params = known[1] if params is None else params
        figures = Aggregate(p50, p90, mean, std, cv, e, e_dyn, p_mw, method, n_runs, n_results)
        flag = None if flagged is None else bool(flagged)
        out.append(Row(k, arch, index, figures, macs, params, flag, IMPORTED))
    return out


def model_sizes(store: Store) -> dict[tuple[str, str, str], tuple[int | None, int | None]]:
    """(space, arch, dataset) -> (MACs, params) where the store's models of that arch agree
    (they may not: a model generated at another resolution has other MACs)."""
    rows = store.query(
        "SELECT space, arch, dataset, min(macs), max(macs), min(params), max(params) "
        "FROM models WHERE space IS NOT NULL AND arch IS NOT NULL GROUP BY space, arch, dataset"
    )
    return {
        (sp, arch, ds): (lo_m if lo_m == hi_m else None, lo_p if lo_p == hi_p else None)
        for sp, arch, ds, lo_m, hi_m, lo_p, hi_p in rows
    }


def flagged_devices(store: Store, campaign_ids: Iterable[str]) -> dict[str, set[str]]:
    """campaign id -> the devices its canaries flagged for drift (one drift() per campaign)."""
    return {
        cid: {d.device for d in drift(store, cid) if d.flagged} for cid in sorted(set(campaign_ids))
    }


def load(store: Store, *, space: str | None = None, device: str | None = None) -> list[Dataset]:
    """Every dataset in the store (optionally of one space or device), sorted by id."""
    stored = measured_results(store, space=space, device=device)
    flagged = flagged_devices(store, (s.campaign_id for s in stored if s.campaign_id))
    return assemble(
        measured_rows(stored, flagged), imported_rows(store, space=space, device=device)
    )
