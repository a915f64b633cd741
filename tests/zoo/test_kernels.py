"""Reference kernels vs. slow, obviously-correct loop implementations and known TF values."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.zoo import kernels as K

SETTINGS = settings(max_examples=30, deadline=None)
TOL = dict(rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- loop references


def ref_geometry(size: int, kernel: int, stride: int, dilation: int, padding: str):
    """(out_size, pad_before) straight from the TF padding documentation."""
    eff = (kernel - 1) * dilation + 1
    if padding == "VALID":
        return math.ceil((size - eff + 1) / stride), 0
    out = math.ceil(size / stride)
    return out, max((out - 1) * stride + eff - size, 0) // 2


def ref_act(v: float, act: str) -> float:
    lo, hi = {
        "NONE": (-math.inf, math.inf),
        "RELU": (0.0, math.inf),
        "RELU6": (0.0, 6.0),
        "RELU_N1_TO_1": (-1.0, 1.0),
    }[act]
    return min(max(v, lo), hi)


def ref_windows(x, kh, kw, stride, dilation, padding):
    """Yield (n, oy, ox, [(ky, kx, iy, ix), ...]) listing only in-bounds taps."""
    n_, h, w = x.shape[:3]
    oh, top = ref_geometry(h, kh, stride[0], dilation[0], padding)
    ow, left = ref_geometry(w, kw, stride[1], dilation[1], padding)
    for n in range(n_):
        for oy in range(oh):
            for ox in range(ow):
                taps = []
                for ky in range(kh):
                    for kx in range(kw):
                        iy = oy * stride[0] - top + ky * dilation[0]
                        ix = ox * stride[1] - left + kx * dilation[1]
                        if 0 <= iy < h and 0 <= ix < w:
                            taps.append((ky, kx, iy, ix))
                yield n, oy, ox, taps


def ref_out_shape(x, kh, kw, stride, dilation, padding, channels):
    oh = ref_geometry(x.shape[1], kh, stride[0], dilation[0], padding)[0]
    ow = ref_geometry(x.shape[2], kw, stride[1], dilation[1], padding)[0]
    return np.zeros((x.shape[0], oh, ow, channels))


def ref_conv2d(x, w, b, stride, padding, dilation, groups, act):
    cout, kh, kw, cin_g = w.shape
    cout_g = cout // groups
    out = ref_out_shape(x, kh, kw, stride, dilation, padding, cout)
    for n, oy, ox, taps in ref_windows(x, kh, kw, stride, dilation, padding):
        for o in range(cout):
            g = o // cout_g
            acc = 0.0 if b is None else float(b[o])
            for ky, kx, iy, ix in taps:
                for ci in range(cin_g):
                    acc += x[n, iy, ix, g * cin_g + ci] * w[o, ky, kx, ci]
            out[n, oy, ox, o] = ref_act(acc, act)
    return out


def ref_depthwise(x, w, b, stride, padding, dilation, multiplier, act):
    _, kh, kw, cout = w.shape
    out = ref_out_shape(x, kh, kw, stride, dilation, padding, cout)
    for n, oy, ox, taps in ref_windows(x, kh, kw, stride, dilation, padding):
        for c in range(x.shape[3]):
            for m in range(multiplier):
                o = c * multiplier + m
                acc = 0.0 if b is None else float(b[o])
                for ky, kx, iy, ix in taps:
                    acc += x[n, iy, ix, c] * w[0, ky, kx, o]
                out[n, oy, ox, o] = ref_act(acc, act)
    return out


def ref_pool(x, ksize, stride, padding, reduce, act):
    out = ref_out_shape(x, ksize[0], ksize[1], stride, (1, 1), padding, x.shape[3])
    for n, oy, ox, taps in ref_windows(x, ksize[0], ksize[1], stride, (1, 1), padding):
        for c in range(x.shape[3]):
            values = [x[n, iy, ix, c] for _, _, iy, ix in taps]
            out[n, oy, ox, c] = ref_act(reduce(values), act)
    return out


def ref_fully_connected(x, w, b, act):
    rows = x.reshape(-1, w.shape[1])
    out = np.zeros((rows.shape[0], w.shape[0]))
    for r in range(rows.shape[0]):
        for o in range(w.shape[0]):
            acc = 0.0 if b is None else float(b[o])
            for i in range(w.shape[1]):
                acc += rows[r, i] * w[o, i]
            out[r, o] = ref_act(acc, act)
    return out


def ref_round(v: float) -> int:
    return int(Decimal(v).quantize(Decimal(1), rounding=ROUND_HALF_UP))  # half away from zero


# --------------------------------------------------------------------------- strategies

acts = st.sampled_from(["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])
paddings = st.sampled_from(["SAME", "VALID"])


@st.composite
def spatial(draw, max_kernel=3, dilated=True):
    """Kernel/stride/dilation/padding plus an input size for which VALID still fits."""
    k = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilated else (1, 1)
    padding = draw(paddings)
    eff = [(k[i] - 1) * d[i] + 1 for i in range(2)]
    lo = eff if padding == "VALID" else [1, 1]
    hw = (draw(st.integers(lo[0], 9)), draw(st.integers(lo[1], 9)))
    return k, s, d, padding, hw


def rand(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# --------------------------------------------------------------------------- padding geometry


@pytest.mark.parametrize(
    ("in_size", "kernel", "stride", "dilation", "expected"),
    [
        (32, 3, 2, 1, (16, 0, 1)),
        (7, 3, 2, 1, (4, 1, 1)),
        (8, 1, 2, 1, (4, 0, 0)),
        (32, 3, 1, 1, (32, 1, 1)),
        (224, 7, 2, 1, (112, 2, 3)),
        (5, 2, 1, 1, (5, 0, 1)),
        (8, 3, 1, 2, (8, 2, 2)),
        (1, 5, 1, 1, (1, 2, 2)),
        (2, 1, 3, 1, (1, 0, 0)),
    ],
)
def test_same_padding_known_tf_values(in_size, kernel, stride, dilation, expected):
    assert K.same_padding(in_size, kernel, stride, dilation) == expected


@pytest.mark.parametrize(
    ("in_size", "kernel", "stride", "dilation", "expected"),
    [(32, 3, 2, 1, 15), (7, 3, 2, 1, 3), (8, 3, 1, 2, 4), (5, 5, 1, 1, 1), (224, 7, 2, 1, 109)],
)
def test_valid_out_known_values(in_size, kernel, stride, dilation, expected):
    assert K.valid_out(in_size, kernel, stride, dilation) == expected


@SETTINGS
@given(st.integers(1, 64), st.integers(1, 7), st.integers(1, 4), st.integers(1, 3))
def test_same_padding_properties(in_size, kernel, stride, dilation):
    out, before, after = K.same_padding(in_size, kernel, stride, dilation)
    assert out == -(-in_size // stride)
    assert after - before in (0, 1)  # the odd cell goes after, TF style
    eff = (kernel - 1) * dilation + 1
    assert (out - 1) * stride + eff <= in_size + before + after


def test_valid_out_rejects_oversized_kernel():
    with pytest.raises(ValueError, match="fit"):
        K.valid_out(4, 3, 1, dilation=2)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_geometry_rejects_non_positive_ints(bad):
    with pytest.raises(ValueError):
        K.same_padding(8, 3, bad)


# --------------------------------------------------------------------------- conv2d


CONV_CASES = [
    # (N, H, W, Cin, Cout, kh, kw, stride, dilation, padding, groups)
    (1, 7, 8, 3, 4, 3, 3, (2, 2), (1, 1), "SAME", 1),
    (2, 8, 7, 3, 4, 3, 3, (2, 2), (1, 1), "VALID", 1),
    (1, 9, 9, 2, 3, 3, 3, (1, 1), (2, 2), "SAME", 1),
    (1, 9, 10, 2, 3, 3, 2, (1, 2), (2, 1), "VALID", 1),
    (2, 6, 5, 4, 6, 3, 3, (1, 1), (1, 1), "SAME", 2),
    (1, 7, 6, 4, 2, 2, 3, (2, 1), (1, 1), "VALID", 2),
    (1, 5, 5, 6, 3, 1, 1, (2, 2), (1, 1), "SAME", 3),
    (1, 6, 6, 4, 4, 3, 3, (2, 2), (2, 2), "SAME", 2),
    (1, 4, 4, 2, 2, 4, 4, (1, 1), (1, 1), "SAME", 1),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("act", ["NONE", "RELU6"])
def test_conv2d_matches_loops(case, act):
    n, h, w_, cin, cout, kh, kw, stride, dilation, padding, groups = case
    x, w, b = rand(1, n, h, w_, cin), rand(2, cout, kh, kw, cin // groups), rand(3, cout)
    got = K.conv2d(x, w, b, stride, padding, dilation, groups, act)
    np.testing.assert_allclose(
        got, ref_conv2d(x, w, b, stride, padding, dilation, groups, act), **TOL
    )


@SETTINGS
@given(
    geo=spatial(),
    n=st.integers(1, 2),
    groups=st.integers(1, 3),
    cin_g=st.integers(1, 3),
    cout_g=st.integers(1, 3),
    with_bias=st.booleans(),
    act=acts,
    seed=st.integers(0, 2**32 - 1),
)
def test_conv2d_matches_loops_hypothesis(geo, n, groups, cin_g, cout_g, with_bias, act, seed):
    (kh, kw), stride, dilation, padding, (h, w_) = geo
    cin, cout = groups * cin_g, groups * cout_g
    x, w = rand(seed, n, h, w_, cin), rand(seed + 1, cout, kh, kw, cin_g)
    b = rand(seed + 2, cout) if with_bias else None
    got = K.conv2d(x, w, b, stride, padding, dilation, groups, act)
    np.testing.assert_allclose(
        got, ref_conv2d(x, w, b, stride, padding, dilation, groups, act), **TOL
    )


def test_conv2d_same_pads_after_not_symmetric():
    # 3x3 input, 2x2 all-ones kernel, stride 1: TF pads one cell at bottom/right only.
    x = np.arange(9.0).reshape(1, 3, 3, 1)
    w = np.ones((1, 2, 2, 1))
    got = K.conv2d(x, w, None, padding="SAME")[0, :, :, 0]
    expected = [
        [0 + 1 + 3 + 4, 1 + 2 + 4 + 5, 2 + 5],
        [3 + 4 + 6 + 7, 4 + 5 + 7 + 8, 5 + 8],
        [13, 15, 8],
    ]
    np.testing.assert_array_equal(got, expected)


def test_conv2d_returns_float64_for_float32_input():
    x = rand(0, 1, 4, 4, 2).astype(np.float32)
    w = rand(1, 3, 3, 3, 2).astype(np.float32)
    got = K.conv2d(x, w, None)
    assert got.dtype == np.float64
    assert got.shape == (1, 4, 4, 3)


def test_conv2d_accepts_int_stride_and_dilation():
    x, w = rand(0, 1, 9, 9, 2), rand(1, 2, 3, 3, 2)
    np.testing.assert_array_equal(
        K.conv2d(x, w, None, stride=2, dilation=2), K.conv2d(x, w, None, (2, 2), "SAME", (2, 2))
    )


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "b_shape", "kwargs", "match"),
    [
        ((1, 4, 4, 3), (2, 3, 3, 2), None, {}, "input channels"),
        ((1, 4, 4, 4), (3, 3, 3, 2), None, {"groups": 2}, "groups"),
        ((1, 4, 4, 3), (2, 3, 3, 1), None, {"groups": 2}, "groups"),
        ((1, 4, 4, 4), (2, 3, 3, 4), (3,), {}, "bias"),
        ((4, 4, 4), (2, 3, 3, 4), None, {}, "rank 4"),
        ((1, 4, 4, 4), (2, 3, 3, 4), None, {"padding": "FULL"}, "padding"),
        ((1, 4, 4, 4), (2, 3, 3, 4), None, {"act": "TANH"}, "activation"),
        ((1, 4, 4, 4), (2, 3, 3, 4), None, {"stride": (1, 0)}, "stride"),
        ((1, 4, 4, 4), (2, 3, 3, 4), None, {"stride": (1, 1, 1)}, "stride"),
        ((1, 2, 4, 4), (2, 3, 3, 4), None, {"padding": "VALID"}, "fit"),
    ],
)
def test_conv2d_rejects_bad_arguments(x_shape, w_shape, b_shape, kwargs, match):
    b = None if b_shape is None else np.zeros(b_shape)
    with pytest.raises(ValueError, match=match):
        K.conv2d(np.zeros(x_shape), np.zeros(w_shape), b, **kwargs)


# --------------------------------------------------------------------------- depthwise


DW_CASES = [
    # (N, H, W, Cin, multiplier, kh, kw, stride, dilation, padding)
    (1, 7, 8, 3, 1, 3, 3, (2, 2), (1, 1), "SAME"),
    (2, 8, 7, 3, 2, 3, 3, (2, 2), (1, 1), "VALID"),
    (1, 9, 9, 2, 2, 3, 3, (1, 1), (2, 2), "SAME"),
    (1, 9, 8, 2, 3, 3, 2, (2, 1), (2, 1), "VALID"),
    (1, 5, 6, 4, 2, 5, 5, (1, 1), (1, 1), "SAME"),
]


@pytest.mark.parametrize("case", DW_CASES)
@pytest.mark.parametrize("act", ["NONE", "RELU"])
def test_depthwise_matches_loops(case, act):
    n, h, w_, cin, mult, kh, kw, stride, dilation, padding = case
    x, w, b = rand(4, n, h, w_, cin), rand(5, 1, kh, kw, cin * mult), rand(6, cin * mult)
    got = K.depthwise_conv2d(x, w, b, stride, padding, dilation, mult, act)
    np.testing.assert_allclose(
        got, ref_depthwise(x, w, b, stride, padding, dilation, mult, act), **TOL
    )


@SETTINGS
@given(
    geo=spatial(),
    n=st.integers(1, 2),
    cin=st.integers(1, 4),
    mult=st.integers(1, 3),
    with_bias=st.booleans(),
    act=acts,
    seed=st.integers(0, 2**32 - 1),
)
def test_depthwise_matches_loops_hypothesis(geo, n, cin, mult, with_bias, act, seed):
    (kh, kw), stride, dilation, padding, (h, w_) = geo
    x, w = rand(seed, n, h, w_, cin), rand(seed + 1, 1, kh, kw, cin * mult)
    b = rand(seed + 2, cin * mult) if with_bias else None
    got = K.depthwise_conv2d(x, w, b, stride, padding, dilation, mult, act)
    np.testing.assert_allclose(
        got, ref_depthwise(x, w, b, stride, padding, dilation, mult, act), **TOL
    )


def test_depthwise_channel_order_is_c_times_multiplier_plus_m():
    # 1x1 kernel: output c*M + m must be input c scaled by that filter channel.
    x = np.array([1.0, 10.0]).reshape(1, 1, 1, 2)
    w = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 4)
    got = K.depthwise_conv2d(x, w, None, multiplier=2).ravel()
    np.testing.assert_array_equal(got, [1.0, 2.0, 30.0, 40.0])


@pytest.mark.parametrize(
    ("w_shape", "mult", "match"),
    [
        ((1, 3, 3, 4), 1, "multiplier"),
        ((2, 3, 3, 3), 1, r"\[1, kh, kw, C\]"),
        ((1, 3, 3, 3), 0, "multiplier"),
    ],
)
def test_depthwise_rejects_bad_arguments(w_shape, mult, match):
    with pytest.raises(ValueError, match=match):
        K.depthwise_conv2d(np.zeros((1, 4, 4, 3)), np.zeros(w_shape), None, multiplier=mult)


# --------------------------------------------------------------------------- fully connected


@SETTINGS
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    depth=st.integers(1, 5),
    units=st.integers(1, 4),
    with_bias=st.booleans(),
    act=acts,
    seed=st.integers(0, 2**32 - 1),
)
def test_fully_connected_matches_loops(lead, depth, units, with_bias, act, seed):
    x, w = rand(seed, *lead, depth), rand(seed + 1, units, depth)
    b = rand(seed + 2, units) if with_bias else None
    expected = ref_fully_connected(x, w, b, act)
    np.testing.assert_allclose(K.fully_connected(x, w, b, act), expected, **TOL)
    kept = K.fully_connected(x, w, b, act, keep_num_dims=True)
    assert kept.shape == (*lead, units)
    np.testing.assert_allclose(kept.reshape(-1, units), expected, **TOL)


def test_fully_connected_flattens_like_tflite():
    x = rand(0, 2, 3, 4)  # 24 elements -> [2, 12] for In=12
    w = rand(1, 5, 12)
    got = K.fully_connected(x, w, None)
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got, x.reshape(2, 12) @ w.T, **TOL)


def test_fully_connected_rejects_bad_shapes():
    with pytest.raises(ValueError, match="flattened"):
        K.fully_connected(np.zeros((2, 5)), np.zeros((3, 4)), None)
    with pytest.raises(ValueError, match="keep_num_dims"):
        K.fully_connected(np.zeros((2, 6)), np.zeros((3, 4)), None, keep_num_dims=True)
    with pytest.raises(ValueError, match="bias"):
        K.fully_connected(np.zeros((2, 4)), np.zeros((3, 4)), np.zeros(4))


# --------------------------------------------------------------------------- pooling


@SETTINGS
@given(
    geo=spatial(max_kernel=4, dilated=False),
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    act=acts,
    seed=st.integers(0, 2**32 - 1),
)
def test_pools_match_loops(geo, n, c, act, seed):
    ksize, stride, _, padding, (h, w_) = geo
    x = rand(seed, n, h, w_, c)
    np.testing.assert_allclose(
        K.avg_pool2d(x, ksize, stride, padding, act),
        ref_pool(x, ksize, stride, padding, lambda v: sum(v) / len(v), act),
        **TOL,
    )
    np.testing.assert_array_equal(
        K.max_pool2d(x, ksize, stride, padding, act),
        ref_pool(x, ksize, stride, padding, max, act),
    )


@pytest.mark.parametrize(
    ("h", "w", "ksize", "stride"),
    [(7, 8, (3, 3), (2, 2)), (5, 5, (2, 2), (1, 1)), (6, 7, (3, 2), (2, 1))],
)
def test_avg_pool_excludes_padding(h, w, ksize, stride):
    x = np.full((1, h, w, 2), 5.0)
    np.testing.assert_allclose(K.avg_pool2d(x, ksize, stride, "SAME"), 5.0, **TOL)


def test_avg_pool_hand_values_pad_after():
    x = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    got = K.avg_pool2d(x, (2, 2), (1, 1), "SAME")[0, :, :, 0]
    np.testing.assert_allclose(got, [[2.5, 3.0], [3.5, 4.0]], **TOL)


@pytest.mark.parametrize(
    ("h", "w", "ksize", "stride"),
    [(7, 8, (3, 3), (2, 2)), (5, 5, (2, 2), (1, 1)), (4, 4, (4, 4), (3, 3))],
)
def test_max_pool_never_returns_pad_value(h, w, ksize, stride):
    x = -1.0 - np.random.default_rng(0).random((2, h, w, 3))  # all strictly negative
    got = K.max_pool2d(x, ksize, stride, "SAME")
    assert (got < 0).all()
    assert np.isin(got, x).all()
    np.testing.assert_array_equal(got, ref_pool(x, ksize, stride, "SAME", max, "NONE"))


def test_pool_rejects_bad_arguments():
    with pytest.raises(ValueError, match="fit"):
        K.max_pool2d(np.zeros((1, 2, 2, 1)), 3, 1, "VALID")
    with pytest.raises(ValueError, match="ksize"):
        K.avg_pool2d(np.zeros((1, 2, 2, 1)), (0, 1), 1)
    with pytest.raises(ValueError, match="rank 4"):
        K.avg_pool2d(np.zeros((2, 2, 1)), 2, 1)


# --------------------------------------------------------------------------- tensor ops


@pytest.mark.parametrize(
    ("axes", "keep"),
    [([1, 2], True), ([1, 2], False), (-1, False), ((0, -3), True), ([3, 3], False)],
)
def test_mean(axes, keep):
    x = rand(0, 2, 3, 4, 5)
    norm = tuple(sorted({a % 4 for a in np.atleast_1d(axes)}))
    np.testing.assert_allclose(K.mean(x, axes, keep), x.mean(axis=norm, keepdims=keep), **TOL)


def test_mean_rejects_bad_axes():
    with pytest.raises(ValueError, match="axis"):
        K.mean(np.zeros((2, 3)), [2])
    with pytest.raises(ValueError, match="at least one"):
        K.mean(np.zeros((2, 3)), [])


def test_pad():
    x = np.arange(6.0).reshape(2, 3)
    got = K.pad(x, [[1, 0], [0, 2]], value=-1.5)
    expected = np.array([[-1.5] * 5, [0, 1, 2, -1.5, -1.5], [3, 4, 5, -1.5, -1.5]])
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.float64
    with pytest.raises(ValueError, match="shape"):
        K.pad(x, [[1, 1]])
    with pytest.raises(ValueError, match="non-negative"):
        K.pad(x, [[1, -1], [0, 0]])


def test_concatenation():
    a, b = rand(0, 1, 2, 3, 2), rand(1, 1, 2, 3, 4)
    np.testing.assert_array_equal(K.concatenation([a, b], -1), np.concatenate([a, b], axis=3))
    np.testing.assert_array_equal(
        K.concatenation([a, b], 3, act="RELU"), np.maximum(np.concatenate([a, b], axis=3), 0)
    )
    with pytest.raises(ValueError, match="outside axis"):
        K.concatenation([a, b], 1)
    with pytest.raises(ValueError, match="rank"):
        K.concatenation([a, b[0]], 0)
    with pytest.raises(ValueError, match="out of range"):
        K.concatenation([a, a], 4)


def test_reshape():
    x = rand(0, 2, 3, 4)
    assert K.reshape(x, [4, -1]).shape == (4, 6)
    assert K.reshape(x, np.array([24])).shape == (24,)
    np.testing.assert_array_equal(K.reshape(x, [6, 4]), x.reshape(6, 4))
    for bad in ([5, -1], [-1, -1], [4, 5], [-2, 12]):
        with pytest.raises(ValueError):
            K.reshape(x, bad)


def test_add_mul_broadcast_and_fused_activation():
    a, b = rand(0, 2, 1, 3), rand(1, 4, 1)
    np.testing.assert_array_equal(K.add(a, b), a + b)
    np.testing.assert_array_equal(K.mul(a, b), a * b)
    np.testing.assert_array_equal(K.add(a, b, "RELU_N1_TO_1"), np.clip(a + b, -1, 1))
    np.testing.assert_array_equal(K.mul(a, b, "RELU"), np.maximum(a * b, 0))
    with pytest.raises(ValueError, match="broadcast"):
        K.add(np.zeros(3), np.zeros(4))


def test_elementwise_activations():
    x = np.array([-1000.0, -7.0, -3.0, -1.0, 0.0, 1.0, 3.0, 6.5, 1000.0])
    np.testing.assert_array_equal(K.relu(x), np.maximum(x, 0))
    np.testing.assert_array_equal(K.relu6(x), np.clip(x, 0, 6))
    with np.errstate(all="raise"):
        sig = K.logistic(x)
    np.testing.assert_allclose(sig[1:-1], 1 / (1 + np.exp(-x[1:-1])), rtol=1e-14, atol=1e-15)
    assert sig[0] == 0.0 and sig[-1] == 1.0
    hs = K.hard_swish(x)
    np.testing.assert_allclose(hs, [-0.0, -0.0, 0.0, -1 / 3, 0.0, 2 / 3, 3.0, 6.5, 1000.0], **TOL)


@pytest.mark.parametrize(
    ("act", "expected"),
    [
        ("NONE", [-2.0, -0.5, 0.5, 7.0]),
        ("RELU", [0.0, 0.0, 0.5, 7.0]),
        ("RELU6", [0.0, 0.0, 0.5, 6.0]),
        ("RELU_N1_TO_1", [-1.0, -0.5, 0.5, 1.0]),
    ],
)
def test_activation(act, expected):
    np.testing.assert_array_equal(K.activation(np.array([-2.0, -0.5, 0.5, 7.0]), act), expected)


def test_activation_rejects_unknown():
    with pytest.raises(ValueError, match="RELU_N1_TO_1"):
        K.activation(np.zeros(2), "GELU")


def test_softmax_stable_and_beta():
    x = np.array([[1000.0, 1001.0, 1002.0], [0.0, 1.0, 2.0]])
    with np.errstate(all="raise"):
        got = K.softmax(x)
    np.testing.assert_allclose(got[0], got[1], **TOL)
    e = np.exp([0.0, 1.0, 2.0])
    np.testing.assert_allclose(got[1], e / e.sum(), **TOL)
    e = np.exp([0.0, 0.5, 1.0])
    np.testing.assert_allclose(K.softmax(x, beta=0.5)[1], e / e.sum(), **TOL)
    np.testing.assert_allclose(K.softmax(rand(0, 2, 3, 5)).sum(axis=-1), 1.0, **TOL)


# --------------------------------------------------------------------------- int8 fake quant


def test_quantize_rounds_half_away_from_zero():
    x = np.array([0.5, -0.5, 2.5, -2.5, 1.5, -1.5, 0.49999999999999994, 0.4, -0.6])
    got = K.quantize(x, 1.0, 0)
    np.testing.assert_array_equal(got, [1, -1, 3, -3, 2, -2, 0, 0, -1])
    assert got.dtype == np.int8


@SETTINGS
@given(
    values=st.lists(st.floats(-300, 300, allow_nan=False), min_size=1, max_size=20),
    scale=st.floats(0.01, 4.0),
    zero_point=st.integers(-128, 127),
)
def test_quantize_matches_decimal_reference(values, scale, zero_point):
    got = K.quantize(np.array(values), scale, zero_point)
    expected = [min(max(ref_round(v / scale) + zero_point, -128), 127) for v in values]
    np.testing.assert_array_equal(got, expected)


def test_quantize_clamps_and_applies_zero_point():
    got = K.quantize(np.array([-1000.0, 0.0, 0.25, 1000.0]), 0.5, -3)
    np.testing.assert_array_equal(got, [-128, -3, -2, 127])
    got = K.quantize(np.array([-1.0, 0.0, 1000.0]), 1.0, 128, dtype=np.uint8)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, [127, 128, 255])


def test_quantize_per_channel():
    x = rand(0, 3, 4, 2) * 4
    scale, zp = np.array([0.1, 0.02, 0.5]), np.array([0, 5, -7])
    got = K.quantize(x, scale, zp, axis=0)
    for c in range(3):
        np.testing.assert_array_equal(got[c], K.quantize(x[c], scale[c], zp[c]))
    last = K.quantize(np.moveaxis(x, 0, -1), scale, zp, axis=-1)
    np.testing.assert_array_equal(np.moveaxis(last, -1, 0), got)
    back = K.dequantize(got, scale, zp, axis=0)
    assert back.dtype == np.float64
    for c in range(3):
        np.testing.assert_allclose(back[c], (got[c].astype(float) - zp[c]) * scale[c], **TOL)


@SETTINGS
@given(x=st.floats(-10, 10), scale=st.floats(0.05, 1.0), zero_point=st.integers(-20, 20))
def test_dequantize_quantize_round_trip_within_half_step(x, scale, zero_point):
    q = K.quantize(np.array([x]), scale, zero_point)
    in_range = -128 <= x / scale + zero_point <= 127
    if in_range:
        assert abs(K.dequantize(q, scale, zero_point)[0] - x) <= scale / 2 + 1e-12


def test_quantize_rejects_bad_parameters():
    with pytest.raises(ValueError, match="axis"):
        K.quantize(np.zeros((2, 3)), np.array([1.0, 2.0]), 0)
    with pytest.raises(ValueError, match="entries"):
        K.quantize(np.zeros((2, 3)), np.array([1.0, 2.0]), 0, axis=1)
    with pytest.raises(ValueError, match="positive"):
        K.quantize(np.zeros(3), 0.0, 0)


@pytest.mark.parametrize(
    ("act", "scale", "zp", "expected"),
    [
        ("NONE", 0.1, 3, (-128, 127)),
        ("RELU", 0.1, -128, (-128, 127)),
        ("RELU", 0.1, -10, (-10, 127)),
        ("RELU6", 6 / 255, -128, (-128, 127)),
        ("RELU6", 0.1, -20, (-20, 40)),
        ("RELU6", 2.4, -5, (-5, -2)),  # 6 / 2.4 = 2.5 rounds away from zero to 3
        ("RELU6", 0.01, 0, (0, 127)),
        ("RELU_N1_TO_1", 1 / 127, 0, (-127, 127)),
        ("RELU_N1_TO_1", 1 / 64, 10, (-54, 74)),
    ],
)
def test_quantized_activation_range(act, scale, zp, expected):
    assert K.quantized_activation_range(act, scale, zp) == expected


def test_one_entry_quant_params_act_as_scalars():
    x = rand(0, 3, 4)
    q = K.quantize(x, np.array([0.05]), np.array([2]), axis=0)
    np.testing.assert_array_equal(q, K.quantize(x, 0.05, 2))
    np.testing.assert_array_equal(
        K.dequantize(q, np.array([0.05]), np.array([2])), (q - 2.0) * 0.05
    )
    assert K.quantized_activation_range("RELU6", np.array([0.1]), np.array([-20])) == (-20, 40)


def test_quantized_activation_range_rejects_bad_parameters():
    with pytest.raises(ValueError, match="per-tensor"):
        K.quantized_activation_range("RELU", np.array([0.1, 0.2]), 0)
    with pytest.raises(ValueError, match="positive"):
        K.quantized_activation_range("RELU", 0.0, 0)
    with pytest.raises(ValueError, match="activation"):
        K.quantized_activation_range("TANH", 0.1, 0)
