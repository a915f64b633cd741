"""Canary drift: the same few reference models, re-measured on each device through a campaign,
tell whether the device itself changed (thermal paste, a kernel update, a background daemon)
while it was measuring the architectures.

A canary's first measurement in a campaign is its reference; every later one is compared with
it as ``p50 / p50_first - 1``. A device whose largest absolute drift over all its canaries
exceeds the campaign's ``[canary] threshold`` is flagged, in `campaign status` and in every
dataset row measured on it during that campaign.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.campaign.spec import CampaignError, parse
from coordinator.store import Store


@dataclass
class DeviceDrift:
    campaign_id: str
    device: str
    threshold: float
    # model sha256 -> p50s in ms, in measurement order
    series: dict[str, list[float]] = field(default_factory=dict)

    @property
    def max_abs_drift(self) -> float | None:
        drifts = [abs(d) for s in self.series.values() for d in relative_drift(s)]
        return max(drifts) if drifts else None

    @property
    def flagged(self) -> bool:
        worst = self.max_abs_drift
        return worst is not None and worst > self.threshold

    def to_dict(self) -> dict:
        return {
            "campaign_id": self.campaign_id,
            "device": self.device,
            "threshold": self.threshold,
            "max_abs_drift": self.max_abs_drift,
            "flagged": self.flagged,
            "canaries": {sha[:12]: s for sha, s in self.series.items()},
        }


def relative_drift(p50s: list[float]) -> list[float]:
    """Drift of each later measurement against the first: p50 / first - 1."""
    if len(p50s) < 2 or p50s[0] <= 0:
        return []
    return [p / p50s[0] - 1.0 for p in p50s[1:]]


def threshold_of(spec_text: str, source: str) -> float:
    try:
        return parse(spec_text, source, Path(source).parent).canary.threshold
    except CampaignError:
        return float("inf")  # a campaign whose file no longer parses flags nothing


def drift(store: Store, campaign_id: str | None = None) -> list[DeviceDrift]:
    """Per (campaign, device) canary series from the store; only devices that measured a
    canary at least once appear."""
    where, args = "", []
    if campaign_id is not None:
        where, args = " AND j.campaign_id = ?", [campaign_id]
    rows = store.query(
        "SELECT j.campaign_id, j.device, j.model_sha256, r.p50_ns, c.spec_text, c.source "
        "FROM campaign_jobs j JOIN results r ON r.result_id = j.result_id "
        "JOIN campaigns c ON c.campaign_id = j.campaign_id "
        f"WHERE j.kind = 'canary' AND j.state = 'done' AND r.p50_ns IS NOT NULL{where} "
        "ORDER BY j.campaign_id, j.device, r.finished_at, r.rowid",
        args,
    )
    out: dict[tuple[str, str], DeviceDrift] = {}
    thresholds: dict[str, float] = {}
    series: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(dict)
    for cid, device, sha, p50_ns, spec_text, source in rows:
        if cid not in thresholds:
            thresholds[cid] = threshold_of(spec_text, source)
        key = (cid, device)
        if key not in out:
            out[key] = DeviceDrift(cid, device, thresholds[cid], series[key])
        series[key].setdefault(sha, []).append(p50_ns / 1e6)
    return list(out.values())
