"""Parse any .tflite file (ours or a converter's) into a `Graph` of its first subgraph.

Raw flatbuffer table access through `flatbuffers.table.Table`, driven by the same slot tables the
writer uses. Every failure of a malformed file becomes one `TFLiteFormatError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from flatbuffers import number_types as N
from flatbuffers.table import Table

from coordinator.errors import UserError
from coordinator.zoo import tflite_schema as S
from coordinator.zoo.graph import Graph, Op, Quant, Tensor


class TFLiteFormatError(UserError, ValueError):
    """The bytes are not a readable TFLite model."""


@dataclass
class ModelInfo:
    graph: Graph
    description: str
    schema_version: int
    subgraphs: int
    signatures: list[str] = field(default_factory=list)
    opcodes: list[tuple[str, int]] = field(default_factory=list)  # (name, version)


def read_model(data: bytes) -> ModelInfo:
    if len(data) < 8:
        raise TFLiteFormatError(f"file has {len(data)} bytes, too short for a TFLite model")
    if data[4:8] != S.FILE_IDENTIFIER:
        raise TFLiteFormatError(f"file identifier is {bytes(data[4:8])!r}, expected b'TFL3'")
    try:
        return _read(bytearray(data))
    except TFLiteFormatError:
        raise
    except Exception as exc:  # any out-of-range offset in a damaged file lands here
        raise TFLiteFormatError(
            f"damaged or truncated flatbuffer ({type(exc).__name__}: {exc})"
        ) from exc


class _View:
    """One flatbuffer table with slot-number accessors and bounds checks."""

    def __init__(self, buf: bytearray, pos: int):
        if not 0 <= pos < len(buf):
            raise TFLiteFormatError(f"table offset {pos} outside the file")
        self.buf = buf
        self.t = Table(buf, pos)

    def _o(self, slot: int) -> int:
        return self.t.Offset(4 + 2 * slot)

    def scalar(self, slot: int, flags, default):
        o = self._o(slot)
        return self.t.Get(flags, o + self.t.Pos) if o else default

    def string(self, slot: int) -> str:
        o = self._o(slot)
        return self.t.String(o + self.t.Pos).decode("utf-8", "replace") if o else ""

    def table(self, slot: int) -> _View | None:
        o = self._o(slot)
        return _View(self.buf, self.t.Indirect(o + self.t.Pos)) if o else None

    def _vector(self, slot: int, elem: int) -> tuple[int, int]:
        o = self._o(slot)
        if not o:
            return 0, 0
        start, n = self.t.Vector(o), self.t.VectorLen(o)
        if n < 0 or start < 0 or start + n * elem > len(self.buf):
            raise TFLiteFormatError("vector runs past the end of the file")
        return start, n

    def tables(self, slot: int) -> list[_View]:
        start, n = self._vector(slot, 4)
        return [_View(self.buf, self.t.Indirect(start + 4 * i)) for i in range(n)]

    def array(self, slot: int, dtype: str) -> np.ndarray:
        dt = np.dtype(dtype)
        start, n = self._vector(slot, dt.itemsize)
        return np.frombuffer(self.buf, dt, n, start) if n else np.zeros(0, dt)


def _read(buf: bytearray) -> ModelInfo:
    model = _View(buf, N.UOffsetTFlags.py_type(int.from_bytes(buf[0:4], "little")))
    version = model.scalar(S.MODEL["version"], N.Uint32Flags, 0)
    opcodes = [_opcode(v) for v in model.tables(S.MODEL["operator_codes"])]
    buffers = model.tables(S.MODEL["buffers"])
    subgraphs = model.tables(S.MODEL["subgraphs"])
    if not subgraphs:
        raise TFLiteFormatError("model has no subgraph")
    sg = subgraphs[0]
    graph = Graph(name=sg.string(S.SUBGRAPH["name"]) or "main")
    for tv in sg.tables(S.SUBGRAPH["tensors"]):
        graph.tensors.append(_tensor(tv, buffers))
    n_tensors = len(graph.tensors)
    graph.inputs = _checked(sg.array(S.SUBGRAPH["inputs"], "<i4"), n_tensors, "subgraph input")
    graph.outputs = _checked(sg.array(S.SUBGRAPH["outputs"], "<i4"), n_tensors, "subgraph output")
    for ov in sg.tables(S.SUBGRAPH["operators"]):
        idx = ov.scalar(S.OPERATOR["opcode_index"], N.Uint32Flags, 0)
        if idx >= len(opcodes):
            raise TFLiteFormatError(f"operator uses opcode {idx}, model has {len(opcodes)}")
        kind, op_version = opcodes[idx]
        op = Op(
            kind,
            _checked(ov.array(S.OPERATOR["inputs"], "<i4"), n_tensors, f"{kind} input"),
            _checked(ov.array(S.OPERATOR["outputs"], "<i4"), n_tensors, f"{kind} output"),
            _options(ov),
            op_version,
        )
        graph.ops.append(op)
    _check_graph(graph)
    signatures = [
        s.string(S.SIGNATURE_DEF["signature_key"]) for s in model.tables(S.MODEL["signature_defs"])
    ]
    return ModelInfo(
        graph, model.string(S.MODEL["description"]), version, len(subgraphs), signatures, opcodes
    )


# Weighted operators and the rank of their weights (input 1), as every runtime requires.
_WEIGHT_RANKS = {"CONV_2D": 4, "DEPTHWISE_CONV_2D": 4, "FULLY_CONNECTED": 2}


def _check_graph(graph: Graph) -> None:
    """What the statistics rely on and any runtime requires: subgraph inputs and outputs and
    every operator's outputs are tensors (-1, an omitted optional tensor, is only valid as an
    operator input), and weighted operators have weights of the right rank."""
    for what, ids in (("subgraph input", graph.inputs), ("subgraph output", graph.outputs)):
        if any(i < 0 for i in ids):
            raise TFLiteFormatError(f"{what} refers to tensor -1 (none)")
    for n, op in enumerate(graph.ops):
        if not op.outputs or min(op.outputs) < 0:
            raise TFLiteFormatError(f"operator {n} ({op.kind}) has no output tensor")
        rank = _WEIGHT_RANKS.get(op.kind)
        if rank is None:
            continue
        if len(op.inputs) < 2 or op.inputs[1] < 0:
            raise TFLiteFormatError(f"operator {n} ({op.kind}) has no weights tensor")
        shape = graph.tensors[op.inputs[1]].shape
        if len(shape) != rank:
            raise TFLiteFormatError(
                f"operator {n} ({op.kind}): weights of shape {shape}, expected rank {rank}"
            )


def _checked(ids: np.ndarray, n: int, what: str) -> list[int]:
    out = [int(i) for i in ids]
    for i in out:
        if i < -1 or i >= n:
            raise TFLiteFormatError(f"{what} refers to tensor {i}, model has {n}")
    return out


def _opcode(v: _View) -> tuple[str, int]:
    deprecated = v.scalar(S.OPERATOR_CODE["deprecated_builtin_code"], N.Int8Flags, 0)
    code = max(deprecated, v.scalar(S.OPERATOR_CODE["builtin_code"], N.Int32Flags, 0))
    custom = v.string(S.OPERATOR_CODE["custom_code"])
    name = f"CUSTOM:{custom}" if custom else S.BUILTIN_NAMES.get(code, f"BUILTIN_{code}")
    return name, v.scalar(S.OPERATOR_CODE["version"], N.Int32Flags, 1)


def _tensor(v: _View, buffers: list[_View]) -> Tensor:
    code = v.scalar(S.TENSOR["type"], N.Int8Flags, 0)
    dtype = S.TENSOR_TYPES.get(code, f"type{code}")
    shape = tuple(int(d) for d in v.array(S.TENSOR["shape"], "<i4"))
    buf_idx = v.scalar(S.TENSOR["buffer"], N.Uint32Flags, 0)
    data, stored = None, 0
    if 0 < buf_idx < len(buffers):
        raw = buffers[buf_idx].array(S.BUFFER["data"], "u1")
        stored = raw.size
        if raw.size and dtype in S.TYPE_BYTES:
            dt = np.dtype(_NP.get(dtype, "u1"))
            if raw.size != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
                raise TFLiteFormatError(
                    f"tensor {v.string(S.TENSOR['name'])!r}: buffer of "
                    f"{raw.size} bytes does not match shape {shape}"
                )
            data = raw.view(dt).reshape(shape)
        elif raw.size:
            data = raw
    quant = None
    qv = v.table(S.TENSOR["quantization"])
    if qv is not None:
        scale = qv.array(S.QUANT["scale"], "<f4")
        if scale.size:
            zp = qv.array(S.QUANT["zero_point"], "<i8")
            quant = Quant(
                scale.copy(),
                zp.copy() if zp.size else np.zeros(scale.size, np.int64),
                qv.scalar(S.QUANT["quantized_dimension"], N.Int32Flags, 0),
            )
    return Tensor(v.string(S.TENSOR["name"]), shape, dtype, data, quant, stored)


_NP = {
    "float32": "<f4",
    "int32": "<i4",
    "int8": "i1",
    "int64": "<i8",
    "uint8": "u1",
    "int16": "<i2",
    "float16": "<f2",
    "bool": "?",
    "float64": "<f8",
}

_FLAGS = {"i8": N.Int8Flags, "i32": N.Int32Flags, "f32": N.Float32Flags, "bool": N.BoolFlags}


def _options(ov: _View) -> dict:
    tag = ov.scalar(S.OPERATOR["builtin_options_type"], N.Uint8Flags, 0)
    table = S.OPTIONS_BY_TAG.get(tag)
    if table is None:
        return {}
    tv = ov.table(S.OPERATOR["builtin_options"])
    if tv is None:
        return {}
    out: dict = {}
    for f in table.fields:
        if f.kind == "padding":
            out[f.name] = S.PADDING.get(tv.scalar(f.slot, N.Int8Flags, 0), "SAME")
        elif f.kind == "act":
            out[f.name] = S.ACTIVATIONS.get(tv.scalar(f.slot, N.Int8Flags, 0), "NONE")
        elif f.kind == "ivec":
            out[f.name] = tuple(int(i) for i in tv.array(f.slot, "<i4"))
        else:
            default = f.default
            out[f.name] = tv.scalar(f.slot, _FLAGS[f.kind], default)
    return out
