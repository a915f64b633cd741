"""Serialise a `Graph` to .tflite bytes with a flatbuffer builder (`flatbuf`) — no TensorFlow.

The output follows what the TF converter writes: file identifier TFL3, schema version 3, empty
buffer 0, one buffer per constant (16-byte aligned), both builtin-code fields set, converter op
versions, and a `serving_default` SignatureDef.
"""

from __future__ import annotations

import numpy as np

from coordinator.zoo import tflite_schema as S
from coordinator.zoo.flatbuf import Builder, Table
from coordinator.zoo.graph import Graph, Op

WRITER_VERSION = "halofarm-zoo/2"

_NP_DTYPES = {
    name: np.dtype(code)
    for name, code in {
        "float32": "<f4",
        "int32": "<i4",
        "int8": "i1",
        "int64": "<i8",
        "uint8": "u1",
        "int16": "<i2",
    }.items()
}

# Table types, fields in the order the writer has always prepended them (the order decides the
# bytes). Fields equal to their schema default are left out, as the converter's C++ builder does.
_BUFFER = Table(S.BUFFER["n"], ("off", S.BUFFER["data"]))
_TENSOR = Table(
    S.TENSOR["n"],
    ("off", S.TENSOR["shape"]),
    ("i8", S.TENSOR["type"]),
    ("u32", S.TENSOR["buffer"]),
    ("off", S.TENSOR["name"]),
    ("off", S.TENSOR["quantization"]),
)
_QUANT = Table(
    S.QUANT["n"],
    ("off", S.QUANT["scale"]),
    ("off", S.QUANT["zero_point"]),
    ("i32", S.QUANT["quantized_dimension"]),
)
_OPERATOR = Table(
    S.OPERATOR["n"],
    ("u32", S.OPERATOR["opcode_index"]),
    ("off", S.OPERATOR["inputs"]),
    ("off", S.OPERATOR["outputs"]),
    ("u8", S.OPERATOR["builtin_options_type"]),
    ("off", S.OPERATOR["builtin_options"]),
)
_OPCODE = Table(
    S.OPERATOR_CODE["n"],
    ("i8", S.OPERATOR_CODE["deprecated_builtin_code"]),
    ("i32", S.OPERATOR_CODE["version"], 1),
    ("i32", S.OPERATOR_CODE["builtin_code"]),
)
_SUBGRAPH = Table(
    S.SUBGRAPH["n"],
    ("off", S.SUBGRAPH["tensors"]),
    ("off", S.SUBGRAPH["inputs"]),
    ("off", S.SUBGRAPH["outputs"]),
    ("off", S.SUBGRAPH["operators"]),
    ("off", S.SUBGRAPH["name"]),
)
_MODEL = Table(
    S.MODEL["n"],
    ("u32", S.MODEL["version"]),
    ("off", S.MODEL["operator_codes"]),
    ("off", S.MODEL["subgraphs"]),
    ("off", S.MODEL["description"]),
    ("off", S.MODEL["buffers"]),
    ("off", S.MODEL["signature_defs"]),
)
_TENSOR_MAP = Table(
    S.TENSOR_MAP["n"], ("off", S.TENSOR_MAP["name"]), ("u32", S.TENSOR_MAP["tensor_index"])
)
_SIGNATURE_DEF = Table(
    S.SIGNATURE_DEF["n"],
    ("off", S.SIGNATURE_DEF["inputs"]),
    ("off", S.SIGNATURE_DEF["outputs"]),
    ("off", S.SIGNATURE_DEF["signature_key"]),
    ("u32", S.SIGNATURE_DEF["subgraph_index"]),
)


def _options_table(table: S.OptionsTable) -> Table:
    def field(f: S.Field) -> tuple:
        if f.kind == "padding":
            return ("i8", f.slot, S.PADDING_CODES[f.default])
        if f.kind == "act":
            return ("i8", f.slot, S.ACTIVATION_CODES[f.default])
        if f.kind == "ivec":
            return ("off", f.slot)
        return (f.kind, f.slot, f.default)

    return Table(table.n_slots, *map(field, table.fields))


_OPTIONS = {name: _options_table(table) for name, table in S.OPTIONS.items()}


