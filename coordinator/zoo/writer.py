"""Serialise a `Graph` to .tflite bytes with the `flatbuffers` builder — no TensorFlow.

The output follows what the TF converter writes: file identifier TFL3, schema version 3, empty
buffer 0, one buffer per constant (16-byte aligned), both builtin-code fields set, converter op
versions, and a `serving_default` SignatureDef.
"""

from __future__ import annotations

import struct

import flatbuffers
import numpy as np

from coordinator.zoo import tflite_schema as S
from coordinator.zoo.graph import Graph, Op

WRITER_VERSION = "halofarm-zoo/2"

_NP_DTYPES = {
    "float32": "<f4",
    "int32": "<i4",
    "int8": "i1",
    "int64": "<i8",
    "uint8": "u1",
    "int16": "<i2",
}


def write_model(graph: Graph, description: str = WRITER_VERSION) -> bytes:
    const_bytes = sum(t.nbytes for t in graph.tensors if t.is_const)
    # Fields equal to their schema default are left out, as the converter's C++ builder does.
    b = flatbuffers.Builder(const_bytes + 64 * 1024)

    # Buffers: 0 is the empty sentinel; constants get theirs in tensor order.
    buffer_of: dict[int, int] = {}
    buffers = [_table(b, S.BUFFER["n"], [])]
    for i, t in enumerate(graph.tensors):
        if t.is_const:
            raw = np.ascontiguousarray(t.data, dtype=_NP_DTYPES[t.dtype]).tobytes()
            data = _bytes_vector(b, raw)
            buffer_of[i] = len(buffers)
            buffers.append(_table(b, S.BUFFER["n"], [("off", S.BUFFER["data"], data)]))

    # Identical shape vectors and option tables are written once and referenced from every
    # tensor/operator that has them (flatbuffers allows shared objects; the runtime reads
    # them as usual) -- this keeps the pure-Python builder's per-object cost down.
    shared: dict[tuple, int] = {}
    tensors = [_tensor(b, t, buffer_of.get(i, 0), shared) for i, t in enumerate(graph.tensors)]

    opcodes: dict[tuple[str, int], int] = {}
    operators = []
    for op in graph.ops:
        version = _version(graph, op)
        key = (op.kind, version)
        if key not in opcodes:
            opcodes[key] = len(opcodes)
        operators.append(_operator(b, op, opcodes[key], shared))
    opcode_tables = [_opcode(b, kind, version) for kind, version in opcodes]

    name = b.CreateString(graph.name)
    subgraph = _table(
        b,
        S.SUBGRAPH["n"],
        [
            ("off", S.SUBGRAPH["tensors"], _offsets(b, tensors)),
            ("off", S.SUBGRAPH["inputs"], _ints(b, graph.inputs)),
            ("off", S.SUBGRAPH["outputs"], _ints(b, graph.outputs)),
            ("off", S.SUBGRAPH["operators"], _offsets(b, operators)),
            ("off", S.SUBGRAPH["name"], name),
        ],
    )
    signature = _signature(b, graph)
    desc = b.CreateString(description)
    model = _table(
        b,
        S.MODEL["n"],
        [
            ("u32", S.MODEL["version"], S.SCHEMA_VERSION),
            ("off", S.MODEL["operator_codes"], _offsets(b, opcode_tables)),
            ("off", S.MODEL["subgraphs"], _offsets(b, [subgraph])),
            ("off", S.MODEL["description"], desc),
            ("off", S.MODEL["buffers"], _offsets(b, buffers)),
            ("off", S.MODEL["signature_defs"], _offsets(b, [signature])),
        ],
    )
    b.Finish(model, file_identifier=S.FILE_IDENTIFIER)
    return bytes(b.Output())


def _version(graph: Graph, op: Op) -> int:
    inp = graph.tensors[op.inputs[0]]
    opts = dict(op.options)
    if op.kind == "CONV_2D":
        opts["groups"] = inp.shape[3] // graph.tensors[op.inputs[1]].shape[3]
    scales: tuple = ()
    if op.kind == "MUL" and inp.dtype == "int8":
        scales = tuple(float(graph.tensors[t].quant.scale[0]) for t in (*op.inputs, *op.outputs))
    return S.op_version(op.kind, inp.dtype, opts, scales)


def _shared(shared: dict[tuple, int], key: tuple, make) -> int:
    off = shared.get(key)
    if off is None:
        off = shared[key] = make()
    return off


def _tensor(b: flatbuffers.Builder, t, buffer: int, shared: dict[tuple, int]) -> int:
    quant = _quant(b, t.quant) if t.quant is not None else None
    name = b.CreateString(t.name)
    shape = _shared(shared, ("shape", *t.shape), lambda: _ints(b, t.shape))
    fields = [
        ("off", S.TENSOR["shape"], shape),
        ("i8", S.TENSOR["type"], S.TENSOR_TYPE_CODES[t.dtype]),
        ("u32", S.TENSOR["buffer"], buffer),
        ("off", S.TENSOR["name"], name),
    ]
    if quant is not None:
        fields.append(("off", S.TENSOR["quantization"], quant))
    return _table(b, S.TENSOR["n"], fields)


