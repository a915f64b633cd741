"""The optimizees of the adaptation tasks: MLPs, small 1-D/2-D CNNs and a classifier head on
features from a frozen backbone."""

from __future__ import annotations

from typing import Sequence, Tuple

from halo.errors import ConfigError
from halo.optimizees.layers import Conv1D, Conv2D, Dense
from halo.optimizees.network import Network


def mlp(sizes: Sequence[int] = (26, 30, 30, 4), weight_decay: float = 0.0) -> Network:
    """Dense layers with ReLU between them; HALO's TDP optimizee is 26-30-30-4."""
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2:
        raise ConfigError(f"an MLP needs an input and an output size, got {sizes}")
    layers = []
    for i in range(len(sizes) - 1):
        last = i == len(sizes) - 2
        layers.append(Dense((sizes[i],), sizes[i + 1], relu=not last))
    return Network("mlp-" + "-".join(map(str, sizes)), (sizes[0],), layers, weight_decay)


def classifier_head(
    n_features: int, n_classes: int, hidden: Sequence[int] = (), weight_decay: float = 0.0
) -> Network:
    """Linear (or small MLP) head trained on features a frozen backbone produced on the board."""
    net = mlp([n_features, *hidden, n_classes], weight_decay)
    net.name = "head-" + net.name[4:]
    return net


def cnn1d(
    input_shape: Tuple[int, int],
    n_classes: int,
    channels: Sequence[int] = (8, 8),
    kernels: Sequence[int] = (3, 3),
    strides: Sequence[int] = (1, 1),
    padding: str = "same",
    weight_decay: float = 0.0,
) -> Network:
    """Conv1D+ReLU blocks over (length, channels) then a dense classifier; strided layers
    use "valid" padding ("same" is only defined here for stride 1)."""
    if not (len(channels) == len(kernels) == len(strides)):
        raise ConfigError("cnn1d: channels, kernels and strides need one entry per conv layer")
    layers = []
    shape = tuple(input_shape)
    for c, k, s in zip(channels, kernels, strides):
        layer = Conv1D(shape, k, c, s, padding if s == 1 else "valid")
        layers.append(layer)
        shape = layer.out_shape
    layers.append(Dense(shape, n_classes, relu=False))
    return Network("cnn1d", input_shape, layers, weight_decay)


def cnn2d(
    input_shape: Tuple[int, int, int],
    n_classes: int,
    channels: Sequence[int] = (8, 8),
    kernels: Sequence[int] = (3, 5),
    padding: str = "same",
    relu_logits: bool = False,
    weight_decay: float = 0.0,
) -> Network:
    """HALO's meta-training CNN shape: conv 3x3x8, conv 5x5x8 (stride 1, SAME, ReLU), dense.

    ``relu_logits`` reproduces the released code's ReLU on the logits (halo.md §10 #8).
    """
    if len(channels) != len(kernels):
        raise ConfigError("cnn2d: channels and kernels need one entry per conv layer")
    layers = []
    shape = tuple(input_shape)
    for c, k in zip(channels, kernels):
        layer = Conv2D(shape, (k, k), c, 1, padding)
        layers.append(layer)
        shape = layer.out_shape
    layers.append(Dense(shape, n_classes, relu=relu_logits))
    return Network("cnn2d", input_shape, layers, weight_decay)


MODEL_KINDS = ("mlp", "cnn1d", "cnn2d")


def parse_model(spec: str, input_shape: Sequence[int], n_classes: int) -> Network:
    """A network from a command-line spec for a task's inputs and classes.

    ``mlp:30,30`` (hidden sizes; ``mlp`` = 30,30, HALO's tabular shape), ``cnn1d:8,8`` (conv
    channels, kernel 3, over the features as a length-d sequence of one channel unless the task
    has (length, channels) inputs), ``cnn2d:8,8`` (needs (H, W, C) inputs; two layers use
    HALO's 3x3 and 5x5 kernels, other depths 3x3).
    """
    text = str(spec).strip().lower()
    kind, _, rest = text.partition(":")
    if kind not in MODEL_KINDS:
        raise ConfigError(
            f"unknown model {spec!r}; use mlp:30,30, cnn1d:8,8 or cnn2d:8,8 (kinds: "
            f"{', '.join(MODEL_KINDS)})"
        )
    try:
        sizes = [int(p) for p in rest.replace(" ", "").split(",") if p] if rest else []
    except ValueError:
        raise ConfigError(
            f"model {spec!r}: sizes after ':' must be whole numbers, e.g. {kind}:30,30"
        ) from None
    if any(s < 1 for s in sizes) or len(sizes) > 8:
        raise ConfigError(f"model {spec!r}: give 1 to 8 positive layer sizes")
    shape = tuple(int(s) for s in input_shape)
    n_in = 1
    for s in shape:
        n_in *= s
    if kind == "mlp":
        return mlp([n_in, *(sizes or [30, 30]), n_classes])
    channels = sizes or [8, 8]
    if kind == "cnn1d":
        seq = shape if len(shape) == 2 else (n_in, 1)
        return cnn1d(seq, n_classes, channels, [3] * len(channels), [1] * len(channels))
    if len(shape) != 3:
        raise ConfigError(
            f"model {spec!r} needs image inputs (height, width, channels); this task has "
            f"{n_in} features: use mlp or cnn1d"
        )
    kernels = [3, 5] if len(channels) == 2 else [3] * len(channels)
    return cnn2d(shape, n_classes, channels, kernels)
