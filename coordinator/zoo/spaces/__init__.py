"""Search spaces by name. Each module provides NAME, DATASETS, DEFAULT_DATASET, SIZE (None when
not enumerable), canonical(text), sample(rng, n) and build(arch, dataset, resolution, init)."""

from __future__ import annotations

from types import ModuleType

from coordinator.zoo.spaces import fbnet, mbv2, nb201, op
from coordinator.zoo.spaces.common import ArchError

SPACES: dict[str, ModuleType] = {m.NAME: m for m in (nb201, fbnet, mbv2, op)}


def get_space(name: str) -> ModuleType:
    try:
        return SPACES[name]
    except KeyError:
        raise ArchError(f"unknown space {name!r} (spaces: {', '.join(SPACES)})") from None