def _quant(b: flatbuffers.Builder, q) -> int:
    scale = b.CreateNumpyVector(np.asarray(q.scale, "<f4"))
    zp = b.CreateNumpyVector(np.asarray(q.zero_point, "<i8"))
    return _table(
        b,
        S.QUANT["n"],
        [
            ("off", S.QUANT["scale"], scale),
            ("off", S.QUANT["zero_point"], zp),
            ("i32", S.QUANT["quantized_dimension"], q.axis),
        ],
    )


def _operator(b: flatbuffers.Builder, op: Op, opcode_index: int, shared: dict[tuple, int]) -> int:
    fields = [
        ("u32", S.OPERATOR["opcode_index"], opcode_index),
        ("off", S.OPERATOR["inputs"], _ints(b, op.inputs)),
        ("off", S.OPERATOR["outputs"], _ints(b, op.outputs)),
    ]
    table_name = S.OP_OPTIONS.get(op.kind)
    if table_name is not None:
        table = S.OPTIONS[table_name]
        fields.append(("u8", S.OPERATOR["builtin_options_type"], table.union_tag))
        key = (table_name, *sorted((k, _hashable(v)) for k, v in op.options.items()))
        options = _shared(shared, key, lambda: _options(b, table, op.options))
        fields.append(("off", S.OPERATOR["builtin_options"], options))
    return _table(b, S.OPERATOR["n"], fields)


def _hashable(v):
    return tuple(v) if isinstance(v, list | tuple) else v


def _options(b: flatbuffers.Builder, table: S.OptionsTable, options: dict) -> int:
    fields = []
    for f in table.fields:
        value = options.get(f.name, f.default)
        if f.kind == "padding":
            fields.append(("i8", f.slot, S.PADDING_CODES[value], S.PADDING_CODES[f.default]))
        elif f.kind == "act":
            fields.append(("i8", f.slot, S.ACTIVATION_CODES[value], S.ACTIVATION_CODES[f.default]))
        elif f.kind == "ivec":
            fields.append(("off", f.slot, _ints(b, value)))
        else:
            fields.append((f.kind, f.slot, value, f.default))
    return _table(b, table.n_slots, fields)


def _opcode(b: flatbuffers.Builder, kind: str, version: int) -> int:
    code = S.BUILTIN_OPS[kind]
    return _table(
        b,
        S.OPERATOR_CODE["n"],
        [
            ("i8", S.OPERATOR_CODE["deprecated_builtin_code"], min(code, 127)),
            ("i32", S.OPERATOR_CODE["version"], version, 1),
            ("i32", S.OPERATOR_CODE["builtin_code"], code),
        ],
    )


def _signature(b: flatbuffers.Builder, graph: Graph) -> int:
    def tensor_maps(ids: list[int], default: str) -> int:
        maps = []
        for n, t in enumerate(ids):
            name = b.CreateString(default if len(ids) == 1 else f"{default}_{n}")
            maps.append(
                _table(
                    b,
                    S.TENSOR_MAP["n"],
                    [("off", S.TENSOR_MAP["name"], name), ("u32", S.TENSOR_MAP["tensor_index"], t)],
                )
            )
        return _offsets(b, maps)

    inputs, outputs = tensor_maps(graph.inputs, "input"), tensor_maps(graph.outputs, "output")
    key = b.CreateString("serving_default")
    return _table(
        b,
        S.SIGNATURE_DEF["n"],
        [
            ("off", S.SIGNATURE_DEF["inputs"], inputs),
            ("off", S.SIGNATURE_DEF["outputs"], outputs),
            ("off", S.SIGNATURE_DEF["signature_key"], key),
            ("u32", S.SIGNATURE_DEF["subgraph_index"], 0),
        ],
    )


# ----- flatbuffers helpers ------------------------------------------------------------------
_B = flatbuffers.Builder
_PREPEND = {
    "i8": _B.PrependInt8Slot,
    "u8": _B.PrependUint8Slot,
    "i32": _B.PrependInt32Slot,
    "u32": _B.PrependUint32Slot,
    "f32": _B.PrependFloat32Slot,
    "bool": _B.PrependBoolSlot,
    "off": _B.PrependUOffsetTRelativeSlot,
}


def _table(b: flatbuffers.Builder, n_slots: int, fields: list[tuple]) -> int:
    """`fields` are (kind, slot, value) or (kind, slot, value, schema default); the default is 0
    unless given."""
    b.StartObject(n_slots)
    for kind, slot, value, *default in fields:
        _PREPEND[kind](b, slot, value, default[0] if default else 0)
    return b.EndObject()


def _ints(b: flatbuffers.Builder, values) -> int:
    # One struct.pack_into instead of a Prepend per element (the same bytes, ~2x faster).
    values = [int(v) for v in values]
    n = len(values)
    b.StartVector(4, n, 4)
    b.head = b.Head() - 4 * n
    struct.pack_into(f"<{n}i", b.Bytes, b.head, *values)
    return b.EndVector()


def _offsets(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _bytes_vector(b: flatbuffers.Builder, raw: bytes, alignment: int = 16) -> int:
    # One memcpy instead of a Prepend per byte; aligned so the runtime can map weights in place.
    b.StartVector(1, len(raw), alignment)
    b.head = b.Head() - len(raw)
    b.Bytes[b.head : b.head + len(raw)] = raw
    return b.EndVector()
