"""Model statistics computed from the graph (never guessed): MACs, parameters, peak activation
memory, op histogram and kernel count after the fusions every runtime does."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass

from coordinator.zoo.graph import Graph

_WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}
# Ops that cost no kernel of their own once a runtime has planned the graph: reshapes are
# metadata, standalone activations fuse into the op that produced their input, and a PAD in
# front of a conv or pool folds into its padding.
_FREE = {"RESHAPE", "SQUEEZE"}
_ACTIVATIONS = {"RELU", "RELU6", "RELU_N1_TO_1"}
_FUSE_TARGETS = {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "ADD",
    "MUL",
    "AVERAGE_POOL_2D",
    "MAX_POOL_2D",
    "CONCATENATION",
}
_PAD_TARGETS = {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D"}


@dataclass
class Stats:
    macs: int
    params: int
    activation_peak_bytes: int
    ops: dict[str, int]
    kernels: int

    def to_dict(self) -> dict:
        return asdict(self)


def stats(graph: Graph) -> Stats:
    return Stats(
        macs(graph),
        params(graph),
        activation_peak_bytes(graph),
        dict(sorted(Counter(op.kind for op in graph.ops).items())),
        kernels(graph),
    )


def op_macs(graph: Graph, op) -> int:
    """Multiply-accumulates of one op. Pooling counts one per window element (as NAS papers
    count avg-pool FLOPs); elementwise ops count zero."""
    t = graph.tensors
    out = t[op.outputs[0]].shape
    if op.kind == "CONV_2D":
        _, kh, kw, cin_g = t[op.inputs[1]].shape
        return int(math.prod(out)) * kh * kw * cin_g
    if op.kind == "DEPTHWISE_CONV_2D":
        _, kh, kw, _ = t[op.inputs[1]].shape
        return int(math.prod(out)) * kh * kw
    if op.kind == "FULLY_CONNECTED":
        out_f, in_f = t[op.inputs[1]].shape[:2]
        return int(math.prod(out)) * in_f
    if op.kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        k = op.options.get("filter_height", 1) * op.options.get("filter_width", 1)
        return int(math.prod(out)) * k
    return 0


def macs(graph: Graph) -> int:
    return sum(op_macs(graph, op) for op in graph.ops)


def params(graph: Graph) -> int:
    """Elements of constant weights and biases (conv, depthwise, fully connected) and of constant
    operands of elementwise arithmetic (e.g. a lowered batch norm)."""
    seen: set[int] = set()
    for op in graph.ops:
        if op.kind in _WEIGHTED:
            seen.update(t for t in op.inputs[1:] if t >= 0 and graph.tensors[t].is_const)
        elif op.kind in ("ADD", "MUL", "SUB"):
            seen.update(t for t in op.inputs if t >= 0 and graph.tensors[t].is_const)
    return sum(graph.tensors[t].size for t in seen)


def activation_peak_bytes(graph: Graph) -> int:
    """Peak of live activation bytes when ops run in file order and each tensor is freed after
    its last reader (graph outputs live to the end). A lower bound for any arena planner."""
    last_use: dict[int, int] = {}
    for i, op in enumerate(graph.ops):
        for t in op.inputs:
            if t >= 0:
                last_use[t] = i
    end = len(graph.ops)
    for t in graph.outputs:
        last_use[t] = end
    # Bytes released after each op, filled in as tensors come alive: one pass, not a scan of
    # the live set per op.
    freed_after = [0] * (end + 1)
    current = 0
    for t in set(graph.inputs):
        current += graph.tensors[t].nbytes
        freed_after[max(last_use.get(t, -1), 0)] += graph.tensors[t].nbytes
    peak = current
    for i, op in enumerate(graph.ops):
        for t in op.outputs:
            tensor = graph.tensors[t]
            if not tensor.is_const:
                current += tensor.nbytes
                freed_after[max(last_use.get(t, -1), i)] += tensor.nbytes
        peak = max(peak, current)
        current -= freed_after[i]
    return int(peak)


def kernels(graph: Graph) -> int:
    producers, consumers = graph.producers(), graph.consumers()
    count = 0
    for op in graph.ops:
        if op.kind in _FREE:
            continue
        src = op.inputs[0] if op.inputs else -1
        if (
            op.kind in _ACTIVATIONS
            and src in producers
            and len(consumers.get(src, [])) == 1
            and graph.ops[producers[src]].kind in _FUSE_TARGETS
        ):
            continue
        if op.kind == "PAD":
            users = consumers.get(op.outputs[0], [])
            if users and all(graph.ops[u].kind in _PAD_TARGETS for u in users):
                continue
        count += 1
    return count
