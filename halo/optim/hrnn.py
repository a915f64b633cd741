"""The hierarchical RNN learned optimizer (Wichrowska et al. 2017, "L2O-Scale") as HALO uses it.

Three GRU levels: per parameter (10 units), per tensor (20), global (20); inputs are gradient
EMAs at 4 time scales with learned decays; output is an RMS-normalised direction with a gradient
shortcut, scaled by a per-parameter log learning rate with momentum (halo.md §2.2–2.4).

Every array of the kernel (``init_state``, ``step``) carries a leading population axis P, so P
optimizers with different meta-parameters (the rows of a (P, n) matrix) advance P copies of an
optimizee in one pass; ``HierarchicalRNN`` is the P = 1 case behind the common interface.
Computation runs in the parameters' dtype (float32 on boards, float64 for parity tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from halo.errors import ShapeError
from halo.optim.base import OpCount, Optimizer, check_grad, effective_mask, leaves
from halo.optim.hrnn_config import HRNNConfig, MetaLayout, init_meta

# Constants of the released code (halo.md §2.3): epsilons and the lower log-lr clip.
MS_EPS = 1e-12
RMS_EPS = 1e-16
MIN_LOG_LR = -33.0

Meta = Dict[str, np.ndarray]


@dataclass
class TensorState:
    """Optimizer state of one parameter tensor with N elements, for P population members."""

    h0: np.ndarray  # (P, N, H0) per-parameter GRU state
    gbar: List[np.ndarray]  # S x (P, N) gradient EMAs
    ms: List[np.ndarray]  # S x (P, N) mean-square EMAs (lambda_s)
    inp_decay: np.ndarray  # (P, N) beta, the EMA decay of the fastest scale
    scl_decay: np.ndarray  # (P, N) gamma, the mean-square decay
    log_lr: np.ndarray  # (P, N) log learning rate
    h1: np.ndarray  # (P, H1) per-tensor GRU state


@dataclass
class HRNNState:
    tensors: List[TensorState]
    h2: np.ndarray  # (P, H2) global GRU state
    shapes: List[Tuple[int, ...]]
    step: int = 0

    @property
    def population(self) -> int:
        return int(self.h2.shape[0])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warnings for large |x|.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _vec(h: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(P, M, K) @ (P, K) -> (P, M)."""
    return (h @ w[:, :, None])[..., 0]


def _affine(h: np.ndarray, m: Meta, prefix: str) -> np.ndarray:
    """(P, K) state through a (P, K, J) affine -> (P, J)."""
    return (h[:, None, :] @ m[prefix + "/W"])[:, 0, :] + m[prefix + "/b"]


def gru(m: Meta, prefix: str, x: np.ndarray, h: np.ndarray, injected: Optional[np.ndarray]):
    """BiasGRU on (P, M, I) inputs and (P, M, H) states; ``injected`` (P, 3H) adds to
    [reset | update | candidate] pre-activations. The update gate keeps the *old* state."""
    n_in = x.shape[-1]
    n_hidden = h.shape[-1]
    w_ru = m[prefix + "/W_ru"]
    w_c = m[prefix + "/W_c"]
    gates = x @ w_ru[:, :n_in] + h @ w_ru[:, n_in:] + m[prefix + "/b_ru"][:, None, :]
    cand = x @ w_c[:, :n_in] + m[prefix + "/b_c"][:, None, :]
    if injected is not None:
        gates = gates + injected[:, None, : 2 * n_hidden]
        cand = cand + injected[:, None, 2 * n_hidden :]
    r = _sigmoid(gates[..., :n_hidden])
    u = _sigmoid(gates[..., n_hidden:])
    cand = np.tanh(cand + (r * h) @ w_c[:, n_in:])
    return u * h + (1.0 - u) * cand


