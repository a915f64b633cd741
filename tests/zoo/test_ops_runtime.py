"""Every op the writer emits runs in the installed LiteRT runtime with the reference kernels,
in float32 and in int8, and matches the NumPy forward pass."""

import numpy as np
import pytest

from agent.runtime import load_runtime, make_interpreter
from coordinator.zoo.generate import build_model, make_spec
from coordinator.zoo.graph import evaluate
from coordinator.zoo.verify import compare, reference_inputs

REQUIRED = {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "ADD",
    "AVERAGE_POOL_2D",
    "MAX_POOL_2D",
    "MEAN",
    "PAD",
    "CONCATENATION",
    "RESHAPE",
    "RELU",
    "RELU6",
    "SOFTMAX",
    "HARD_SWISH",
    "MUL",
    "LOGISTIC",
}
ARCHS = [
    "conv:9x9x8:k=3,s=2,cout=16,act=relu6",
    "conv:8x8x8:k=3,s=2,cout=8,act=none,pad=explicit",
    "conv:8x8x8:k=1,cout=16,g=2",
    "dwconv:9x9x8:k=5,s=2,m=2,act=none",
    "dwconv:8x8x8:k=3,act=relu6",
    "mbconv:8x8x16:k=3,e=4,se=1,act=hswish",
    "mbconv:8x8x16:k=5,e=1,g=2",
    "pool:9x9x8:type=avg,k=3,s=2",
    "pool:8x8x8:type=max,k=3,s=1",
    "gap:8x8x8",
    "fc:4x4x8:cout=10",
    "concat:8x8x8:n=3",
    "act:8x8x8:fn=relu",
    "act:8x8x8:fn=relu6",
    "act:8x8x8:fn=hswish",
    "act:8x8x8:fn=logistic",
    "act:1x1x10:fn=softmax",
]


def run(data: bytes, x: np.ndarray, tensors: list[int]) -> tuple[dict, list[str]]:
    it = make_interpreter(
        load_runtime(),
        model_content=data,
        num_threads=1,
        resolver="ref",
        experimental_preserve_all_tensors=True,
    )
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return {t: it.get_tensor(t) for t in tensors}, [d["op_name"] for d in it._get_ops_details()]


def test_the_cases_cover_every_required_op():
    seen = set()
    for arch in ARCHS:
        seen |= {op.kind for op in build_model(make_spec("op", arch))[2].ops}
    assert REQUIRED <= seen, REQUIRED - seen


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("arch", ARCHS)
def test_op_matches_numpy(arch, dtype):
    data, _, graph = build_model(make_spec("op", arch, dtype=dtype))
    x = reference_inputs(graph)
    values = evaluate(
        graph, {graph.inputs[0]: x if dtype == "int8" else x.astype(np.float64)}, keep=True
    )
    want = {t: values[t] for t in [op.outputs[0] for op in graph.ops]}
    got, op_names = run(data, x, list(want))
    assert op_names == [op.kind for op in graph.ops]
    ok, facts = compare(graph, got, want)
    assert ok, facts
    if dtype == "float32":
        assert facts["max_abs_err"] <= 1e-4
    else:
        assert facts["max_steps"] <= 2


def test_a_wrong_weight_is_detected():
    """The comparison is not vacuous: a model whose file differs from its graph fails."""
    data, _, graph = build_model(make_spec("op", "conv:8x8x8:cout=8,act=none"))
    w = next(t for t in graph.tensors if t.name.endswith("/weights"))
    w.data = w.data.copy()
    w.data[0, 1, 1, 0] += 0.5
    x = reference_inputs(graph)
    want = evaluate(graph, {graph.inputs[0]: x.astype(np.float64)})
    got, _ = run(data, x, list(want))
    assert not compare(graph, got, want)[0]
