"""FBNet / HW-NAS-Bench layer-wise space: 22 searchable layers × 9 blocks, encoded as 22 block
indices joined by '-'. Blocks follow HW-NAS-Bench's model code: every block expands with a 1×1
conv (grouped, then channel-shuffled, for the g2 blocks), k×k depthwise, 1×1 project, residual
when stride 1 and channels match; `skip` is identity or a 1×1 conv + BN + ReLU."""

from __future__ import annotations

import numpy as np

from coordinator.zoo.graph import Graph, fuse_activations
from coordinator.zoo.spaces.common import ArchError, Built, Init, classifier, conv_bn, mbconv

NAME = "fbnet"
SUMMARY = "FBNet / HW-NAS-Bench layer-wise blocks"
BLOCKS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
LAYERS = (1, 4, 4, 4, 4, 4, 1)
CHANNELS = (16, 24, 32, 64, 112, 184, 352)
N_LAYERS = sum(LAYERS)
SIZE = len(BLOCKS) ** N_LAYERS
# dataset → (input size, classes, stage strides, stem stride, head channels)
DATASETS = {
    "cifar10": (32, 10, (1, 1, 2, 2, 1, 2, 1), 1, 1504),
    "cifar100": (32, 100, (1, 1, 2, 2, 1, 2, 1), 1, 1504),
    "imagenet": (224, 1000, (1, 2, 2, 2, 1, 2, 1), 2, 1984),
}
DEFAULT_DATASET = "cifar100"


def parse(text: str) -> tuple[int, ...]:
    parts = text.strip().split("-")
    if len(parts) != N_LAYERS:
        raise ArchError(
            f"fbnet arch {text!r}: expected {N_LAYERS} block indices joined by '-', "
            f"got {len(parts)}"
        )
    out = []
    for layer, p in enumerate(parts):
        if not p.isdigit() or int(p) >= len(BLOCKS):
            raise ArchError(
                f"fbnet arch {text!r}: layer {layer} has {p!r}, expected 0..8 ({', '.join(BLOCKS)})"
            )
        out.append(int(p))
    return tuple(out)


def canonical(text: str) -> str:
    return "-".join(map(str, parse(text)))


def sample(rng: np.random.Generator, n: int) -> list[str]:
    return ["-".join(map(str, rng.integers(0, len(BLOCKS), N_LAYERS))) for _ in range(n)]


def layer_plan(dataset: str) -> list[tuple[int, int, int]]:
    """(cin, cout, stride) of each searchable layer."""
    strides = DATASETS[dataset][2]
    plan, cin = [], 16
    for stage, (n, cout) in enumerate(zip(LAYERS, CHANNELS, strict=True)):
        for i in range(n):
            plan.append((cin, cout, strides[stage] if i == 0 else 1))
            cin = cout
    return plan


def block(g: Graph, init: Init, x: int, choice: int, cout: int, stride: int, name: str) -> int:
    spec = BLOCKS[choice]
    if spec == "skip":
        if stride == 1 and g.shape(x)[3] == cout:
            return x
        return conv_bn(g, init, x, cout, 1, stride, act="RELU", name=name)
    parts = spec.split("_")
    k, e = int(parts[0][1:]), int(parts[1][1:])
    groups = 2 if len(parts) == 3 else 1
    return mbconv(g, init, x, cout, k, e, stride, groups, "RELU", always_expand=True, name=name)


def build(arch: str, dataset: str, resolution: int | None, init: Init) -> Built:
    if dataset not in DATASETS:
        raise ArchError(f"fbnet supports datasets {', '.join(DATASETS)}, not {dataset!r}")
    choices = parse(arch)
    size, classes, _, stem_stride, head = DATASETS[dataset]
    size = resolution or size
    g = Graph()
    x = g.input((1, size, size, 3))
    h = conv_bn(g, init, x, 16, 3, stem_stride, act="RELU", name="stem")
    for layer, (choice, (_, cout, stride)) in enumerate(
        zip(choices, layer_plan(dataset), strict=True)
    ):
        h = block(g, init, h, choice, cout, stride, f"layer{layer}")
    h = conv_bn(g, init, h, head, 1, act="RELU", name="header")
    g.mark_output(classifier(g, init, h, classes))
    return Built(fuse_activations(g))
