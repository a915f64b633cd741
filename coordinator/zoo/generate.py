"""From (space, arch, dataset, resolution, dtype, seed) to a .tflite file and its manifest line.

Weights depend only on the seed and the model's identity (not on dtype), so the float32 and int8
files of one architecture hold the same network. Same inputs → byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from coordinator.zoo.analytics import stats
from coordinator.zoo.graph import Graph
from coordinator.zoo.quantize import quantize_graph
from coordinator.zoo.spaces import get_space, nb201
from coordinator.zoo.spaces.common import ArchError, Init
from coordinator.zoo.writer import WRITER_VERSION, write_model

DTYPES = ("float32", "int8")
MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class ModelSpec:
    space: str
    arch: str  # canonical encoding
    dataset: str
    resolution: int | None = None
    dtype: str = "float32"
    seed: int = 0

    @property
    def index(self) -> int | None:
        return nb201.index_of(self.arch) if self.space == "nb201" else None

    @property
    def model_id(self) -> str:
        key = (
            f"i{self.index:05d}"
            if self.space == "nb201"
            else hashlib.sha1(self.arch.encode()).hexdigest()[:10]
        )
        parts = [self.space]
        if self.dataset != "none":
            parts.append(self.dataset)
        if self.resolution:
            parts.append(f"r{self.resolution}")
        parts += ["f32" if self.dtype == "float32" else self.dtype, key, f"s{self.seed}"]
        return "-".join(parts)


def make_spec(
    space: str,
    arch: str,
    dataset: str | None = None,
    resolution: int | None = None,
    dtype: str = "float32",
    seed: int = 0,
) -> ModelSpec:
    """Validate and canonicalise; every problem becomes an ArchError naming it."""
    module = get_space(space)
    if dtype not in DTYPES:
        raise ArchError(f"unknown dtype {dtype!r} (dtypes: {', '.join(DTYPES)})")
    dataset = dataset or module.DEFAULT_DATASET
    if space == "op":
        dataset = "none"
    elif dataset not in module.DATASETS:
        raise ArchError(
            f"space {space} supports datasets {', '.join(module.DATASETS)}, not {dataset!r}"
        )
    if resolution is not None and not 4 <= resolution <= 1024:
        raise ArchError(f"resolution {resolution} out of range 4..1024")
    return ModelSpec(space, module.canonical(arch), dataset, resolution, dtype, seed)


def build_graph(spec: ModelSpec):
    """The float32 `Built` for the spec, then quantised if the spec asks for int8."""
    module = get_space(spec.space)
    init = Init(spec.seed, spec.space, spec.dataset, spec.resolution)
    built = module.build(spec.arch, spec.dataset, spec.resolution, init)
    graph: Graph = built.graph
    if spec.dtype == "int8":
        graph = quantize_graph(graph, seed=spec.seed)
    return built, graph


def build_model(spec: ModelSpec) -> tuple[bytes, dict, Graph]:
    built, graph = build_graph(spec)
    data = write_model(graph, f"{WRITER_VERSION} {spec.space} {spec.arch}")
    row = {
        "id": spec.model_id,
        "file": f"{spec.model_id}.tflite",
        "space": spec.space,
        "arch": spec.arch,
        "index": spec.index,
        "dtype": spec.dtype,
        "dataset": spec.dataset,
        "resolution": spec.resolution,
        "seed": spec.seed,
        "input_shape": list(graph.tensors[graph.inputs[0]].shape),
        "output_shape": list(graph.tensors[graph.outputs[0]].shape),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        **stats(graph).to_dict(),
        "connected": built.connected,
        "folded": built.folded,
        "notes": built.notes,
        "writer": WRITER_VERSION,
    }
    return data, row, graph


def read_manifest(out_dir: Path) -> dict[str, dict]:
    path = Path(out_dir) / MANIFEST
    rows: dict[str, dict] = {}
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ArchError(f"{path}: not UTF-8 text (byte {exc.start}); regenerate it") from None
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                    rows[row["id"]] = row
                except (ValueError, KeyError, TypeError):
                    raise ArchError(f"{path}:{n}: not a manifest line") from None
    return rows


class Generator:
    """Writes models into a directory; a model already in its manifest is not written again,
    so an interrupted generation can simply be re-run."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.known = read_manifest(self.out_dir)
        self._manifest = open(self.out_dir / MANIFEST, "a", encoding="utf-8")  # noqa: SIM115

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc) -> None:
        self._manifest.close()

    def add(self, spec: ModelSpec) -> tuple[dict, bool]:
        """Returns (manifest row, whether it was newly written)."""
        if (
            spec.model_id in self.known
            and (self.out_dir / self.known[spec.model_id]["file"]).exists()
        ):
            return self.known[spec.model_id], False
        data, row, _ = build_model(spec)
        target = self.out_dir / row["file"]
        tmp = target.with_suffix(".tflite.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)  # the file exists whole before the manifest names it
        self._manifest.write(json.dumps(row, sort_keys=True) + "\n")
        self._manifest.flush()
        self.known[row["id"]] = row
        return row, True
