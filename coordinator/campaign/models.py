"""The models a campaign measures, made concrete: zoo models generated (once) into a cache next
to the store, a directory's manifest read, and every model registered in the store as a blob
(what devices are sent) and as a `models` row (what datasets group by).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coordinator.campaign.plan import ModelRef, reference_archs
from coordinator.campaign.spec import Campaign
from coordinator.errors import UserError
from coordinator.store import Store
from coordinator.zoo.generate import Generator, make_spec, read_manifest
from coordinator.zoo.spaces import get_space
from coordinator.zoo.spaces.common import ArchError

# Canaries are always these models, so their latencies compare across campaigns.
CANARY_DATASET = "cifar10"
CANARY_DTYPE = "float32"


def cache_dir(store: Store) -> Path:
    return store.path.parent / "campaign-models"


def _generate(out: Path, space: str, archs: list[str], dataset, dtype: str, seed: int):
    specs = [make_spec(space, a, dataset, None, dtype, seed) for a in archs]
    rows = []
    try:
        with Generator(out) as gen:
            for spec in specs:
                rows.append(gen.add(spec)[0])
    except OSError as exc:
        raise UserError(f"cannot write campaign models to {out}: {exc}") from None
    return [(out / row["file"], row) for row in rows]


def _register(store: Store, files: list[tuple[Path, dict]]) -> list[ModelRef]:
    refs = []
    for path, row in files:
        sha = store.put_blob_file(path)
        if row.get("sha256") not in (None, sha):
            raise UserError(
                f"{path} does not match its manifest (sha256 differs); regenerate it with "
                "`halo-coord zoo generate`"
            )
        store.put_model(sha, path.name, row)
        refs.append(ModelRef(sha, path.name, row.get("arch"), row.get("space")))
    return refs


def resolve(campaign: Campaign, store: Store) -> list[ModelRef]:
    """The campaign's models in a stable order, registered in the store."""
    m = campaign.models
    if m.kind == "dir":
        try:
            manifest = read_manifest(m.dir)
        except ArchError as exc:
            raise UserError(str(exc)) from None
        files = [(m.dir / row["file"], row) for _, row in sorted(manifest.items())]
        missing = [str(p) for p, _ in files if not p.is_file()]
        if missing:
            raise UserError(f"{len(missing)} models named in {m.dir}/manifest.jsonl are missing, "
                            f"e.g. {missing[0]}")  # fmt: skip
    else:
        if m.kind == "reference":
            space, archs, seed = "nb201", reference_archs(), 0
        else:
            space, seed = m.space, m.seed
            try:
                archs = get_space(space).sample(np.random.default_rng(seed), m.sample)
            except ArchError as exc:
                raise UserError(f"{campaign.source}: models.zoo: {exc}") from None
        out = cache_dir(store) / f"{space}-{m.dataset or 'default'}-{m.dtype}-s{seed}"
        files = _generate(out, space, archs, m.dataset, m.dtype, seed)
    refs = _register(store, files)
    if not refs:
        raise UserError(f"{campaign.source}: the campaign has no models")
    return refs


def canaries(campaign: Campaign, store: Store) -> list[ModelRef]:
    """The first ``[canary] models`` NB201 reference architectures, float32 CIFAR-10."""
    n = campaign.canary.models
    if n == 0:
        return []
    out = cache_dir(store) / "canary"
    files = _generate(out, "nb201", reference_archs()[:n], CANARY_DATASET, CANARY_DTYPE, 0)
    return _register(store, files)
