"""Pure-NumPy reference kernels with exact TensorFlow Lite float semantics (NHWC layout).

These are the model writer's own forward pass: they are used to calibrate int8 activation
ranges before a model is quantized, and to check the LiteRT runtime's outputs (max abs error
<= 1e-4 for float32 models). Every kernel accepts any floating input, computes in float64 and
returns float64; padding, rounding and averaging rules follow TFLite rather than PyTorch (e.g.
'SAME' puts the odd padding cell after, average pooling ignores padded cells). A small int8
section simulates full-integer inference ("fake quant") with TFLite's round-half-away-from-zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "activation",
    "add",
    "avg_pool2d",
    "concatenation",
    "conv2d",
    "depthwise_conv2d",
    "dequantize",
    "fully_connected",
    "hard_swish",
    "logistic",
    "max_pool2d",
    "mean",
    "mul",
    "pad",
    "quantize",
    "quantized_activation_range",
    "relu",
    "relu6",
    "reshape",
    "same_padding",
    "softmax",
    "valid_out",
]

ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
PADDINGS = ("SAME", "VALID")

Geometry = tuple[int, int, int]  # (out_size, pad_before, pad_after) along one spatial axis


# --------------------------------------------------------------------------- argument checks


def _f64(x: object) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair = (value, value)
    else:
        pair = tuple(value)  # type: ignore[arg-type]
        if len(pair) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return _positive_int(pair[0], f"{name}[0]"), _positive_int(pair[1], f"{name}[1]")


def _padding(padding: str) -> str:
    mode = str(padding).upper()
    if mode not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return mode


def _rank(x: np.ndarray, rank: int, name: str) -> None:
    if x.ndim != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {x.shape}")


def _bias(b: object, channels: int) -> np.ndarray | None:
    if b is None:
        return None
    bias = _f64(b)
    if bias.shape != (channels,):
        raise ValueError(f"bias must have shape ({channels},), got {bias.shape}")
    return bias


def _axis(axis: int, ndim: int, name: str = "axis") -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name} {axis} out of range for rank {ndim}")
    return axis % ndim


# --------------------------------------------------------------------------- padding geometry


def _effective_kernel(kernel: int, dilation: int) -> int:
    return (kernel - 1) * dilation + 1


def same_padding(in_size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int, int]:
    """TF 'SAME': returns (out_size, pad_before, pad_after).

    out = ceil(in / stride); total = max((out - 1) * stride + eff_k - in, 0); before = total // 2,
    so an odd total puts the extra cell after (TF convention, unlike PyTorch's symmetric pads).
    """
    in_size = _positive_int(in_size, "in_size")
    eff_k = _effective_kernel(_positive_int(kernel, "kernel"), _positive_int(dilation, "dilation"))
    stride = _positive_int(stride, "stride")
    out = -(-in_size // stride)
    total = max((out - 1) * stride + eff_k - in_size, 0)
    before = total // 2
    return out, before, total - before


def valid_out(in_size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """TF 'VALID' output size: floor((in - eff_k) / stride) + 1; the window must fit."""
    in_size = _positive_int(in_size, "in_size")
    eff_k = _effective_kernel(_positive_int(kernel, "kernel"), _positive_int(dilation, "dilation"))
    stride = _positive_int(stride, "stride")
    if eff_k > in_size:
        raise ValueError(
            f"VALID padding needs the effective kernel ({eff_k}) to fit the input ({in_size})"
        )
    return (in_size - eff_k) // stride + 1


def _geometry(in_size: int, kernel: int, stride: int, dilation: int, padding: str) -> Geometry:
    if padding == "SAME":
        return same_padding(in_size, kernel, stride, dilation)
    return valid_out(in_size, kernel, stride, dilation), 0, 0


def _padded_patches(
    x: np.ndarray,
    ksize: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: str,
    pad_value: float,
) -> np.ndarray:
    """Strided view [N, OH, OW, kh, kw, C] of the (padded) input; no per-pixel Python loops."""
    (kh, kw), (sh, sw), (dh, dw) = ksize, stride, dilation
    oh, top, bottom = _geometry(x.shape[1], kh, sh, dh, padding)
    ow, left, right = _geometry(x.shape[2], kw, sw, dw, padding)
    if top or bottom or left or right:
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=pad_value)
    span = (_effective_kernel(kh, dh), _effective_kernel(kw, dw))
    windows = sliding_window_view(x, span, axis=(1, 2))  # [N, H', W', C, span_h, span_w]
    windows = windows[:, ::sh, ::sw, :, ::dh, ::dw][:, :oh, :ow]
    # Channels last so that im2col copies contiguous channel runs and matches the OHWI filter.
    return windows.transpose(0, 1, 2, 4, 5, 3)


# --------------------------------------------------------------------------- activations


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(_f64(x), 0.0)


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(_f64(x), 0.0, 6.0)


def logistic(x: np.ndarray) -> np.ndarray:
    # tanh form never overflows, unlike 1 / (1 + exp(-x)) for very negative x.
    return 0.5 * (1.0 + np.tanh(0.5 * _f64(x)))


def hard_swish(x: np.ndarray) -> np.ndarray:
    x = _f64(x)
    return x * relu6(x + 3.0) / 6.0


def softmax(x: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """Softmax over the last axis of beta * x, shifted by the max for numerical stability."""
    z = float(beta) * _f64(x)
    if z.ndim == 0:
        raise ValueError("softmax needs at least one axis")
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def activation(x: np.ndarray, act: str) -> np.ndarray:
    """Apply a TFLite fused activation function."""
    mode = str(act).upper()
    x = _f64(x)
    if mode == "NONE":
        return x
    if mode == "RELU":
        return relu(x)
    if mode == "RELU6":
        return relu6(x)
    if mode == "RELU_N1_TO_1":
        return np.clip(x, -1.0, 1.0)
    raise ValueError(f"fused activation must be one of {ACTIVATIONS}, got {act!r}")


def _check_act(act: str) -> str:
    mode = str(act).upper()
    if mode not in ACTIVATIONS:
        raise ValueError(f"fused activation must be one of {ACTIVATIONS}, got {act!r}")
    return mode


# --------------------------------------------------------------------------- convolutions


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: int | Sequence[int] = (1, 1),
    padding: str = "SAME",
    dilation: int | Sequence[int] = (1, 1),
    groups: int = 1,
    act: str = "NONE",
) -> np.ndarray:
    """CONV_2D: x [N, H, W, Cin], w [Cout, kh, kw, Cin // groups] (OHWI), b [Cout] or None.

    With groups > 1, output channel o belongs to group o // (Cout // groups) and only sees that
    group's slice of input channels.
    """
    x, w = _f64(x), _f64(w)
    _rank(x, 4, "conv2d input")
    _rank(w, 4, "conv2d filter")
    groups = _positive_int(groups, "groups")
    cout, kh, kw, cin_g = w.shape
    cin = x.shape[3]
    if cin % groups or cout % groups:
        raise ValueError(
            f"groups={groups} must divide input channels ({cin}) and output channels ({cout})"
        )
    if cin_g * groups != cin:
        raise ValueError(
            f"filter expects {cin_g} input channels per group x {groups} groups, input has {cin}"
        )
    bias = _bias(b, cout)
    mode = _check_act(act)
    patches = _padded_patches(
        x, (kh, kw), _pair(stride, "stride"), _pair(dilation, "dilation"), _padding(padding), 0.0
    )
    n, oh, ow = patches.shape[:3]
    rows, taps, cout_g = n * oh * ow, kh * kw, cout // groups
    # im2col as [G, rows, taps*Cin_g] and filters as [G, taps*Cin_g, Cout_g]: one batched matmul.
    cols = patches.reshape(rows, taps, groups, cin_g).transpose(2, 0, 1, 3)
    cols = cols.reshape(groups, rows, taps * cin_g)
    filters = w.reshape(groups, cout_g, taps * cin_g).transpose(0, 2, 1)
    out = np.matmul(cols, filters).transpose(1, 0, 2).reshape(n, oh, ow, cout)
    if bias is not None:
        out += bias
    return activation(out, mode)


def depthwise_conv2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: int | Sequence[int] = (1, 1),
    padding: str = "SAME",
    dilation: int | Sequence[int] = (1, 1),
    multiplier: int = 1,
    act: str = "NONE",
) -> np.ndarray:
    """DEPTHWISE_CONV_2D: w [1, kh, kw, Cin * multiplier]; out channel c * multiplier + m reads
    input channel c (TFLite order)."""
    x, w = _f64(x), _f64(w)
    _rank(x, 4, "depthwise_conv2d input")
    _rank(w, 4, "depthwise_conv2d filter")
    multiplier = _positive_int(multiplier, "multiplier")
    one, kh, kw, cout = w.shape
    cin = x.shape[3]
    if one != 1:
        raise ValueError(f"depthwise filter must have shape [1, kh, kw, C], got {w.shape}")
    if cout != cin * multiplier:
        raise ValueError(
            f"depthwise filter has {cout} channels, expected {cin} inputs x multiplier {multiplier}"
        )
    bias = _bias(b, cout)
    mode = _check_act(act)
    patches = _padded_patches(
        x, (kh, kw), _pair(stride, "stride"), _pair(dilation, "dilation"), _padding(padding), 0.0
    )
    taps = w.reshape(kh, kw, cin, multiplier)
    n, oh, ow = patches.shape[:3]
    # Splitting the out channel as (c, m) and merging back yields TFLite's c * multiplier + m.
    out = np.einsum("nhwijc,ijcm->nhwcm", patches, taps).reshape(n, oh, ow, cout)
    if bias is not None:
        out += bias
    return activation(out, mode)


def fully_connected(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    act: str = "NONE",
    keep_num_dims: bool = False,
) -> np.ndarray:
    """FULLY_CONNECTED: w [Out, In]. The input is flattened to [-1, In] like TFLite; with
    keep_num_dims the leading dims are kept (the last one must then equal In)."""
    x, w = _f64(x), _f64(w)
    _rank(w, 2, "fully_connected weights")
    units, depth = w.shape
    if x.size % depth:
        raise ValueError(f"input of shape {x.shape} cannot be flattened to [-1, {depth}]")
    if keep_num_dims and (x.ndim == 0 or x.shape[-1] != depth):
        raise ValueError(f"keep_num_dims needs the input's last dim to be {depth}, got {x.shape}")
    bias = _bias(b, units)
    mode = _check_act(act)
    out = x.reshape(-1, depth) @ w.T
    if bias is not None:
        out += bias
    if keep_num_dims:
        out = out.reshape(*x.shape[:-1], units)
    return activation(out, mode)


# --------------------------------------------------------------------------- pooling


def _pool_patches(
    x: np.ndarray,
    ksize: int | Sequence[int],
    stride: int | Sequence[int],
    padding: str,
    fill: float,
) -> np.ndarray:
    x = _f64(x)
    _rank(x, 4, "pooling input")
    return _padded_patches(
        x, _pair(ksize, "ksize"), _pair(stride, "stride"), (1, 1), _padding(padding), fill
    )


def avg_pool2d(
    x: np.ndarray,
    ksize: int | Sequence[int],
    stride: int | Sequence[int],
    padding: str = "SAME",
    act: str = "NONE",
) -> np.ndarray:
    """AVERAGE_POOL_2D: padded cells are excluded, i.e. each output divides by the number of
    in-bounds cells of its window (TFLite), not by kh * kw."""
    mode = _check_act(act)
    x = _f64(x)
    total = _pool_patches(x, ksize, stride, padding, 0.0).sum(axis=(3, 4))
    inside = np.ones((1, *x.shape[1:3], 1))
    count = _pool_patches(inside, ksize, stride, padding, 0.0).sum(axis=(3, 4))
    return activation(total / count, mode)


def max_pool2d(
    x: np.ndarray,
    ksize: int | Sequence[int],
    stride: int | Sequence[int],
    padding: str = "SAME",
    act: str = "NONE",
) -> np.ndarray:
    """MAX_POOL_2D: padded cells never win (they are -inf), so all-negative inputs stay exact."""
    mode = _check_act(act)
    return activation(_pool_patches(x, ksize, stride, padding, -np.inf).max(axis=(3, 4)), mode)


# --------------------------------------------------------------------------- tensor ops


def mean(x: np.ndarray, axes: int | Sequence[int], keep_dims: bool = False) -> np.ndarray:
    """MEAN over `axes` (negative allowed, duplicates collapse like TFLite)."""
    x = _f64(x)
    raw = [axes] if isinstance(axes, (int, np.integer)) else list(np.asarray(axes).ravel())
    if not raw:
        raise ValueError("mean needs at least one axis")
    norm = tuple(sorted({_axis(int(a), x.ndim, "mean axis") for a in raw}))
    return np.mean(x, axis=norm, keepdims=bool(keep_dims))


def pad(x: np.ndarray, paddings: Sequence[Sequence[int]], value: float = 0.0) -> np.ndarray:
    """PAD / PADV2: paddings [[before, after], ...], one row per dim, constant fill."""
    x = _f64(x)
    spec = np.asarray(paddings)
    if spec.shape != (x.ndim, 2):
        raise ValueError(f"paddings must have shape ({x.ndim}, 2), got {spec.shape}")
    if not np.issubdtype(spec.dtype, np.integer) or (spec < 0).any():
        raise ValueError(f"paddings must be non-negative integers, got {spec.tolist()}")
    return np.pad(x, [tuple(int(v) for v in row) for row in spec], constant_values=float(value))


def concatenation(xs: Sequence[np.ndarray], axis: int, act: str = "NONE") -> np.ndarray:
    """CONCATENATION along `axis`; all other dims must match."""
    arrays = [_f64(a) for a in xs]
    if not arrays:
        raise ValueError("concatenation needs at least one input")
    mode = _check_act(act)
    ndim = arrays[0].ndim
    if any(a.ndim != ndim for a in arrays):
        raise ValueError(f"concatenation inputs differ in rank: {[a.shape for a in arrays]}")
    ax = _axis(axis, max(ndim, 1), "concatenation axis")
    rest = {a.shape[:ax] + a.shape[ax + 1 :] for a in arrays}
    if len(rest) != 1:
        raise ValueError(
            f"concatenation inputs differ outside axis {axis}: {[a.shape for a in arrays]}"
        )
    return activation(np.concatenate(arrays, axis=ax), mode)


def reshape(x: np.ndarray, new_shape: Sequence[int]) -> np.ndarray:
    """RESHAPE; at most one -1 is inferred from the element count."""
    x = _f64(x)
    shape = [int(d) for d in np.asarray(new_shape).ravel()]
    if shape.count(-1) > 1 or any(d < -1 for d in shape):
        raise ValueError(f"new_shape may hold non-negative dims and at most one -1, got {shape}")
    known = int(np.prod([d for d in shape if d != -1]))
    if -1 in shape:
        if known == 0 or x.size % known:
            raise ValueError(f"cannot reshape {x.shape} to {shape}")
        shape[shape.index(-1)] = x.size // known
    elif known != x.size:
        raise ValueError(f"cannot reshape {x.shape} ({x.size} elements) to {shape}")
    return x.reshape(shape)


def add(a: np.ndarray, b: np.ndarray, act: str = "NONE") -> np.ndarray:
    """ADD with NumPy broadcasting."""
    return activation(_broadcast(np.add, a, b), _check_act(act))


def mul(a: np.ndarray, b: np.ndarray, act: str = "NONE") -> np.ndarray:
    """MUL with NumPy broadcasting."""
    return activation(_broadcast(np.multiply, a, b), _check_act(act))


def _broadcast(op: np.ufunc, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = _f64(a), _f64(b)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"shapes {a.shape} and {b.shape} do not broadcast") from None
    return op(a, b)


# --------------------------------------------------------------------------- int8 fake quant


def _round_half_away(v: np.ndarray) -> np.ndarray:
    # np.round is half-to-even; TFLite uses std::round. v - trunc(v) is exact in binary floating
    # point, unlike floor(|v| + 0.5), which misrounds 0.49999999999999994.
    whole = np.trunc(v)
    return whole + np.where(np.abs(v - whole) >= 0.5, np.sign(v), 0.0)


def _per_axis(param: object, ndim: int, axis: int | None, name: str) -> np.ndarray:
    """Shape a scalar or per-channel quantization parameter so it broadcasts along `axis`."""
    arr = np.asarray(param, dtype=np.float64)
    if arr.size == 1:  # a one-entry "per-channel" parameter broadcasts like a scalar
        return arr.reshape(())
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a scalar or 1-D, got shape {arr.shape}")
    if axis is None:
        raise ValueError(f"per-channel {name} of length {arr.size} needs an axis")
    shape = [1] * ndim
    shape[_axis(axis, ndim, "quantization axis")] = arr.size
    return arr.reshape(shape)


def _check_channels(x: np.ndarray, param: np.ndarray, axis: int | None, name: str) -> None:
    if param.ndim and x.shape[_axis(axis, x.ndim)] != param.size:  # type: ignore[arg-type]
        raise ValueError(
            f"{name} has {param.size} entries, tensor has {x.shape[axis]} along axis {axis}"
        )


def quantize(
    x: np.ndarray,
    scale: float | np.ndarray,
    zero_point: int | np.ndarray,
    axis: int | None = None,
    dtype: type[np.integer] | np.dtype = np.int8,
) -> np.ndarray:
    """q = clamp(round_half_away(x / scale) + zero_point) into `dtype`'s range.

    Per-channel when `scale` (and optionally `zero_point`) is 1-D and `axis` is given.
    """
    x = _f64(x)
    s = _per_axis(scale, x.ndim, axis, "scale")
    zp = _per_axis(zero_point, x.ndim, axis, "zero_point")
    _check_channels(x, s, axis, "scale")
    _check_channels(x, zp, axis, "zero_point")
    if (s <= 0).any() or not np.isfinite(s).all():
        raise ValueError("scale must be positive and finite")
    info = np.iinfo(dtype)
    q = _round_half_away(x / s) + zp
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(
    q: np.ndarray,
    scale: float | np.ndarray,
    zero_point: int | np.ndarray,
    axis: int | None = None,
) -> np.ndarray:
    """x = (q - zero_point) * scale as float64; per-channel like `quantize`."""
    qf = np.asarray(q).astype(np.float64)
    s = _per_axis(scale, qf.ndim, axis, "scale")
    zp = _per_axis(zero_point, qf.ndim, axis, "zero_point")
    _check_channels(qf, s, axis, "scale")
    _check_channels(qf, zp, axis, "zero_point")
    return (qf - zp) * s


def quantized_activation_range(act: str, scale: float, zero_point: int) -> tuple[int, int]:
    """int8 clamp bounds of a fused activation, as TFLite's CalculateActivationRangeQuantized."""
    mode = _check_act(act)
    try:  # accept numpy scalars and one-entry arrays as stored in tensor quant params
        scale = float(np.asarray(scale, dtype=np.float64).reshape(()))
        zero_point = int(np.asarray(zero_point).reshape(()))
    except ValueError:
        raise ValueError(
            "quantized_activation_range needs a per-tensor scale and zero_point"
        ) from None
    if not (scale > 0 and np.isfinite(scale)):
        raise ValueError(f"scale must be positive and finite, got {scale!r}")
    info = np.iinfo(np.int8)
    lo, hi = int(info.min), int(info.max)

    def q(value: float) -> int:
        return zero_point + int(_round_half_away(np.float64(value / scale)))

    if mode == "RELU":
        return max(lo, q(0.0)), hi
    if mode == "RELU6":
        return max(lo, q(0.0)), min(hi, q(6.0))
    if mode == "RELU_N1_TO_1":
        return max(lo, q(-1.0)), min(hi, q(1.0))
    return lo, hi
