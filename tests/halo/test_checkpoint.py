"""Checkpoints: .npz meta-parameters + JSON metadata, with clear errors on mismatch."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from halo.errors import CheckpointArchitectureError, CheckpointError
from halo.optim import HierarchicalRNN, HRNNConfig, load_checkpoint, save_checkpoint
from halo.optim.checkpoint import METADATA_KEY, read_metadata


def _trained(config: HRNNConfig) -> HierarchicalRNN:
    opt = HierarchicalRNN(config, seed=3)
    opt.set_flat(opt.get_flat() + np.random.default_rng(0).normal(0, 0.1, opt.n_meta))
    return opt


def test_round_trip_restores_meta_parameters_options_and_behaviour(tmp_path: Path) -> None:
    opt = _trained(HRNNConfig(global_input="mean", max_log_lr=5.0))
    path = save_checkpoint(tmp_path / "halo", opt, extra={"meta_iterations": 50})
    assert path.name == "halo.npz" and not list(tmp_path.glob("*.tmp"))
    loaded = load_checkpoint(path, expect=HRNNConfig())
    np.testing.assert_array_equal(loaded.get_flat(), opt.get_flat())
    assert loaded.config == opt.config
    meta = read_metadata(path)
    assert meta["architecture"]["n_meta"] == 8349 and meta["extra"] == {"meta_iterations": 50}
    assert meta["options"]["global_input"] == "mean"
    params = [np.linspace(-1, 1, 12).reshape(3, 4), np.ones(4)]
    grads = [np.cos(p) for p in params]
    a, _ = opt.update(params, grads, opt.init(params))
    b, _ = loaded.update(params, grads, loaded.init(params))
    np.testing.assert_array_equal(a[0], b[0])
    assert load_checkpoint(path, global_input="last").config.global_input == "last"
    # Entries are stored by name: readable without halofarm.
    with np.load(path) as data:
        assert data["gru0/W_ru"].shape == (22, 20)


def test_architecture_mismatch_says_what_to_do(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "small.npz", _trained(HRNNConfig(cell_sizes=(4, 8, 8))))
    with pytest.raises(CheckpointArchitectureError, match=r"\[4, 8, 8\].*\[10, 20, 20\].*without"):
        load_checkpoint(path, expect=HRNNConfig())
    assert load_checkpoint(path).config.cell_sizes == (4, 8, 8)


def test_bad_files_raise_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.ones(3))
    with pytest.raises(CheckpointError, match="not a halofarm"):
        load_checkpoint(plain)
    good = save_checkpoint(tmp_path / "good.npz", _trained(HRNNConfig()))
    with np.load(good) as data:
        arrays = {k: data[k] for k in data.files}
    newer = json.loads(str(arrays[METADATA_KEY]))
    newer["format_version"] = 99
    np.savez(tmp_path / "newer.npz", **dict(arrays, **{METADATA_KEY: np.array(json.dumps(newer))}))
    with pytest.raises(CheckpointError, match="upgrade halofarm"):
        load_checkpoint(tmp_path / "newer.npz")
    del arrays["gru2/b_c"]
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(CheckpointError, match="gru2/b_c"):
        load_checkpoint(tmp_path / "partial.npz")
    assert zipfile.is_zipfile(good)
