"""Settings of the hierarchical RNN learned optimizer and the layout of its meta-parameters.

The meta-parameters live in one flat float64 vector (what evolution strategies perturb); the
layout below names each slice. ``MetaLayout.unflatten`` returns views, so a population of P
optimizers is a (P, n) matrix whose rows unflatten into arrays with a leading P axis.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from halo.errors import ConfigError, ShapeError

GLOBAL_INPUTS = ("last", "mean")


@dataclass(frozen=True)
class HRNNConfig:
    """Architecture and options; defaults are HALO's released configuration (halo.md §2.1).

    ``global_input``: what the global GRU reads after all tensors. ``"last"`` = the last tensor's
    per-tensor state, as both the HALO fork and the upstream code do; ``"mean"`` = the mean over
    tensors, as the paper describes (halo.md §2.3 step 9, §10 #7).
    """

    cell_sizes: Tuple[int, int, int] = (10, 20, 20)
    num_scales: int = 4
    global_input: str = "last"
    init_lr_range: Tuple[float, float] = (1e-6, 1e-2)
    max_log_lr: float = 33.0

    def __post_init__(self) -> None:
        sizes = tuple(int(s) for s in self.cell_sizes)
        if len(sizes) != 3 or min(sizes) < 1:
            raise ConfigError(
                f"cell_sizes must be three positive sizes (per-parameter, per-tensor, global), "
                f"got {self.cell_sizes!r}"
            )
        object.__setattr__(self, "cell_sizes", sizes)
        if int(self.num_scales) < 2:
            raise ConfigError(f"num_scales must be >= 2, got {self.num_scales!r}")
        if self.global_input not in GLOBAL_INPUTS:
            raise ConfigError(
                f"global_input must be one of {GLOBAL_INPUTS}, got {self.global_input!r}"
            )
        lo, hi = (float(v) for v in self.init_lr_range)
        if not (0 < lo <= hi):
            raise ConfigError(f"init_lr_range must be 0 < min <= max, got {self.init_lr_range!r}")
        object.__setattr__(self, "init_lr_range", (lo, hi))

    @property
    def num_features(self) -> int:
        # m_s (S) + products of neighbouring scales (S-1) + relative log mean squares (S)
        # + relative log learning rate (1).
        s = self.num_scales
        return s + (s - 1) + s + 1

    def architecture(self) -> Dict[str, object]:
        """What the meta-parameter shapes depend on (checkpoints must match this)."""
        return {
            "kind": "hierarchical_rnn",
            "cell_sizes": list(self.cell_sizes),
            "num_scales": self.num_scales,
            "num_features": self.num_features,
        }

    def options(self) -> Dict[str, object]:
        """Behaviour that does not change shapes."""
        d = asdict(self)
        d.pop("cell_sizes")
        d.pop("num_scales")
        d["init_lr_range"] = list(self.init_lr_range)
        return d


def _gru_entries(prefix: str, n_in: int, n_hidden: int) -> List[Tuple[str, Tuple[int, ...]]]:
    # Reset and update gates share one matrix (columns [r | u]); rows are [input | hidden].
    return [
        (prefix + "/W_ru", (n_in + n_hidden, 2 * n_hidden)),
        (prefix + "/W_c", (n_in + n_hidden, n_hidden)),
        (prefix + "/b_ru", (2 * n_hidden,)),
        (prefix + "/b_c", (n_hidden,)),
    ]


class MetaLayout:
    """Names, shapes and offsets of the meta-parameters inside the flat vector."""

    def __init__(self, config: HRNNConfig) -> None:
        h0, h1, h2 = config.cell_sizes
        s, f = config.num_scales, config.num_features
        entries: List[Tuple[str, Tuple[int, ...]]] = []
        entries += _gru_entries("gru0", f, h0)
        # Injected bias of the per-parameter GRU: affine of the tensor state plus affine of the
        # global state, split [reset | update | candidate].
        entries += [("bias0_tensor/W", (h1, 3 * h0)), ("bias0_tensor/b", (3 * h0,))]
        entries += [("bias0_global/W", (h2, 3 * h0)), ("bias0_global/b", (3 * h0,))]
        entries += _gru_entries("gru1", h0 + f, h1)
        entries += [("bias1_global/W", (h2, 3 * h1)), ("bias1_global/b", (3 * h1,))]
        entries += _gru_entries("gru2", h1, h2)
        entries += [("init/h0", (h0,)), ("init/h1", (h1,)), ("init/h2", (h2,))]
        entries += [
            ("readout/w_update", (h0,)),
            ("readout/w_shortcut", (s,)),
            ("readout/w_scl_decay", (h0,)),
            ("readout/b_scl_decay", (1,)),
            ("readout/w_inp_decay", (h0,)),
            ("readout/b_inp_decay", (1,)),
            ("readout/w_lr", (h0,)),
            ("readout/b_lr", (1,)),
            ("scalar/lr_momentum_logit", (1,)),
            ("scalar/step_offset", (1,)),
        ]
        self.config = config
        self.entries = entries
        self.slices: Dict[str, Tuple[int, int, Tuple[int, ...]]] = {}
        offset = 0
        for name, shape in entries:
            n = int(np.prod(shape))
            self.slices[name] = (offset, offset + n, shape)
            offset += n
        self.size = offset

    def names(self) -> List[str]:
        return [name for name, _ in self.entries]

    def unflatten(self, flat: np.ndarray) -> Dict[str, np.ndarray]:
        """Views into ``flat`` ((n,) or (P, n)); with a population the views keep the P axis."""
        flat = np.asarray(flat)
        if flat.shape[-1:] != (self.size,) or flat.ndim not in (1, 2):
            raise ShapeError(
                f"flat meta-parameter vector must have shape ({self.size},) or (P, {self.size}) "
                f"for cell sizes {self.config.cell_sizes}, got {flat.shape}"
            )
        lead = flat.shape[:-1]
        return {
            name: flat[..., a:b].reshape(lead + shape)
            for name, (a, b, shape) in self.slices.items()
        }

    def flatten(self, tree: Dict[str, np.ndarray], population: Optional[int] = None) -> np.ndarray:
        lead: Tuple[int, ...] = () if population is None else (population,)
        out = np.empty(lead + (self.size,), dtype=np.float64)
        for name, (a, b, shape) in self.slices.items():
            if name not in tree:
                raise ShapeError(f"meta-parameter {name!r} is missing")
            value = np.asarray(tree[name], dtype=np.float64)
            if value.shape != lead + shape:
                raise ShapeError(
                    f"meta-parameter {name!r} has shape {value.shape}, expected {lead + shape}"
                )
            out[..., a:b] = value.reshape(lead + (b - a,))
        return out


def init_meta(config: HRNNConfig, seed: int = 0) -> np.ndarray:
    """Initial meta-parameters with the constants of the released code (halo.md §2.4)."""
    rng = np.random.default_rng(seed)
    layout = MetaLayout(config)
    h0 = config.cell_sizes[0]
    s = config.num_scales
    tree: Dict[str, np.ndarray] = {}

    def normal(shape: Tuple[int, ...], std: float, mean: float = 0.0) -> np.ndarray:
        return rng.normal(mean, std, size=shape)

    for name, shape in layout.entries:
        if name.endswith("/W_ru") or name.endswith("/W_c"):
            # BiasGRUCell scale 0.5 over sqrt(fan-in of [input, hidden]).
            tree[name] = normal(shape, 0.5 / math.sqrt(shape[0]))
        elif name.endswith("/b_ru"):
            tree[name] = np.full(shape, 2.2)
        elif name.endswith("/b_c"):
            tree[name] = np.zeros(shape)
        elif name.startswith("bias") and name.endswith("/W"):
            tree[name] = normal(shape, 0.5 / math.sqrt(shape[0]))
        elif name.startswith("bias") and name.endswith("/b"):
            tree[name] = np.zeros(shape)
        elif name.startswith("init/"):
            tree[name] = rng.uniform(-1.0, 1.0, size=shape)
    readout_std = 0.5 / math.sqrt(h0)
    tree["readout/w_update"] = normal((h0,), readout_std)
    tree["readout/w_shortcut"] = normal((s,), 0.1 / math.sqrt(s), mean=1.0 / s)
    tree["readout/w_scl_decay"] = normal((h0,), readout_std)
    tree["readout/b_scl_decay"] = np.array([3.2])
    tree["readout/w_inp_decay"] = normal((h0,), readout_std)
    tree["readout/b_inp_decay"] = np.array([2.2])
    tree["readout/w_lr"] = np.zeros((h0,))
    tree["readout/b_lr"] = np.zeros((1,))
    tree["scalar/lr_momentum_logit"] = np.array([3.2])
    tree["scalar/step_offset"] = np.array([-1.0])
    return layout.flatten(tree)
