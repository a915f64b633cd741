"""Full-integer (int8) post-training quantisation of a float `Graph`, as the TFLite converter does.

Activation ranges come from the NumPy reference pass on seeded random inputs. Scheme (TFLite int8
spec): activations asymmetric per tensor with the range widened to include 0; conv weights
symmetric per output channel (axis 0), depthwise per channel on the last axis, fully-connected
per tensor; bias int32 with scale s_in * s_w; LOGISTIC and SOFTMAX outputs fixed at 1/256, -128;
ops that move data without arithmetic (pooling, reshape, pad, concatenation) keep their input's
parameters, because their int8 kernels do not requantise.
"""

from __future__ import annotations

import numpy as np

from coordinator.zoo import kernels
from coordinator.zoo.graph import Graph, Op, Quant, Tensor, evaluate

CALIBRATION_SAMPLES = 8
_SAME_AS_INPUT = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "RESHAPE", "PAD", "SQUEEZE", "TRANSPOSE"}
_FIXED_OUTPUT = {"LOGISTIC": (1.0 / 256, -128), "SOFTMAX": (1.0 / 256, -128)}
_WEIGHT_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": None}


def calibration_inputs(graph: Graph, seed: int, n: int = CALIBRATION_SAMPLES) -> list[np.ndarray]:
    """Seeded uniform [-1, 1) inputs, one array per sample (for the first graph input)."""
    rng = np.random.default_rng(seed)
    shape = graph.tensors[graph.inputs[0]].shape
    return [rng.uniform(-1.0, 1.0, shape) for _ in range(n)]


def activation_ranges(graph: Graph, samples: list[np.ndarray]) -> dict[int, tuple[float, float]]:
    lo: dict[int, float] = {}
    hi: dict[int, float] = {}
    for x in samples:
        for t, v in evaluate(graph, {graph.inputs[0]: x}, keep=True).items():
            if graph.tensors[t].is_const:
                continue
            lo[t] = min(lo.get(t, np.inf), float(v.min()))
            hi[t] = max(hi.get(t, -np.inf), float(v.max()))
    return {t: (lo[t], hi[t]) for t in lo}


def asymmetric(lo: float, hi: float) -> Quant:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = hi - lo
    scale = span / 255.0 if span > 1e-12 else 1.0
    zp = int(
        np.clip(
            kernels.quantize(np.array([-128.0 - lo / scale]), 1.0, 0, dtype=np.int32)[0], -128, 127
        )
    )
    return Quant.per_tensor(scale, zp)


def quantize_graph(graph: Graph, seed: int) -> Graph:
    """Return a new full-int8 graph (int8 inputs and outputs) computing `graph`."""
    ranges = activation_ranges(graph, calibration_inputs(graph, seed))
    act = _activation_params(graph, ranges)
    q = Graph(
        graph.name,
        [],
        [Op(o.kind, list(o.inputs), list(o.outputs), dict(o.options)) for o in graph.ops],
        list(graph.inputs),
        list(graph.outputs),
    )
    consts: dict[int, Tensor] = {}
    for op in graph.ops:
        consts.update(_quantized_constants(graph, op, act))
    for i, t in enumerate(graph.tensors):
        if i in consts:
            q.tensors.append(consts[i])
        elif t.is_const and i in graph.outputs and t.dtype == "float32":
            quant = asymmetric(float(t.data.min()), float(t.data.max()))  # a folded network
            data = kernels.quantize(t.data, quant.scale, quant.zero_point)
            q.tensors.append(Tensor(t.name, t.shape, "int8", data, quant))
        elif t.is_const:
            q.tensors.append(t)  # int32 shape/axes/paddings operands stay as they are
        else:
            q.tensors.append(Tensor(t.name, t.shape, "int8", None, act[i]))
    return q


def _activation_params(graph: Graph, ranges: dict[int, tuple[float, float]]) -> dict[int, Quant]:
    params: dict[int, Quant] = {t: asymmetric(*r) for t, r in ranges.items()}
    for t in graph.inputs:
        params.setdefault(t, asymmetric(-1.0, 1.0))
    for op in graph.ops:
        out = op.outputs[0]
        if op.kind in _SAME_AS_INPUT:
            params[out] = params[op.inputs[0]]
        elif op.kind in _FIXED_OUTPUT:
            params[out] = Quant.per_tensor(*_FIXED_OUTPUT[op.kind])
        elif op.kind == "CONCATENATION":
            lo = min(ranges.get(t, (0.0, 0.0))[0] for t in (*op.inputs, out))
            hi = max(ranges.get(t, (0.0, 0.0))[1] for t in (*op.inputs, out))
            shared = asymmetric(lo, hi)
            for t in (*op.inputs, out):
                params[t] = shared
    return params


def _quantized_constants(graph: Graph, op: Op, act: dict[int, Quant]) -> dict[int, Tensor]:
    out: dict[int, Tensor] = {}
    if op.kind in _WEIGHT_AXIS:
        x, w, b = op.inputs[:3]
        wt = graph.tensors[w]
        axis = _WEIGHT_AXIS[op.kind]
        wq, w_scale = _symmetric(wt.data, axis)
        out[w] = Tensor(
            wt.name,
            wt.shape,
            "int8",
            wq,
            Quant(w_scale, np.zeros(w_scale.size, np.int64), axis or 0),
        )
        if b >= 0:
            bt = graph.tensors[b]
            b_scale = (act[x].scale[0] * w_scale.astype(np.float64)).astype(np.float32)
            if b_scale.size == 1 and bt.size > 1:
                b_scale = np.full(bt.size, b_scale[0], np.float32)
            bq = kernels.quantize(
                bt.data, b_scale, 0, axis=0 if b_scale.size > 1 else None, dtype=np.int32
            )
            out[b] = Tensor(
                bt.name, bt.shape, "int32", bq, Quant(b_scale, np.zeros(b_scale.size, np.int64), 0)
            )
    elif op.kind in ("ADD", "MUL"):
        for t in op.inputs:
            tensor = graph.tensors[t]
            if tensor.is_const:
                quant = asymmetric(float(tensor.data.min()), float(tensor.data.max()))
                data = kernels.quantize(tensor.data, quant.scale, quant.zero_point)
                out[t] = Tensor(tensor.name, tensor.shape, "int8", data, quant)
    return out


def _symmetric(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    w = w.astype(np.float64)
    if axis is None:
        absmax = np.array([np.abs(w).max()])
    else:
        absmax = np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).max(axis=1)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(kernels.quantize(w / scale.reshape(shape), 1.0, 0, dtype=np.int32), -127, 127)
    return q.astype(np.int8), scale.astype(np.float32)