def init_state(
    m: Meta,
    config: HRNNConfig,
    shapes: Sequence[Tuple[int, ...]],
    population: int,
    rng: np.random.Generator,
    dtype: Any = np.float64,
) -> HRNNState:
    """Fresh state; initial log learning rates are drawn anew (halo.md §2.2: every run start)."""
    s = config.num_scales
    lo, hi = (math.log(v) / 2.0 for v in config.init_lr_range)
    tensors = []
    for shape in shapes:
        n = int(np.prod(shape))
        zeros = np.zeros((population, n), dtype=dtype)
        if lo == hi:
            log_lr = np.full((population, n), 2.0 * lo)
        else:
            # One offset per tensor on top of per-coordinate draws, so tensors start with
            # different mean learning rates (upstream `_initialize_state`).
            log_lr = rng.uniform(lo, hi, size=(population, n)) + rng.uniform(
                lo, hi, size=(population, 1)
            )
        tensors.append(
            TensorState(
                h0=np.repeat(m["init/h0"][:, None, :], n, axis=1).astype(dtype),
                gbar=[zeros.copy() for _ in range(s)],
                ms=[zeros.copy() for _ in range(s)],
                inp_decay=zeros.copy(),
                scl_decay=zeros.copy(),
                log_lr=np.clip(log_lr, MIN_LOG_LR, config.max_log_lr).astype(dtype),
                h1=np.array(m["init/h1"], dtype=dtype),
            )
        )
    h2 = np.array(m["init/h2"], dtype=dtype)
    return HRNNState(tensors=tensors, h2=h2, shapes=[tuple(s_) for s_ in shapes], step=0)


def _tensor_step(
    m: Meta,
    config: HRNNConfig,
    theta: np.ndarray,
    g: np.ndarray,
    ts: TensorState,
    mean_log_lr: np.ndarray,
    bias0_global: np.ndarray,
    bias1: np.ndarray,
) -> Tuple[np.ndarray, TensorState]:
    s_count = config.num_scales
    beta = ts.inp_decay
    gamma = ts.scl_decay
    gbar: List[np.ndarray] = []
    ms: List[np.ndarray] = []
    scaled: List[np.ndarray] = []
    log_ms: List[np.ndarray] = []
    for s in range(s_count):
        if s > 0:
            beta = np.sqrt(beta)  # each scale twice the time scale of the previous one
        gb = (1.0 - beta) * g + beta * ts.gbar[s]
        old = ts.ms[s]
        # An all-zero mean square means "first step": take the fresh value, not the decay.
        first = np.all(old == 0, axis=1, keepdims=True)
        gam = np.where(first, 0.0, gamma)
        lam = (1.0 - gam) * (gb * gb + MS_EPS) + gam * old
        scaled.append(np.arcsinh(gb / np.sqrt(lam + RMS_EPS)))
        log_ms.append(np.log(lam + RMS_EPS))
        gbar.append(gb)
        ms.append(lam)
    avg_log_ms = sum(log_ms) / s_count
    features = (
        scaled
        + [scaled[i] * scaled[i + 1] for i in range(s_count - 1)]
        + [lm - avg_log_ms for lm in log_ms]
        + [ts.log_lr - mean_log_lr[:, None]]
    )
    x = np.stack(features, axis=-1)  # (P, N, F)

    bias0 = _affine(ts.h1, m, "bias0_tensor") + bias0_global
    h0 = gru(m, "gru0", x, ts.h0, bias0)
    layer_in = np.concatenate([h0, x], axis=-1).mean(axis=1, keepdims=True)
    h1 = gru(m, "gru1", layer_in, ts.h1[:, None, :], bias1)[:, 0, :]

    direction = _vec(h0, m["readout/w_update"]) + _vec(x[..., :s_count], m["readout/w_shortcut"])
    direction = direction / np.sqrt(np.mean(direction * direction, axis=1, keepdims=True) + RMS_EPS)
    scl_decay = _sigmoid(_vec(h0, m["readout/w_scl_decay"]) + m["readout/b_scl_decay"])
    inp_decay = _sigmoid(_vec(h0, m["readout/w_inp_decay"]) + m["readout/b_inp_decay"])
    step_log_lr = np.clip(
        ts.log_lr + _vec(h0, m["readout/w_lr"]) + m["readout/b_lr"], MIN_LOG_LR, config.max_log_lr
    )
    lr_momentum = _sigmoid(m["scalar/lr_momentum_logit"])
    log_lr = lr_momentum * ts.log_lr + (1.0 - lr_momentum) * step_log_lr
    new_theta = theta - np.exp(step_log_lr + m["scalar/step_offset"]) * direction
    new_state = TensorState(h0, gbar, ms, inp_decay, scl_decay, log_lr, h1)
    return new_theta, new_state


def _select(active: np.ndarray, new: np.ndarray, old: np.ndarray) -> np.ndarray:
    return np.where(active.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)