def write_model(graph: Graph, description: str = WRITER_VERSION) -> bytes:
    b = Builder()

    # Buffers: 0 is the empty sentinel; constants get theirs in tensor order.
    buffer_of: dict[int, int] = {}
    buffers = [b.table(_BUFFER, 0)]
    for i, t in enumerate(graph.tensors):
        if t.is_const:
            # Aligned so the runtime can map weights in place.
            data = b.blob(_little_endian(t.data, _NP_DTYPES[t.dtype]), alignment=16)
            buffer_of[i] = len(buffers)
            buffers.append(b.table(_BUFFER, data))

    # Identical shape vectors and option tables are written once and referenced from every
    # tensor/operator that has them (flatbuffers allows shared objects; the runtime reads
    # them as usual) -- smaller files, and fewer objects to build.
    shared: dict[tuple, int] = {}
    tensors = [_tensor(b, t, buffer_of.get(i, 0), shared) for i, t in enumerate(graph.tensors)]

    opcodes: dict[tuple[str, int], int] = {}
    operators = []
    for op in graph.ops:
        key = (op.kind, _version(graph, op))
        if key not in opcodes:
            opcodes[key] = len(opcodes)
        operators.append(_operator(b, op, opcodes[key], shared))
    opcode_tables = [_opcode(b, kind, version) for kind, version in opcodes]

    name = b.string(graph.name)
    subgraph = b.table(
        _SUBGRAPH,
        b.offsets(tensors),
        b.ints(graph.inputs),
        b.ints(graph.outputs),
        b.offsets(operators),
        name,
    )
    signature = _signature(b, graph)
    desc = b.string(description)
    model = b.table(
        _MODEL,
        S.SCHEMA_VERSION,
        b.offsets(opcode_tables),
        b.offsets([subgraph]),
        desc,
        b.offsets(buffers),
        b.offsets([signature]),
    )
    return b.finish(model, S.FILE_IDENTIFIER)


def _little_endian(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if data.dtype == dtype and data.flags.c_contiguous:
        return data  # the usual case: written straight from the graph's array, no copy
    return np.ascontiguousarray(data, dtype=dtype)


def _version(graph: Graph, op: Op) -> int:
    inp = graph.tensors[op.inputs[0]]
    opts = op.options
    if op.kind == "CONV_2D":
        opts = {**opts, "groups": inp.shape[3] // graph.tensors[op.inputs[1]].shape[3]}
    scales: tuple = ()
    if op.kind == "MUL" and inp.dtype == "int8":
        scales = tuple(float(graph.tensors[t].quant.scale[0]) for t in (*op.inputs, *op.outputs))
    return S.op_version(op.kind, inp.dtype, opts, scales)


def _tensor(b: Builder, t, buffer: int, shared: dict[tuple, int]) -> int:
    quant = _quant(b, t.quant) if t.quant is not None else 0
    name = b.string(t.name)
    shape = shared.get(t.shape)
    if shape is None:
        shape = shared[t.shape] = b.ints(t.shape)
    return b.table(_TENSOR, shape, S.TENSOR_TYPE_CODES[t.dtype], buffer, name, quant)


def _quant(b: Builder, q) -> int:
    scale = _numpy(b, np.asarray(q.scale, "<f4"))
    zp = _numpy(b, np.asarray(q.zero_point, "<i8"))
    return b.table(_QUANT, scale, zp, q.axis)


def _operator(b: Builder, op: Op, opcode_index: int, shared: dict[tuple, int]) -> int:
    inputs, outputs = b.ints(op.inputs), b.ints(op.outputs)
    table_name = S.OP_OPTIONS.get(op.kind)
    if table_name is None:
        return b.table(_OPERATOR, opcode_index, inputs, outputs, 0, 0)
    table = S.OPTIONS[table_name]
    # Option names are unique, so sorting never compares values.
    key = (table_name, *sorted(op.options.items()))
    try:
        options = shared.get(key)
    except TypeError:  # a list value, from a graph built by hand or read from a file
        items = ((k, tuple(v) if isinstance(v, list) else v) for k, v in op.options.items())
        key = (table_name, *sorted(items))
        options = shared.get(key)
    if options is None:
        options = shared[key] = _options(b, table, op.options)
    return b.table(_OPERATOR, opcode_index, inputs, outputs, table.union_tag, options)


def _options(b: Builder, table: S.OptionsTable, options: dict) -> int:
    values = []
    for f in table.fields:
        value = options.get(f.name, f.default)
        if f.kind == "padding":
            value = S.PADDING_CODES[value]
        elif f.kind == "act":
            value = S.ACTIVATION_CODES[value]
        elif f.kind == "ivec":
            value = b.ints(value)
        values.append(value)
    return b.table(_OPTIONS[table.name], *values)


def _opcode(b: Builder, kind: str, version: int) -> int:
    code = S.BUILTIN_OPS[kind]
    return b.table(_OPCODE, min(code, 127), version, code)


def _signature(b: Builder, graph: Graph) -> int:
    def tensor_maps(ids: list[int], default: str) -> int:
        maps = []
        for n, t in enumerate(ids):
            name = b.string(default if len(ids) == 1 else f"{default}_{n}")
            maps.append(b.table(_TENSOR_MAP, name, t))
        return b.offsets(maps)

    inputs, outputs = tensor_maps(graph.inputs, "input"), tensor_maps(graph.outputs, "output")
    key = b.string("serving_default")
    return b.table(_SIGNATURE_DEF, inputs, outputs, key, 0)


def _numpy(b: Builder, array: np.ndarray) -> int:
    """`CreateNumpyVector`: aligned to the element type, the element count as length."""
    flat = np.ascontiguousarray(array).reshape(-1)
    return b.blob(flat, flat.dtype.alignment, flat.size)
