"""A small dataflow graph that mirrors one TFLite subgraph.

Search spaces build float32 graphs with the methods of `Graph`; `quantize` turns a graph into
full-int8; `writer` serialises a graph; `reader` parses any .tflite file back into one; `analytics`
and `evaluate` work on either. Op options use the schema's field names (see `tflite_schema`), so
the writer and reader need no per-op code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from coordinator.errors import UserError
from coordinator.zoo import kernels
from coordinator.zoo.tflite_schema import TYPE_BYTES

# `str(dtype)` goes through Python-level numpy code; this is a C-level lookup.
_DTYPE_NAMES = {np.dtype(n): n for n in TYPE_BYTES}


class GraphError(UserError, ValueError):
    """A graph is malformed (bad shapes, unknown op, wrong operand)."""


@dataclass
class Quant:
    """Affine quantisation: real = scale * (q - zero_point), per tensor or along `axis`."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    @classmethod
    def per_tensor(cls, scale: float, zero_point: int) -> Quant:
        return cls(np.array([scale], np.float32), np.array([zero_point], np.int64))


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    data: np.ndarray | None = None  # constant contents; None for activations and graph I/O
    quant: Quant | None = None
    nbytes_stored: int = 0  # size of the constant as stored in the file (set by the reader)

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * TYPE_BYTES.get(self.dtype, 4)


@dataclass
class Op:
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)
    version: int | None = None  # set by the reader; the writer derives it


