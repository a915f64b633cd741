"""Learned-optimizer checkpoints: one ``.npz`` holding every meta-parameter under its layout
name plus a JSON metadata record (format, version, architecture, options, free-form extras).

The architecture (cell sizes, number of gradient scales, the layout) must match to load;
options such as the global-GRU input are taken from the file unless the caller overrides them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from halo.errors import CheckpointArchitectureError, CheckpointError
from halo.optim.hrnn import HierarchicalRNN
from halo.optim.hrnn_config import HRNNConfig, MetaLayout

FORMAT = "halofarm-hrnn-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "__metadata__"


def save_checkpoint(
    path: Union[str, Path], optimizer: HierarchicalRNN, extra: Optional[Dict[str, Any]] = None
) -> Path:
    """Write atomically (temporary file, then rename), so a crash never leaves half a file."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    config = optimizer.config
    layout = optimizer.layout
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": dict(
            config.architecture(),
            n_meta=layout.size,
            layout=[[name, list(shape)] for name, shape in layout.entries],
        ),
        "options": config.options(),
        "extra": extra or {},
    }
    arrays = {
        name: np.asarray(v[0]) for name, v in layout.unflatten(optimizer.get_flat()[None]).items()
    }
    arrays[METADATA_KEY] = np.array(json.dumps(metadata, sort_keys=True))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    with _open(path) as data:
        return _metadata(path, data)


# Reading a damaged archive or .npy member lets a zoo of exception types out of zipfile and
# numpy: OSError, ValueError, EOFError, BadZipFile, zlib.error (bad CRC, truncated data),
# NotImplementedError (zip version, compression), RuntimeError (an encrypted member), MemoryError
# (a header claiming more than memory: numpy allocates first), TokenError and SyntaxError (a
# header or dtype that is no Python literal). Fuzzing found each; all mean "damaged file", so
# _open and _member catch Exception.


def _open(path: Union[str, Path]):
    try:
        data = np.load(str(path), allow_pickle=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file; check the path") from None
    except Exception as exc:  # damaged: see above
        raise _unreadable(path, exc) from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise _unreadable(path, "a single .npy array, not an archive")
    return data


def _unreadable(path: Union[str, Path], why: Any) -> CheckpointError:
    return CheckpointError(
        f"{path}: not a readable .npz checkpoint ({why}); re-save it with "
        f"halo.optim.checkpoint.save_checkpoint"
    )


def _member(path: Union[str, Path], data: Any, name: str) -> np.ndarray:
    try:
        return data[name]
    except Exception as exc:  # damaged: see above
        raise CheckpointError(f"{path}: record {name!r} is damaged ({exc}); re-save it") from None


def _metadata(path: Union[str, Path], data: Any) -> Dict[str, Any]:
    if METADATA_KEY not in data.files:
        raise CheckpointError(
            f"{path}: no {METADATA_KEY} record, so not a halofarm learned-optimizer checkpoint; "
            f"re-save it with halo.optim.checkpoint.save_checkpoint"
        )
    try:
        meta = json.loads(str(_member(path, data, METADATA_KEY)))
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise CheckpointError(f"{path}: metadata is not valid JSON ({exc}); re-save it") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: metadata format is not {FORMAT!r}; re-save it")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this halofarm reads "
            f"({FORMAT_VERSION}); upgrade halofarm on this machine"
        )
    return meta


def load_checkpoint(
    path: Union[str, Path],
    expect: Optional[HRNNConfig] = None,
    **option_overrides: Any,
) -> HierarchicalRNN:
    """The optimizer saved at ``path``.

    ``expect``: the architecture the caller needs; a file with another architecture raises
    ``CheckpointArchitectureError``. ``option_overrides`` replace saved options (e.g.
    ``global_input="mean"``) without touching the meta-parameters.
    """
    with _open(path) as data:
        meta = _metadata(path, data)
        arch = meta.get("architecture", {})
        try:
            config = HRNNConfig(
                cell_sizes=tuple(arch["cell_sizes"]),
                num_scales=int(arch["num_scales"]),
                **dict(meta.get("options", {}), **option_overrides),
            )
            saved_layout = [[n, list(s)] for n, s in arch.get("layout", [])]
        # ConfigError (bad sizes or options) is a ValueError.
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(
                f"{path}: architecture/options in the metadata are unusable ({exc}); re-save it"
            ) from None
        if expect is not None and expect.architecture() != config.architecture():
            raise CheckpointArchitectureError(
                f"{path} holds a learned optimizer with cell sizes {list(config.cell_sizes)} and "
                f"{config.num_scales} gradient scales, but {list(expect.cell_sizes)} and "
                f"{expect.num_scales} were expected; load it without `expect` to use its own "
                f"architecture, or meta-train an optimizer for this one"
            )
        layout = MetaLayout(config)
        if saved_layout != [[n, list(s)] for n, s in layout.entries]:
            raise CheckpointArchitectureError(
                f"{path}: its meta-parameter layout differs from this halofarm's for the same "
                f"cell sizes (saved by an incompatible version); re-export it with that version "
                f"or meta-train again"
            )
        tree = {}
        for name, shape in layout.entries:
            if name not in data.files:
                raise CheckpointError(f"{path}: meta-parameter {name!r} is missing; re-save it")
            try:
                value = np.asarray(_member(path, data, name), dtype=np.float64)
            except (TypeError, ValueError) as exc:  # not numbers (strings, objects)
                raise CheckpointError(
                    f"{path}: meta-parameter {name!r} is not numbers ({exc}); re-save it"
                ) from None
            if value.shape != tuple(shape) or not np.all(np.isfinite(value)):
                raise CheckpointError(
                    f"{path}: meta-parameter {name!r} has shape {value.shape} (expected "
                    f"{tuple(shape)}) or non-finite values; re-save it"
                )
            tree[name] = value
    return HierarchicalRNN(config, meta=layout.flatten(tree))


# The meta-trained optimizer shipped inside the package (halo/data/optimizers/), with its
# provenance in the metadata (and in the .json beside it).
DEFAULT_CHECKPOINT = (
    Path(__file__).resolve().parent.parent / "data" / "optimizers" / "halo_default.npz"
)


def load_default(**option_overrides: Any) -> HierarchicalRNN:
    """The shipped meta-trained optimizer."""
    if not DEFAULT_CHECKPOINT.exists():
        raise CheckpointError(
            f"the shipped optimizer {DEFAULT_CHECKPOINT} is missing from this installation; "
            f"reinstall halofarm or pass an optimizer file"
        )
    return load_checkpoint(DEFAULT_CHECKPOINT, expect=HRNNConfig(), **option_overrides)
