"""The slice of the TFLite flatbuffer schema (`schema.fbs`) that the zoo writes and reads.

Enum values and field slots are those of the public schema, checked against the
`schema_py_generated` module that ships with ai-edge-litert. Writer and reader share these
tables, so a slot can only be wrong in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3

# TensorType
TENSOR_TYPES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    5: "string",
    6: "bool",
    7: "int16",
    9: "int8",
    10: "float64",
}
TENSOR_TYPE_CODES = {name: code for code, name in TENSOR_TYPES.items()}
TYPE_BYTES = {
    "float32": 4,
    "float16": 2,
    "int32": 4,
    "uint8": 1,
    "int64": 8,
    "bool": 1,
    "int16": 2,
    "int8": 1,
    "float64": 8,
}

PADDING = {0: "SAME", 1: "VALID"}
PADDING_CODES = {"SAME": 0, "VALID": 1}
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
ACTIVATION_CODES = {name: code for code, name in ACTIVATIONS.items()}

# BuiltinOperator codes of the ops the writer emits; the reader names any other code by number.
BUILTIN_OPS = {
    "ADD": 0,
    "AVERAGE_POOL_2D": 1,
    "CONCATENATION": 2,
    "CONV_2D": 3,
    "DEPTHWISE_CONV_2D": 4,
    "DEQUANTIZE": 6,
    "FULLY_CONNECTED": 9,
    "LOGISTIC": 14,
    "MAX_POOL_2D": 17,
    "MUL": 18,
    "RELU": 19,
    "RELU6": 21,
    "RESHAPE": 22,
    "SOFTMAX": 25,
    "PAD": 34,
    "TRANSPOSE": 39,
    "MEAN": 40,
    "SQUEEZE": 43,
    "QUANTIZE": 114,
    "HARD_SWISH": 117,
}
BUILTIN_NAMES = {code: name for name, code in BUILTIN_OPS.items()}


@dataclass(frozen=True)
class Field:
    name: str
    slot: int
    kind: str  # "i8" | "i32" | "f32" | "bool" | "ivec" | "padding" | "act"
    default: object = 0  # the schema default: what a reader assumes when a file omits it


@dataclass(frozen=True)
class OptionsTable:
    name: str
    union_tag: int
    n_slots: int
    fields: tuple[Field, ...]


def _act(slot: int) -> Field:
    return Field("fused_activation_function", slot, "act", "NONE")


OPTIONS = {
    "Conv2DOptions": OptionsTable(
        "Conv2DOptions",
        1,
        7,
        (
            Field("padding", 0, "padding", "SAME"),
            Field("stride_w", 1, "i32", 0),
            Field("stride_h", 2, "i32", 0),
            _act(3),
            Field("dilation_w_factor", 4, "i32", 1),
            Field("dilation_h_factor", 5, "i32", 1),
        ),
    ),
    "DepthwiseConv2DOptions": OptionsTable(
        "DepthwiseConv2DOptions",
        2,
        7,
        (
            Field("padding", 0, "padding", "SAME"),
            Field("stride_w", 1, "i32", 0),
            Field("stride_h", 2, "i32", 0),
            Field("depth_multiplier", 3, "i32", 0),
            _act(4),
            Field("dilation_w_factor", 5, "i32", 1),
            Field("dilation_h_factor", 6, "i32", 1),
        ),
    ),
    "Pool2DOptions": OptionsTable(
        "Pool2DOptions",
        5,
        6,
        (
            Field("padding", 0, "padding", "SAME"),
            Field("stride_w", 1, "i32", 0),
            Field("stride_h", 2, "i32", 0),
            Field("filter_width", 3, "i32", 0),
            Field("filter_height", 4, "i32", 0),
            _act(5),
        ),
    ),
    "FullyConnectedOptions": OptionsTable(
        "FullyConnectedOptions",
        8,
        6,
        (_act(0), Field("weights_format", 1, "i8", 0), Field("keep_num_dims", 2, "bool", False)),
    ),
    "SoftmaxOptions": OptionsTable("SoftmaxOptions", 9, 1, (Field("beta", 0, "f32", 0.0),)),
    "ConcatenationOptions": OptionsTable(
        "ConcatenationOptions", 10, 2, (Field("axis", 0, "i32", 0), _act(1))
    ),
    "AddOptions": OptionsTable("AddOptions", 11, 2, (_act(0),)),
    "ReshapeOptions": OptionsTable("ReshapeOptions", 17, 1, (Field("new_shape", 0, "ivec", ()),)),
    "MulOptions": OptionsTable("MulOptions", 21, 1, (_act(0),)),
    "PadOptions": OptionsTable("PadOptions", 22, 0, ()),
    "ReducerOptions": OptionsTable(
        "ReducerOptions", 27, 1, (Field("keep_dims", 0, "bool", False),)
    ),
    "TransposeOptions": OptionsTable("TransposeOptions", 26, 0, ()),
    "HardSwishOptions": OptionsTable("HardSwishOptions", 91, 0, ()),
}
OPTIONS_BY_TAG = {table.union_tag: table for table in OPTIONS.values()}

# Which options table each op carries (ops without options write none, as the converter does).
OP_OPTIONS = {
    "ADD": "AddOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "CONCATENATION": "ConcatenationOptions",
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "MEAN": "ReducerOptions",
    "MUL": "MulOptions",
    "PAD": "PadOptions",
    "RESHAPE": "ReshapeOptions",
    "SOFTMAX": "SoftmaxOptions",
    "HARD_SWISH": "HardSwishOptions",
    "TRANSPOSE": "TransposeOptions",
}

# Field slots of the container tables (schema.fbs field order).
MODEL = {
    "n": 10,
    "version": 0,
    "operator_codes": 1,
    "subgraphs": 2,
    "description": 3,
    "buffers": 4,
    "signature_defs": 7,
}
SUBGRAPH = {"n": 6, "tensors": 0, "inputs": 1, "outputs": 2, "operators": 3, "name": 4}
TENSOR = {"n": 11, "shape": 0, "type": 1, "buffer": 2, "name": 3, "quantization": 4}
QUANT = {"n": 7, "min": 0, "max": 1, "scale": 2, "zero_point": 3, "quantized_dimension": 6}
OPERATOR_CODE = {
    "n": 4,
    "deprecated_builtin_code": 0,
    "custom_code": 1,
    "version": 2,
    "builtin_code": 3,
}
OPERATOR = {
    "n": 14,
    "opcode_index": 0,
    "inputs": 1,
    "outputs": 2,
    "builtin_options_type": 3,
    "builtin_options": 4,
}
BUFFER = {"n": 3, "data": 0, "offset": 1, "size": 2}
SIGNATURE_DEF = {"n": 5, "inputs": 0, "outputs": 1, "signature_key": 2, "subgraph_index": 4}
TENSOR_MAP = {"n": 2, "name": 0, "tensor_index": 1}


def op_version(kind: str, input_dtype: str, options: dict, scales: tuple = ()) -> int:
    """The version the TF converter assigns (tensorflow/lite/tools/versioning/op_version.cc).

    `scales` is (input1_scale, input2_scale, output_scale) for int8 MUL, whose version depends on
    the rescale factor.
    """
    int8 = input_dtype == "int8"
    if kind in ("CONV_2D",):
        if options.get("groups", 1) > 1:
            return 6
        return 3 if int8 else 1
    if kind == "DEPTHWISE_CONV_2D":
        if int8:
            return 3
        dilated = (
            options.get("dilation_w_factor", 1) != 1 or options.get("dilation_h_factor", 1) != 1
        )
        return 2 if dilated else 1
    if kind == "FULLY_CONNECTED":
        if options.get("keep_num_dims"):
            return 5
        return 4 if int8 else 1
    if kind == "MUL" and int8:
        s1, s2, so = scales
        return 3 if s1 * s2 / so >= 1.0 else 2
    if kind in ("RESHAPE", "HARD_SWISH", "SQUEEZE"):
        return 1
    return 2 if int8 else 1