@dataclass
class Graph:
    name: str = "main"
    tensors: list[Tensor] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    # ----- plumbing -------------------------------------------------------------------------
    def add_tensor(self, tensor: Tensor) -> int:
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def shape(self, t: int) -> tuple[int, ...]:
        return self.tensors[t].shape

    def input(self, shape: tuple[int, ...], name: str = "input") -> int:
        t = self.add_tensor(Tensor(name, tuple(shape)))
        self.inputs.append(t)
        return t

    def const(self, array: np.ndarray, name: str) -> int:
        array = np.ascontiguousarray(array)
        dtype = _DTYPE_NAMES.get(array.dtype) or str(array.dtype)
        return self.add_tensor(Tensor(name, array.shape, dtype, array))

    def _emit(
        self, kind: str, inputs: list[int], out_shape: tuple[int, ...], options: dict, name: str
    ) -> int:
        out = self.add_tensor(Tensor(name or f"{kind.lower()}_{len(self.ops)}", tuple(out_shape)))
        self.ops.append(Op(kind, list(inputs), [out], dict(options)))
        return out

    def mark_output(self, t: int) -> None:
        self.outputs.append(t)

    def producers(self) -> dict[int, int]:
        return {o: i for i, op in enumerate(self.ops) for o in op.outputs}

    def consumers(self) -> dict[int, list[int]]:
        users: dict[int, list[int]] = {}
        for i, op in enumerate(self.ops):
            for t in op.inputs:
                if t >= 0:
                    users.setdefault(t, []).append(i)
        return users

    # ----- ops ------------------------------------------------------------------------------
    def conv2d(
        self,
        x: int,
        w: np.ndarray,
        b: np.ndarray,
        stride: int = 1,
        padding: str = "SAME",
        act: str = "NONE",
        dilation: int = 1,
        name: str = "",
    ) -> int:
        n, h, wd, cin = self.shape(x)
        cout, kh, kw, cin_g = w.shape
        if cin % cin_g or cout % (cin // cin_g):
            raise GraphError(f"conv2d {name}: weights {w.shape} do not fit input channels {cin}")
        oh, ow = _out_hw(h, wd, kh, kw, stride, padding, dilation)
        # asarray, not astype: weights come read-only from a cache shared by every model, so
        # referencing them is safe and a copy per model would only cost time.
        wt = self.const(np.asarray(w, np.float32), f"{name}/weights")
        bt = self.const(np.asarray(b, np.float32), f"{name}/bias")
        opts = _spatial(padding, stride, act, dilation)
        return self._emit("CONV_2D", [x, wt, bt], (n, oh, ow, cout), opts, name)

    def depthwise_conv2d(
        self,
        x: int,
        w: np.ndarray,
        b: np.ndarray,
        stride: int = 1,
        padding: str = "SAME",
        act: str = "NONE",
        multiplier: int = 1,
        dilation: int = 1,
        name: str = "",
    ) -> int:
        n, h, wd, c = self.shape(x)
        _, kh, kw, cm = w.shape
        if cm != c * multiplier:
            raise GraphError(f"depthwise {name}: weights {w.shape} need {c}x{multiplier} channels")
        oh, ow = _out_hw(h, wd, kh, kw, stride, padding, dilation)
        wt = self.const(np.asarray(w, np.float32), f"{name}/weights")
        bt = self.const(np.asarray(b, np.float32), f"{name}/bias")
        opts = _spatial(padding, stride, act, dilation)
        opts["depth_multiplier"] = multiplier
        return self._emit("DEPTHWISE_CONV_2D", [x, wt, bt], (n, oh, ow, cm), opts, name)

    def fully_connected(
        self, x: int, w: np.ndarray, b: np.ndarray, act: str = "NONE", name: str = ""
    ) -> int:
        shape = self.shape(x)
        out_f, in_f = w.shape
        rows = int(np.prod(shape)) // in_f
        if rows * in_f != int(np.prod(shape)):
            raise GraphError(f"fully_connected {name}: input {shape} does not flatten to {in_f}")
        wt = self.const(np.asarray(w, np.float32), f"{name}/weights")
        bt = self.const(np.asarray(b, np.float32), f"{name}/bias")
        opts = {"fused_activation_function": act, "keep_num_dims": False}
        return self._emit("FULLY_CONNECTED", [x, wt, bt], (rows, out_f), opts, name)

    def pool2d(
        self,
        x: int,
        kind: str,
        k: int,
        stride: int,
        padding: str = "SAME",
        act: str = "NONE",
        name: str = "",
    ) -> int:
        n, h, wd, c = self.shape(x)
        oh, ow = _out_hw(h, wd, k, k, stride, padding, 1)
        opts = {
            "padding": padding,
            "stride_w": stride,
            "stride_h": stride,
            "filter_width": k,
            "filter_height": k,
            "fused_activation_function": act,
        }
        op = {"avg": "AVERAGE_POOL_2D", "max": "MAX_POOL_2D"}[kind]
        return self._emit(op, [x], (n, oh, ow, c), opts, name)

    def add(self, a: int, b: int, act: str = "NONE", name: str = "") -> int:
        out = _broadcast(self.shape(a), self.shape(b), name)
        return self._emit("ADD", [a, b], out, {"fused_activation_function": act}, name)

    def mul(self, a: int, b: int, act: str = "NONE", name: str = "") -> int:
        out = _broadcast(self.shape(a), self.shape(b), name)
        return self._emit("MUL", [a, b], out, {"fused_activation_function": act}, name)

    def mean(self, x: int, axes: tuple[int, ...], keep_dims: bool = False, name: str = "") -> int:
        shape = self.shape(x)
        axes = tuple(sorted(a % len(shape) for a in axes))
        out = tuple(
            1 if i in axes else d for i, d in enumerate(shape) if keep_dims or i not in axes
        )
        at = self.const(np.array(axes, np.int32), f"{name}/axes")
        return self._emit("MEAN", [x, at], out, {"keep_dims": keep_dims}, name)

    def pad(self, x: int, paddings: list[list[int]], name: str = "") -> int:
        shape = self.shape(x)
        if len(paddings) != len(shape):
            raise GraphError(f"pad {name}: {len(paddings)} pairs for a rank-{len(shape)} tensor")
        out = tuple(d + p[0] + p[1] for d, p in zip(shape, paddings, strict=True))
        pt = self.const(np.array(paddings, np.int32), f"{name}/paddings")
        return self._emit("PAD", [x, pt], out, {}, name)

    def concat(self, xs: list[int], axis: int, act: str = "NONE", name: str = "") -> int:
        shapes = [self.shape(x) for x in xs]
        axis %= len(shapes[0])
        for s in shapes[1:]:
            if len(s) != len(shapes[0]) or any(
                a != b for i, (a, b) in enumerate(zip(s, shapes[0], strict=True)) if i != axis
            ):
                raise GraphError(f"concat {name}: shapes {shapes} differ off axis {axis}")
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        opts = {"axis": axis, "fused_activation_function": act}
        return self._emit("CONCATENATION", list(xs), tuple(out), opts, name)

    def reshape(self, x: int, new_shape: tuple[int, ...], name: str = "") -> int:
        size = int(np.prod(self.shape(x)))
        shape = list(new_shape)
        if -1 in shape:
            known = int(np.prod([d for d in shape if d != -1]))
            shape[shape.index(-1)] = size // known
        if int(np.prod(shape)) != size:
            raise GraphError(f"reshape {name}: {self.shape(x)} cannot become {new_shape}")
        st = self.const(np.array(shape, np.int32), f"{name}/shape")
        return self._emit("RESHAPE", [x, st], tuple(shape), {"new_shape": tuple(shape)}, name)

    def transpose(self, x: int, perm: tuple[int, ...], name: str = "") -> int:
        shape = self.shape(x)
        if sorted(perm) != list(range(len(shape))):
            raise GraphError(f"transpose {name}: {perm} is not a permutation of {len(shape)} axes")
        pt = self.const(np.array(perm, np.int32), f"{name}/perm")
        return self._emit("TRANSPOSE", [x, pt], tuple(shape[p] for p in perm), {}, name)

    def unary(self, kind: str, x: int, name: str = "") -> int:
        if kind not in ("RELU", "RELU6", "LOGISTIC", "HARD_SWISH"):
            raise GraphError(f"unknown unary op {kind}")
        return self._emit(kind, [x], self.shape(x), {}, name)

    def softmax(self, x: int, beta: float = 1.0, name: str = "") -> int:
        return self._emit("SOFTMAX", [x], self.shape(x), {"beta": beta}, name)


def _spatial(padding: str, stride: int, act: str, dilation: int) -> dict:
    return {
        "padding": padding,
        "stride_w": stride,
        "stride_h": stride,
        "fused_activation_function": act,
        "dilation_w_factor": dilation,
        "dilation_h_factor": dilation,
    }


def _out_hw(
    h: int, w: int, kh: int, kw: int, stride: int, padding: str, dilation: int
) -> tuple[int, int]:
    if padding == "SAME":
        oh, ow = math.ceil(h / stride), math.ceil(w / stride)
    else:
        oh = (h - (kh - 1) * dilation - 1) // stride + 1
        ow = (w - (kw - 1) * dilation - 1) // stride + 1
    if oh < 1 or ow < 1:
        raise GraphError(f"a {kh}x{kw}/{stride} {padding} window does not fit a {h}x{w} input")
    return oh, ow


def _broadcast(a: tuple[int, ...], b: tuple[int, ...], name: str) -> tuple[int, ...]:
    if a == b:  # the common case, without numpy's general (and slower) path
        return a
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError as exc:
        raise GraphError(f"{name}: shapes {a} and {b} do not broadcast") from exc


# Ops into which the converter fuses a following RELU/RELU6 (they carry the activation field).
_FUSABLE = {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "ADD",
    "MUL",
    "AVERAGE_POOL_2D",
    "MAX_POOL_2D",
    "CONCATENATION",
}


def fuse_activations(graph: Graph) -> Graph:
    """Fold a RELU/RELU6 into the op before it when it is that op's only consumer, as the TFLite
    converter does. Returns the graph (modified in place)."""
    producers, consumers = graph.producers(), graph.consumers()
    outputs = set(graph.outputs)
    replace: dict[int, int] = {}
    fused: set[int] = set()
    for i, op in enumerate(graph.ops):
        if op.kind not in ("RELU", "RELU6"):
            continue
        src = op.inputs[0]
        p = producers.get(src)
        if p is None or src in outputs or len(consumers.get(src, [])) != 1:
            continue
        prev = graph.ops[p]
        if (
            prev.kind not in _FUSABLE
            or prev.options.get("fused_activation_function", "NONE") != "NONE"
        ):
            continue
        prev.options["fused_activation_function"] = op.kind
        graph.tensors[src] = _renamed(graph.tensors[src], graph.tensors[op.outputs[0]].name)
        replace[op.outputs[0]] = src
        fused.add(i)
    if fused:
        graph.ops = [op for i, op in enumerate(graph.ops) if i not in fused]
        for op in graph.ops:
            op.inputs = [replace.get(t, t) for t in op.inputs]
        graph.outputs = [replace.get(t, t) for t in graph.outputs]
    return prune(graph)


def _renamed(t: Tensor, name: str) -> Tensor:
    return Tensor(name, t.shape, t.dtype, t.data, t.quant)


def prune(graph: Graph) -> Graph:
    """Drop tensors nothing refers to and renumber, keeping order (the file lists tensors in
    this order)."""
    used = set(graph.inputs) | set(graph.outputs)
    for op in graph.ops:
        used.update(t for t in op.inputs if t >= 0)
        used.update(op.outputs)
    keep = sorted(used)
    remap = {old: new for new, old in enumerate(keep)}
    remap[-1] = -1
    graph.tensors = [graph.tensors[t] for t in keep]
    for op in graph.ops:
        op.inputs = [remap[t] for t in op.inputs]
        op.outputs = [remap[t] for t in op.outputs]
    graph.inputs = [remap[t] for t in graph.inputs]
    graph.outputs = [remap[t] for t in graph.outputs]
    return graph


# ----- evaluation ---------------------------------------------------------------------------
def evaluate(
    graph: Graph, feeds: dict[int, np.ndarray], keep: bool = False
) -> dict[int, np.ndarray]:
    """Run the graph in NumPy. Float tensors are computed in float64; int8 tensors are simulated
    ("fake quant"): each op runs in float on dequantised operands and its result is quantised to
    the output's parameters, which is what TFLite's integer kernels compute up to one rounding
    step. Returns the graph outputs, or every tensor when `keep` is set."""
    values: dict[int, np.ndarray] = dict(feeds)
    users = graph.consumers()
    remaining = {t: len(v) for t, v in users.items()}
    for op in graph.ops:
        args = [_real(graph, t, values) for t in op.inputs]
        out = _run_op(op, args)
        ot = graph.tensors[op.outputs[0]]
        values[op.outputs[0]] = _store(ot, out)
        if not keep:
            for t in op.inputs:
                if t in remaining:
                    remaining[t] -= 1
                    if remaining[t] == 0 and t not in graph.outputs and t in values:
                        del values[t]
    if keep:
        return values
    return {t: values[t] if t in values else _const_value(graph.tensors[t]) for t in graph.outputs}


def _const_value(t: Tensor) -> np.ndarray:
    return t.data


def _real(graph: Graph, t: int, values: dict[int, np.ndarray]):
    if t < 0:
        return None
    tensor = graph.tensors[t]
    v = tensor.data if tensor.is_const else values[t]
    if tensor.quant is not None and tensor.dtype in ("int8", "int32", "uint8", "int16"):
        return kernels.dequantize(
            v,
            tensor.quant.scale,
            tensor.quant.zero_point,
            tensor.quant.axis if tensor.quant.scale.size > 1 else None,
        )
    return v


def _store(t: Tensor, out: np.ndarray) -> np.ndarray:
    if t.dtype == "int8" and t.quant is not None:
        return kernels.quantize(out, t.quant.scale, t.quant.zero_point)
    return out.astype(np.float64, copy=False)


def _run_op(op: Op, a: list) -> np.ndarray:
    o = op.options
    act = o.get("fused_activation_function", "NONE")
    k = op.kind
    if k == "CONV_2D":
        groups = a[0].shape[3] // a[1].shape[3]
        return kernels.conv2d(
            a[0],
            a[1],
            a[2],
            (o["stride_h"], o["stride_w"]),
            o["padding"],
            (o["dilation_h_factor"], o["dilation_w_factor"]),
            groups,
            act,
        )
    if k == "DEPTHWISE_CONV_2D":
        return kernels.depthwise_conv2d(
            a[0],
            a[1],
            a[2],
            (o["stride_h"], o["stride_w"]),
            o["padding"],
            (o["dilation_h_factor"], o["dilation_w_factor"]),
            o["depth_multiplier"],
            act,
        )
    if k == "FULLY_CONNECTED":
        return kernels.fully_connected(a[0], a[1], a[2], act)
    if k in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        fn = kernels.avg_pool2d if k == "AVERAGE_POOL_2D" else kernels.max_pool2d
        return fn(
            a[0],
            (o["filter_height"], o["filter_width"]),
            (o["stride_h"], o["stride_w"]),
            o["padding"],
            act,
        )
    if k == "ADD":
        return kernels.add(a[0], a[1], act)
    if k == "MUL":
        return kernels.mul(a[0], a[1], act)
    if k == "MEAN":
        return kernels.mean(a[0], tuple(int(v) for v in a[1].ravel()), o.get("keep_dims", False))
    if k == "PAD":
        return kernels.pad(a[0], np.asarray(a[1]).astype(int).tolist())
    if k == "CONCATENATION":
        return kernels.concatenation(a, o["axis"], act)
    if k == "RESHAPE":
        return kernels.reshape(a[0], tuple(int(v) for v in np.asarray(a[1]).ravel()))
    if k == "TRANSPOSE":
        return np.transpose(a[0], tuple(int(v) for v in np.asarray(a[1]).ravel()))
    if k == "SOFTMAX":
        return kernels.softmax(a[0], o.get("beta", 1.0))
    unary = {
        "RELU": kernels.relu,
        "RELU6": kernels.relu6,
        "LOGISTIC": kernels.logistic,
        "HARD_SWISH": kernels.hard_swish,
    }
    if k in unary:
        return unary[k](a[0])
    raise GraphError(f"no reference kernel for {k}")
