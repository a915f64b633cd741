"""MobileNetV2-style elastic space (as in Once-for-All / OneProxy): input resolution, per-stage
depth, and per-block kernel (3/5/7) and expansion (3/4/6).

Encoding: `r<resolution>:` then the six stages separated by `|`, each a comma list of its active
blocks `k<k>e<e>`, e.g. `r224:k3e6,k5e4|k7e3,k3e3|...|k3e6`. Stages 1–5 have 2–4 blocks; the last
stage has exactly one. Skeleton: 3×3/2 stem (32) → MBConv e1 k3 (16) → stages of widths
24/32/64/96/160/320 with strides 2/2/2/1/2/1 → 1×1 conv 1280 → pool → FC. ReLU6 throughout."""

from __future__ import annotations

import math

import numpy as np

from coordinator.zoo.graph import Graph, fuse_activations
from coordinator.zoo.spaces.common import ArchError, Built, Init, classifier, conv_bn, mbconv

NAME = "mbv2"
SUMMARY = "MobileNetV2 elastic depth/kernel/expand/resolution"
RESOLUTIONS = (128, 160, 192, 224)
KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
WIDTHS = (24, 32, 64, 96, 160, 320)
STRIDES = (2, 2, 2, 1, 2, 1)
DEPTHS = ((2, 3, 4),) * 5 + ((1,),)
DATASETS = {"imagenet": 1000, "cifar10": 10, "cifar100": 100}
DEFAULT_DATASET = "imagenet"
_CHOICES = len(KERNELS) * len(EXPANDS)
SIZE = len(RESOLUTIONS) * math.prod(sum(_CHOICES**d for d in ds) for ds in DEPTHS)


def parse(text: str) -> tuple[int, list[list[tuple[int, int]]]]:
    head, sep, body = text.strip().partition(":")
    if not sep or not head.startswith("r") or not head[1:].isdigit():
        raise ArchError(f"mbv2 arch {text!r}: must start with r<resolution>: (e.g. r224:)")
    res = int(head[1:])
    if res not in RESOLUTIONS:
        raise ArchError(f"mbv2 arch {text!r}: resolution {res} not in {RESOLUTIONS}")
    stages = body.split("|")
    if len(stages) != len(WIDTHS):
        raise ArchError(
            f"mbv2 arch {text!r}: expected {len(WIDTHS)} stages separated by '|', got {len(stages)}"
        )
    out = []
    for s, (stage, depths) in enumerate(zip(stages, DEPTHS, strict=True)):
        blocks = stage.split(",") if stage else []
        if len(blocks) not in depths:
            raise ArchError(
                f"mbv2 arch {text!r}: stage {s} has {len(blocks)} blocks, allowed "
                f"{'/'.join(map(str, depths))}"
            )
        parsed = []
        for b in blocks:
            k, _, e = b.partition("e")
            if (
                not (k.startswith("k") and k[1:].isdigit() and e.isdigit())
                or int(k[1:]) not in KERNELS
                or int(e) not in EXPANDS
            ):
                raise ArchError(
                    f"mbv2 arch {text!r}: stage {s} block {b!r} must be k<3|5|7>e<3|4|6>"
                )
            parsed.append((int(k[1:]), int(e)))
        out.append(parsed)
    return res, out


def format_arch(res: int, stages: list[list[tuple[int, int]]]) -> str:
    return f"r{res}:" + "|".join(",".join(f"k{k}e{e}" for k, e in st) for st in stages)


def canonical(text: str) -> str:
    return format_arch(*parse(text))


def sample(rng: np.random.Generator, n: int) -> list[str]:
    out = []
    for _ in range(n):
        res = int(rng.choice(RESOLUTIONS))
        stages = [
            [
                (int(rng.choice(KERNELS)), int(rng.choice(EXPANDS)))
                for _ in range(int(rng.choice(depths)))
            ]
            for depths in DEPTHS
        ]
        out.append(format_arch(res, stages))
    return out


def build(arch: str, dataset: str, resolution: int | None, init: Init) -> Built:
    if dataset not in DATASETS:
        raise ArchError(f"mbv2 supports datasets {', '.join(DATASETS)}, not {dataset!r}")
    res, stages = parse(arch)
    size = resolution or res
    g = Graph()
    x = g.input((1, size, size, 3))
    h = conv_bn(g, init, x, 32, 3, 2, act="RELU6", name="stem")
    h = mbconv(g, init, h, 16, 3, 1, 1, act="RELU6", name="first")
    for s, (blocks, width, stride) in enumerate(zip(stages, WIDTHS, STRIDES, strict=True)):
        for i, (k, e) in enumerate(blocks):
            h = mbconv(
                g,
                init,
                h,
                width,
                k,
                e,
                stride if i == 0 else 1,
                act="RELU6",
                name=f"stage{s}/block{i}",
            )
    h = conv_bn(g, init, h, 1280, 1, act="RELU6", name="head_conv")
    g.mark_output(classifier(g, init, h, DATASETS[dataset]))
    return Built(fuse_activations(g))