def _merge(active: np.ndarray, new: TensorState, old: TensorState) -> TensorState:
    return TensorState(
        h0=_select(active, new.h0, old.h0),
        gbar=[_select(active, a, b) for a, b in zip(new.gbar, old.gbar)],
        ms=[_select(active, a, b) for a, b in zip(new.ms, old.ms)],
        inp_decay=_select(active, new.inp_decay, old.inp_decay),
        scl_decay=_select(active, new.scl_decay, old.scl_decay),
        log_lr=_select(active, new.log_lr, old.log_lr),
        h1=_select(active, new.h1, old.h1),
    )


def step(
    m: Meta,
    config: HRNNConfig,
    thetas: Sequence[np.ndarray],
    grads: Sequence[Optional[np.ndarray]],
    state: HRNNState,
    active: np.ndarray,
) -> Tuple[List[np.ndarray], HRNNState]:
    """One optimizer step for all tensors (each (P, N)) of all P population members.

    ``active`` (P, T) says which tensors each member updates; an inactive tensor keeps its
    value and all of its state. A tensor inactive for every member may have ``None`` as its
    gradient and costs nothing. The mean log learning rate of the relative-lr feature is taken
    over all coordinates of all tensors, frozen ones included (as the released code does), and
    the global GRU advances every step, reading per-tensor states whether fresh or carried.
    """
    active = np.asarray(active, dtype=bool)
    population = state.population
    if active.shape != (population, len(thetas)):
        raise ShapeError(
            f"active mask has shape {active.shape}, expected ({population}, {len(thetas)})"
        )
    total = sum(t.shape[1] for t in thetas)
    mean_log_lr = sum(ts.log_lr.sum(axis=1) for ts in state.tensors) / total
    bias0_global = _affine(state.h2, m, "bias0_global")
    bias1 = _affine(state.h2, m, "bias1_global")

    new_thetas: List[np.ndarray] = []
    new_tensors: List[TensorState] = []
    for j, (theta, g, ts) in enumerate(zip(thetas, grads, state.tensors)):
        act = active[:, j]
        if not act.any():
            new_thetas.append(theta)
            new_tensors.append(ts)
            continue
        if g is None:
            raise ShapeError(f"tensor {j} is active but has no gradient")
        new_theta, new_ts = _tensor_step(m, config, theta, g, ts, mean_log_lr, bias0_global, bias1)
        if not act.all():
            new_theta = _select(act, new_theta, theta)
            new_ts = _merge(act, new_ts, ts)
        new_thetas.append(new_theta)
        new_tensors.append(new_ts)

    h1s = [ts.h1 for ts in new_tensors]
    if config.global_input == "last":
        global_in = h1s[-1]
    else:
        global_in = np.mean(np.stack(h1s), axis=0)
    h2 = gru(m, "gru2", global_in[:, None, :], state.h2[:, None, :], None)[:, 0, :]
    return new_thetas, HRNNState(new_tensors, h2, state.shapes, state.step + 1)


def compute_dtype(values: Sequence[Any]) -> Any:
    """float32 when every parameter is float32, else float64."""
    return np.result_type(*[np.asarray(v).dtype for v in values], np.float32)


