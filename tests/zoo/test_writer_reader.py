"""The writer's bytes parse with the runtime's own schema module and with our reader, field for
field; op versions are the converter's; damaged files give TFLiteFormatError."""

import numpy as np
import pytest

from coordinator.zoo.generate import build_model, make_spec
from coordinator.zoo.reader import TFLiteFormatError, read_model

schema = pytest.importorskip(
    "ai_edge_litert.schema_py_generated",
    reason="the runtime's schema module ships with ai-edge-litert",
)


def _model(arch="mbconv:8x8x16:k=5,e=3,se=1,act=hswish", dtype="float32", space="op"):
    return build_model(make_spec(space, arch, dtype=dtype))


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_runtime_schema_reads_what_we_wrote(dtype):
    data, row, graph = _model(dtype=dtype)
    m = schema.ModelT.InitFromPackedBuf(data, 0)
    assert data[4:8] == b"TFL3" and m.version == 3
    assert m.buffers[0].data is None  # the empty sentinel
    assert m.signatureDefs[0].signatureKey == b"serving_default"
    sg = m.subgraphs[0]
    assert len(sg.tensors) == len(graph.tensors) and len(sg.operators) == len(graph.ops)
    for t_fb, t in zip(sg.tensors, graph.tensors, strict=True):
        assert t_fb.name.decode() == t.name
        assert tuple(t_fb.shape) == t.shape
        if t.is_const:
            raw = np.asarray(m.buffers[t_fb.buffer].data, np.uint8).tobytes()
            assert raw == np.ascontiguousarray(t.data).tobytes()
        if t.quant is not None:
            np.testing.assert_array_equal(t_fb.quantization.scale, t.quant.scale)
            assert t_fb.quantization.quantizedDimension == t.quant.axis
    for code in m.operatorCodes:
        assert code.deprecatedBuiltinCode == min(code.builtinCode, 127)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    kinds = [names[m.operatorCodes[op.opcodeIndex].builtinCode] for op in sg.operators]
    assert kinds == [op.kind for op in graph.ops]


def test_our_reader_round_trips_the_graph():
    data, _, graph = _model()
    info = read_model(data)
    g = info.graph
    assert [op.kind for op in g.ops] == [op.kind for op in graph.ops]
    for a, b in zip(g.ops, graph.ops, strict=True):
        assert a.inputs == b.inputs and a.outputs == b.outputs
        for key, value in b.options.items():
            assert a.options[key] == value, (a.kind, key)
    for a, b in zip(g.tensors, graph.tensors, strict=True):
        assert (a.name, a.shape, a.dtype) == (b.name, b.shape, b.dtype)
        if b.is_const:
            np.testing.assert_array_equal(a.data, b.data)


# TF converter versions (tensorflow/lite/tools/versioning/op_version.cc), reference/tflite.md §6.3
CONVERTER_INT8 = {
    "CONV_2D": 3,
    "DEPTHWISE_CONV_2D": 3,
    "ADD": 2,
    "MEAN": 2,
    "FULLY_CONNECTED": 4,
    "SOFTMAX": 2,
    "AVERAGE_POOL_2D": 2,
    "MAX_POOL_2D": 2,
    "LOGISTIC": 2,
    "RESHAPE": 1,
    "HARD_SWISH": 1,
    "CONCATENATION": 2,
    "PAD": 2,
    "TRANSPOSE": 2,
}


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_operator_versions_are_the_converters(dtype):
    archs = [
        "mbconv:8x8x16:k=3,e=3,se=1,act=hswish",
        "fc:4x4x8",
        "pool:8x8x8:type=max",
        "concat:8x8x8",
        "conv:8x8x8:pad=explicit",
        "act:1x1x10:fn=softmax",
    ]
    seen = {}
    for arch in archs:
        data, _, graph = _model(arch, dtype)
        for kind, version in read_model(data).opcodes:
            seen[kind] = version
    grouped = read_model(_model("conv:8x8x8:g=2", dtype)[0]).opcodes
    assert grouped == [("CONV_2D", 6)]  # grouped convolution is version 6 in any dtype
    shuffled = dict(read_model(_model("mbconv:8x8x16:g=2,e=1", dtype)[0]).opcodes)
    seen["TRANSPOSE"] = shuffled["TRANSPOSE"]
    for kind, version in seen.items():
        if kind == "MUL":
            assert version in ((2, 3) if dtype == "int8" else (1,))
        else:
            assert version == (CONVERTER_INT8[kind] if dtype == "int8" else 1), kind


def test_damaged_files_raise_format_error():
    data, _, _ = _model()
    for bad in (data[:6], data[: len(data) // 3], b"XXXXXXXX" + data[8:], b""):
        with pytest.raises(TFLiteFormatError):
            read_model(bad)
