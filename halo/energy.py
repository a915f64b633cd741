"""The energy account of on-device adaptation: work counted per step, converted to joules with
per-board constants. Every figure it produces is ``method: "model"``.

Work of one step (:class:`Work`), from the step's record (:class:`halo.adapt.StepRecord`):

* ``mac`` -- forward MACs + the truncated backward pass's MACs + the optimizer's MACs;
* ``op`` -- the optimizer's other arithmetic (elementwise) operations;
* ``transcendental`` -- the optimizer's exp/log/sqrt/asinh/sigmoid/tanh/divisions;
* ``byte`` -- parameters and optimizer state moved: the forward pass reads every weight, the
  backward pass reads the weights of the layers it goes through and writes the gradients it
  computes, the update reads parameter and gradient and writes the parameter, and reads and
  rewrites the optimizer state, of every updated parameter (activations are left out: at these
  sizes they stay in cache);
* ``call`` -- array operations dispatched (NumPy's per-call interpreter overhead, microseconds
  whatever the size: the dominant cost of small networks on a board's CPU).

Constants (:class:`EnergyConstants`) give, per unit of work, the seconds one CPU core takes
(``seconds``) and the dynamic joules it costs above idle (``joules``). Energy of a run:

    dynamic = Σ_unit work · joules[unit];   time = Σ_unit work · seconds[unit]
    total   = dynamic + idle_w · time        (what a meter on the board's input would add up)

Built-in boards (:data:`BOARDS`) are **estimates** derived from a few per-board figures with
stated sources, the same rules for all boards:

    seconds[mac]            = 1 / (clock · fp32 MACs per cycle · 0.25)   # small NumPy products
                                                                          # reach ~1/4 of peak
    seconds[op]             = 1 / (clock · elementwise ops per cycle)
    seconds[transcendental] = cycles per exp/log/tanh / clock
    seconds[byte]           = 1 / single-core memory bandwidth
    seconds[call]           = per-call Python/NumPy overhead on that core
    joules[unit]            = core_w · seconds[unit]

``core_w`` is the board's power with one more core busy, above idle. The per-call overhead is
the one figure measured: 1.6 us per counted array operation on the development host (x86-64,
CPython 3.11, NumPy 2; ``halo.calibrate`` on an Adam adaptation), scaled to each board's core
by clock and a per-core-class factor for instructions per cycle and the older CPython 3.8 the
boards run. The efficiency factors are assumptions; ``halo-agent adapt --calibrate``
measures the seconds on the board and, with a power source, the joules
(:mod:`halo.calibrate`).

Cross-check against HALO's own figures (halo.md §9): on a Raspberry Pi 4 the paper measured
40 mJ per Adam iteration of the thyroid MLP (batch 64) and 150 mJ per HALO iteration -- with
TensorFlow 1.x, whose per-iteration framework overhead dominates. This NumPy loop is modelled
at a few mJ per iteration on the same board, so the paper's absolute figures cannot be used to
derive these constants; only its ratio (HALO 3.75x Adam per iteration) is comparable.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from halo.errors import ConfigError, HaloError
from halo.optim.base import OpCount

UNITS = ("mac", "op", "transcendental", "byte", "call")
FORMAT = "halofarm-energy-constants"
FORMAT_VERSION = 1

# Rules shared by every built-in board (see the module docstring).
GEMM_EFFICIENCY = 0.25
# Array operations outside the network and the optimizer in one step of the adaptation loop:
# minibatch indexing (x and y), the mask draw, the loss's bookkeeping.
LOOP_CALLS_PER_STEP = 6
# Array operations of a softmax cross-entropy loss and its gradient.
LOSS_CALLS = 12


class EnergyConstantsError(HaloError, ValueError):
    """An energy-constants file or board name is unusable."""


@dataclass
class Work:
    mac: float = 0.0
    op: float = 0.0
    transcendental: float = 0.0
    byte: float = 0.0
    call: float = 0.0

    def __add__(self, other: Work) -> Work:
        return Work(*(getattr(self, u) + getattr(other, u) for u in UNITS))

    def scaled(self, factor: float) -> Work:
        return Work(*(getattr(self, u) * factor for u in UNITS))

    def as_dict(self) -> Dict[str, float]:
        return {u: float(getattr(self, u)) for u in UNITS}

    def vector(self) -> List[float]:
        return [float(getattr(self, u)) for u in UNITS]


@dataclass(frozen=True)
class BoardSpec:
    """The per-board figures the built-in constants are derived from."""

    key: str
    name: str
    clock_ghz: float
    macs_per_cycle: float  # fp32 multiply-accumulates per cycle at peak (SIMD lanes x FMA pipes)
    idle_w: float  # board idle power, measured at its input
    core_w: float  # power of one more busy CPU core (with its memory traffic), above idle
    mem_gbps: float  # sustained single-core memory bandwidth
    call_us: float  # Python/NumPy overhead of one array operation
    sources: str
    ops_per_cycle: float = 2.0  # in-cache fp32 elementwise ops (128-bit NEON, load/store bound)
    cycles_per_transcendental: float = 20.0  # NumPy float32 exp/log/tanh without SVML-class code


BOARDS: Dict[str, BoardSpec] = {
    spec.key: spec
    for spec in (
        BoardSpec(
            "rpi4",
            "Raspberry Pi 4 B (BCM2711, 4x Cortex-A72 @ 1.5 GHz)",
            clock_ghz=1.5,
            macs_per_cycle=4.0,
            idle_w=2.7,
            core_w=0.93,
            mem_gbps=4.0,
            call_us=9.0,
            sources="idle 2.7 W and 6.4 W with all 4 cores loaded (widely reproduced bench "
            "measurements of the bare board at its 5 V input): core_w = (6.4 - 2.7) / 4; one "
            "128-bit NEON FMA per cycle (4 fp32 MACs); ~4 GB/s single-core copy bandwidth on "
            "32-bit LPDDR4-3200 (typical tinymembench figures); call: 1.6 us x 2.3 (clock) "
            "x 2 (IPC) x 1.25 (CPython 3.8)",
        ),
        BoardSpec(
            "tx2",
            "Jetson TX2 (4x Cortex-A57 @ 2.0 GHz + 2x Denver2), MAXN",
            clock_ghz=2.0,
            macs_per_cycle=4.0,
            idle_w=1.6,
            core_w=1.0,
            mem_gbps=8.0,
            call_us=8.0,
            sources="module power modes 7.5 W (Max-Q) / 15 W (Max-P, NVIDIA TX2 datasheet); "
            "idle VDD_IN ~1.6 W and ~1 W per busy A57 core are estimates within that budget; "
            "128-bit NEON FMA (4 fp32 MACs/cycle); ~8 GB/s of the 59.7 GB/s LPDDR4 per core "
            "(estimate); call: 1.6 us x 1.75 (clock) x 2.3 (IPC) x 1.25 (CPython 3.8)",
        ),
        BoardSpec(
            "nano",
            "Jetson Nano 4 GB (4x Cortex-A57 @ 1.43 GHz), 10 W mode",
            clock_ghz=1.43,
            macs_per_cycle=4.0,
            idle_w=1.3,
            core_w=0.8,
            mem_gbps=5.0,
            call_us=11.0,
            sources="5 W / 10 W power modes (NVIDIA Nano datasheet); idle POM_5V_IN ~1.3 W and "
            "~0.8 W per busy core are estimates within the 10 W budget; 128-bit NEON FMA; "
            "~5 GB/s of the 25.6 GB/s LPDDR4 per core (estimate); call: the TX2's scaled by "
            "clock",
        ),
        BoardSpec(
            "xavier-nx",
            "Jetson Xavier NX (6x Carmel @ 1.9 GHz, 2-core 15 W mode)",
            clock_ghz=1.9,
            macs_per_cycle=4.0,
            idle_w=3.0,
            core_w=1.2,
            mem_gbps=10.0,
            call_us=6.0,
            sources="10/15/20 W power modes (NVIDIA Xavier NX datasheet); idle VDD_IN ~3 W and "
            "~1.2 W per busy Carmel core are estimates; 128-bit NEON FMA; ~10 GB/s of the "
            "51.2 GB/s LPDDR4x per core (estimate); call: 1.6 us x 1.85 (clock) x 1.6 (IPC) "
            "x 1.25 (CPython 3.8)",
        ),
        BoardSpec(
            "orin-nx",
            "Jetson Orin NX 16 GB (8x Cortex-A78AE @ 2.0 GHz), 25 W mode",
            clock_ghz=2.0,
            macs_per_cycle=8.0,
            idle_w=4.0,
            core_w=1.0,
            mem_gbps=15.0,
            call_us=4.0,
            sources="10/15/25 W power modes (NVIDIA Orin NX datasheet); idle VDD_IN ~4 W and "
            "~1 W per busy A78AE core are estimates; two 128-bit FMA pipes (8 fp32 "
            "MACs/cycle); ~15 GB/s of the 102 GB/s LPDDR5 per core (estimate); call: 1.6 us "
            "x 1.75 (clock) x 1.15 (IPC) x 1.25 (CPython 3.8)",
        ),
        BoardSpec(
            "generic",
            "generic x86-64 host core @ 3.5 GHz (AVX2), CPython 3.11",
            clock_ghz=3.5,
            macs_per_cycle=16.0,
            idle_w=10.0,
            core_w=8.0,
            mem_gbps=15.0,
            call_us=1.6,
            sources="two 256-bit FMA pipes (16 fp32 MACs/cycle), 8 elementwise ops and ~2 "
            "cycles per transcendental with AVX2 SIMD loops; ~8 W per busy core and ~10 W idle "
            "are rough laptop/desktop figures; ~15 GB/s single-core bandwidth; call: 1.6 us "
            "measured on the development host",
            ops_per_cycle=8.0,
            cycles_per_transcendental=2.0,
        ),
    )
}
DEFAULT_BOARD = "generic"


def board_seconds(spec: BoardSpec) -> Dict[str, float]:
    hz = spec.clock_ghz * 1e9
    return {
        "mac": 1.0 / (hz * spec.macs_per_cycle * GEMM_EFFICIENCY),
        "op": 1.0 / (hz * spec.ops_per_cycle),
        "transcendental": spec.cycles_per_transcendental / hz,
        "byte": 1.0 / (spec.mem_gbps * 1e9),
        "call": spec.call_us * 1e-6,
    }


@dataclass(frozen=True)
class EnergyConstants:
    board: str
    description: str
    seconds: Dict[str, float]  # per unit of work, one core
    joules: Dict[str, float]  # dynamic energy per unit of work, above idle
    idle_w: float
    core_w: float
    # "estimate" (built-in table), "calibrated-time" (seconds measured here, power assumed),
    # "calibrated-energy" (joules fitted to a power source's measurements)
    origin: str = "estimate"
    sources: str = ""
    calibration: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for what, table in (("seconds", self.seconds), ("joules", self.joules)):
            missing = [u for u in UNITS if u not in table]
            if missing:
                raise EnergyConstantsError(f"energy constants: {what} lacks {missing}")
            bad = [u for u in UNITS if not (math.isfinite(table[u]) and table[u] >= 0)]
            if bad:
                raise EnergyConstantsError(
                    f"energy constants: {what} of {bad} must be finite numbers >= 0"
                )
        if not (math.isfinite(self.idle_w) and self.idle_w >= 0):
            raise EnergyConstantsError("energy constants: idle_w must be a number >= 0")

    @classmethod
    def for_board(cls, board: str) -> EnergyConstants:
        key = board.strip().lower()
        if key not in BOARDS:
            raise EnergyConstantsError(
                f"unknown board {board!r}; choose one of {', '.join(BOARDS)} or give "
                f"--energy-constants FILE (halo-agent adapt --calibrate writes one)"
            )
        spec = BOARDS[key]
        seconds = board_seconds(spec)
        return cls(
            spec.key,
            spec.name,
            seconds,
            {u: spec.core_w * s for u, s in seconds.items()},
            spec.idle_w,
            spec.core_w,
            "estimate",
            spec.sources,
        )

    def time_s(self, work: Work) -> float:
        return sum(getattr(work, u) * self.seconds[u] for u in UNITS)

    def dynamic_j(self, work: Work) -> float:
        return sum(getattr(work, u) * self.joules[u] for u in UNITS)

    def total_j(self, work: Work) -> float:
        return self.dynamic_j(work) + self.idle_w * self.time_s(work)

    def describe(self) -> Dict[str, Any]:
        return {
            "board": self.board,
            "description": self.description,
            "origin": self.origin,
            "idle_w": self.idle_w,
            "core_w": self.core_w,
            "joules_per_unit": dict(self.joules),
            "seconds_per_unit": dict(self.seconds),
        }

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d.update(format=FORMAT, format_version=FORMAT_VERSION)
        return d

    def save(self, path: Union[str, Path]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> EnergyConstants:
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise EnergyConstantsError(
                f"{path}: cannot read energy constants ({exc.strerror or exc}); check the path "
                f"or write one with halo-agent adapt --calibrate"
            ) from None
        except ValueError as exc:
            raise EnergyConstantsError(f"{path}: not JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise EnergyConstantsError(
                f"{path}: not a {FORMAT} file; write one with halo-agent adapt --calibrate"
            )
        if not isinstance(data.get("format_version"), int) or data["format_version"] > 1:
            raise EnergyConstantsError(f"{path}: format version is newer than this halofarm")
        try:
            return cls(
                board=str(data["board"]),
                description=str(data.get("description", "")),
                seconds={u: float(data["seconds"][u]) for u in UNITS},
                joules={u: float(data["joules"][u]) for u in UNITS},
                idle_w=float(data["idle_w"]),
                core_w=float(data.get("core_w", 0.0)),
                origin=str(data.get("origin", "estimate")),
                sources=str(data.get("sources", "")),
                calibration=dict(data.get("calibration", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EnergyConstantsError(f"{path}: missing or invalid field ({exc})") from None


# --- counting the work of a step ---------------------------------------------------------


def _forward_calls(layer: Any) -> int:
    relu = 2 if layer.relu else 0
    if layer.kind == "dense":
        return 3 + relu  # reshape, product, bias
    # pad, window view, stride slicing, transpose + reshape, product, bias, reshape
    extra = 2 if layer.kind == "conv1d" else 0  # the height-1 wrapping
    return 8 + relu + extra


def _backward_calls(layer: Any, need_w: bool, need_b: bool, need_x: bool) -> int:
    calls = 1 if layer.relu else 0
    calls += 2 * need_w + need_b
    if need_x:
        calls += 2
        if layer.kind != "dense":
            conv = layer if layer.kind == "conv2d" else layer._conv
            calls += conv.kh * conv.kw + 3  # col2im: one slice-add per kernel tap
    return calls


def step_work(net: Any, record: Any, itemsize: int = 4) -> Work:
    """The work of one step of ``net`` from its :class:`halo.adapt.StepRecord`."""
    ops: OpCount = record.ops
    sizes = net.sizes
    backward = record.backward
    lowest = backward.lowest_layer
    calls = LOOP_CALLS_PER_STEP + LOSS_CALLS + ops.calls
    calls += sum(_forward_calls(layer) for layer in net.layers)
    moved = net.n_params  # the forward pass reads every parameter
    if lowest is not None:
        for i, layer in enumerate(net.layers):
            if i < lowest:
                continue
            need_w, need_b = record.computed[2 * i], record.computed[2 * i + 1]
            calls += _backward_calls(layer, need_w, need_b, i > lowest)
            if i > lowest:
                moved += sizes[2 * i]  # weights read to propagate the gradient down
    moved += sum(s for s, c in zip(sizes, record.computed) if c)  # gradients written
    # The update: parameter and gradient read, parameter written; state read and rewritten.
    moved += 3 * ops.params_updated + 2 * ops.state_floats
    return Work(
        mac=float(record.macs_forward + backward.total + ops.macs),
        op=float(ops.elementwise),
        transcendental=float(ops.transcendental),
        byte=float(moved * itemsize),
        call=float(calls),
    )


def run_work(net: Any, records: Sequence[Any], itemsize: int = 4) -> List[Work]:
    return [step_work(net, r, itemsize) for r in records]


def cumulative_j(
    constants: EnergyConstants, works: Sequence[Work], kind: str = "total"
) -> List[float]:
    """Energy after each step (index k = after k steps; entry 0 is 0)."""
    f = constants.total_j if kind == "total" else constants.dynamic_j
    out = [0.0]
    for w in works:
        out.append(out[-1] + f(w))
    return out


def model_report(
    constants: EnergyConstants, works: Sequence[Work], itemsize: int = 4
) -> Dict[str, Any]:
    """The ``energy`` object of an adaptation run (method ``model``)."""
    total = Work()
    for w in works:
        total = total + w
    steps = len(works)
    total_j = constants.total_j(total)
    dynamic_j = constants.dynamic_j(total)
    breakdown = {u: getattr(total, u) * constants.joules[u] for u in UNITS}
    return {
        "method": "model",
        "total_j": total_j,
        "per_step_j": total_j / steps if steps else 0.0,
        "dynamic_j": dynamic_j,
        "idle_j": total_j - dynamic_j,
        "time_s": constants.time_s(total),
        "work": total.as_dict(),
        "dynamic_share": {u: (v / dynamic_j if dynamic_j else 0.0) for u, v in breakdown.items()},
        "constants": {
            "board": constants.board,
            "origin": constants.origin,
            "label": "estimate" if constants.origin == "estimate" else constants.origin,
        },
        "itemsize_bytes": itemsize,
    }


def first_reaching(values: Sequence[float], steps: Sequence[int], target: float) -> Optional[int]:
    """The first evaluation step whose value is >= ``target`` (None if never)."""
    for v, s in zip(values, steps):
        if v >= target - 1e-12:
            return int(s)
    return None


def fit_nonnegative(rows: Sequence[Sequence[float]], values: Sequence[float]) -> List[float]:
    """Least squares with x >= 0 (Lawson-Hanson active set), columns scaled to unit norm so
    counts of very different sizes (bytes vs calls) weigh alike. rows: (m, k), values: (m,)."""
    import numpy as np

    a = np.asarray(rows, dtype=np.float64)
    b = np.asarray(values, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != b.shape[0] or a.shape[0] < 1:
        raise ConfigError(f"fit needs an (m, k) matrix and m values, got {a.shape}, {b.shape}")
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    a = a / scale
    k = a.shape[1]
    x = np.zeros(k)
    passive = np.zeros(k, dtype=bool)
    for _ in range(3 * k + 10):
        w = a.T @ (b - a @ x)
        candidates = ~passive & (w > 1e-12 * max(1.0, float(np.abs(w).max(initial=0.0))))
        if not candidates.any():
            break
        passive[int(np.argmax(np.where(candidates, w, -np.inf)))] = True
        while True:
            z = np.zeros(k)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if np.all(z[passive] > 0):
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
    return list(x / scale)