class HierarchicalRNN(Optimizer):
    """The learned optimizer behind the common ``init``/``update`` interface.

    Its meta-parameters are one flat float64 vector: ``get_flat()`` / ``set_flat()`` (what
    evolution strategies perturb). ``population_meta`` unflattens a (P, n) matrix for ``step``.
    """

    name = "hrnn"

    def __init__(
        self,
        config: Optional[HRNNConfig] = None,
        meta: Optional[np.ndarray] = None,
        seed: int = 0,
    ) -> None:
        self.config = config if config is not None else HRNNConfig()
        self.layout = MetaLayout(self.config)
        self._cache: Dict[Any, Meta] = {}
        self.set_flat(init_meta(self.config, seed) if meta is None else meta)

    @property
    def n_meta(self) -> int:
        return self.layout.size

    def get_flat(self) -> np.ndarray:
        return self._flat.copy()

    def set_flat(self, flat: np.ndarray) -> None:
        flat = np.array(flat, dtype=np.float64)
        if flat.shape != (self.layout.size,):
            raise ShapeError(
                f"meta-parameter vector must have shape ({self.layout.size},) for cell sizes "
                f"{self.config.cell_sizes} and {self.config.num_scales} scales, got {flat.shape}"
            )
        if not np.all(np.isfinite(flat)):
            raise ShapeError("meta-parameter vector has non-finite entries")
        self._flat = flat
        self._cache = {}

    def meta(self, dtype: Any = np.float64) -> Meta:
        """Named meta-parameters (with a population axis of 1) in ``dtype``."""
        key = np.dtype(dtype).str
        if key not in self._cache:
            self._cache[key] = self.layout.unflatten(self._flat[None, :].astype(dtype))
        return self._cache[key]

    def population_meta(self, flats: np.ndarray, dtype: Any = np.float64) -> Meta:
        flats = np.asarray(flats)
        if flats.ndim != 2:
            raise ShapeError(f"population meta-parameters must be (P, n), got {flats.shape}")
        return self.layout.unflatten(flats.astype(dtype))

    def init(self, params: Any, rng: Optional[np.random.Generator] = None) -> HRNNState:
        """Fresh state. ``rng`` draws the initial learning rates; pass one per run (seeded)."""
        values, _ = leaves(params)
        dtype = compute_dtype(values)
        rng = rng if rng is not None else np.random.default_rng(0)
        shapes = [tuple(np.shape(v)) for v in values]
        return init_state(self.meta(dtype), self.config, shapes, 1, rng, dtype)

    def update(
        self, params: Any, grads: Any, state: HRNNState, mask: Any = None
    ) -> Tuple[Any, HRNNState]:
        values, rebuild = leaves(params)
        grad_list, flags = effective_mask(params, grads, mask)
        shapes = [tuple(np.shape(v)) for v in values]
        if shapes != state.shapes or state.population != 1:
            raise ShapeError(
                f"optimizer state was made for tensors {state.shapes} (population "
                f"{state.population}) but got {shapes}; call init() with these parameters first"
            )
        dtype = state.h2.dtype
        thetas = [np.asarray(v, dtype=dtype).reshape(1, -1) for v in values]
        grad_rows: List[Optional[np.ndarray]] = []
        for i, (v, g) in enumerate(zip(values, grad_list)):
            if flags[i]:
                grad_rows.append(check_grad(i, v, g).astype(dtype, copy=False).reshape(1, -1))
            else:
                grad_rows.append(None)
        active = np.array(flags, dtype=bool)[None, :]
        new_thetas, new_state = step(
            self.meta(dtype), self.config, thetas, grad_rows, state, active
        )
        out = []
        for i, (v, t) in enumerate(zip(values, new_thetas)):
            out.append(t.reshape(shapes[i]).astype(np.asarray(v).dtype) if flags[i] else v)
        return rebuild(out), new_state

    def cost(self, sizes: Sequence[int], mask: Optional[Sequence[bool]] = None) -> OpCount:
        """Operations of one step (halo.md §2.5): per updated element, per updated tensor,
        and the global GRU once per step."""
        h0, h1, h2 = self.config.cell_sizes
        s = self.config.num_scales
        f = self.config.num_features
        updated = [n for i, n in enumerate(sizes) if mask is None or mask[i]]
        n = sum(updated)
        t = len(updated)
        gru_macs = lambda n_in, h: (n_in + h) * 3 * h  # noqa: E731
        per_elem_macs = gru_macs(f, h0) + 4 * h0 + s
        # EMAs 3S, mean squares 5S, scaling 2S, products S-1, relative logs 2S, relative lr 1,
        # GRU gating ~6·H0, direction normalisation 3, learning-rate momentum 5, update 2.
        per_elem_ops = 12 * s + 6 * h0 + 11
        # asinh, log, sqrt per scale; S-1 decay square roots; one exp; 2·H0 + 2 sigmoids, H0 tanh.
        per_elem_trans = 3 * s + (s - 1) + 1 + 3 * h0 + 2
        per_tensor_macs = h1 * 3 * h0 + gru_macs(h0 + f, h1)
        # The global state's two bias affines and the global GRU run once per step.
        per_step_macs = h2 * 3 * h0 + h2 * 3 * h1 + gru_macs(h1, h2)
        macs = per_elem_macs * n + per_tensor_macs * t + per_step_macs
        elementwise = per_elem_ops * n + (h0 + f) * n + sum(sizes)  # + mean pool, mean log-lr
        transcendental = per_elem_trans * n + t * 3 * h1 + 3 * h2
        state_floats = (h0 + 2 * s + 3) * n + h1 * t + h2
        # Array operations, counted from `_tensor_step` and `update`: ~19 per gradient scale,
        # ~25 per GRU, ~40 for features, readouts and the update, ~7 of reshaping per tensor;
        # the global GRU and bias affines once per step, one log-lr sum per tensor.
        calls = (19 * s + 2 * 25 + 40 + 7) * t + 40 + len(sizes)
        return OpCount(macs, elementwise, transcendental, state_floats, n, calls)
