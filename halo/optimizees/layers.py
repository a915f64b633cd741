"""Layers with hand-written backward passes: dense and 1-D/2-D convolution (im2col through
``sliding_window_view``), each with an optional fused ReLU.

``backward`` computes only what it is asked for (weight grad, bias grad, input grad), which is
what lets the network stop backprop below the shallowest updated layer. MAC counts are per
sample and count multiply-accumulates of products; the bias gradient's accumulations count as
one MAC per output value.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from halo.errors import ConfigError, ShapeError

Shape = Tuple[int, ...]


class Dense:
    kind = "dense"

    def __init__(self, in_shape: Shape, n_out: int, relu: bool = True) -> None:
        self.in_shape = tuple(int(s) for s in in_shape)
        self.n_in = int(np.prod(self.in_shape))
        self.n_out = int(n_out)
        self.relu = bool(relu)
        if self.n_in < 1 or self.n_out < 1:
            raise ConfigError(f"dense layer sizes must be positive, got {self.n_in}->{self.n_out}")

    @property
    def out_shape(self) -> Shape:
        return (self.n_out,)

    @property
    def param_shapes(self) -> List[Shape]:
        return [(self.n_in, self.n_out), (self.n_out,)]

    @property
    def fan_in(self) -> int:
        return self.n_in

    def forward(self, w: np.ndarray, b: np.ndarray, x: np.ndarray) -> Tuple[np.ndarray, Any]:
        xf = x.reshape(x.shape[0], -1)
        z = xf @ w + b
        if self.relu:
            on = z > 0
            return z * on, (x.shape, xf, on)
        return z, (x.shape, xf, None)

    def backward(
        self, w: np.ndarray, cache: Any, dy: np.ndarray, need_w: bool, need_b: bool, need_x: bool
    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
        shape, xf, on = cache
        dz = dy * on if on is not None else dy
        dw = xf.T @ dz if need_w else None
        db = dz.sum(axis=0) if need_b else None
        dx = (dz @ w.T).reshape(shape) if need_x else None
        return dx, dw, db

    def macs(self) -> int:
        return self.n_in * self.n_out

    def bias_macs(self) -> int:
        return self.n_out


class Conv2D:
    """NHWC convolution, kernel (kh, kw, C_in, C_out), stride s, "same" (s = 1) or "valid"."""

    kind = "conv2d"

    def __init__(
        self,
        in_shape: Shape,
        kernel: Tuple[int, int],
        out_channels: int,
        stride: int = 1,
        padding: str = "same",
        relu: bool = True,
    ) -> None:
        if len(in_shape) != 3:
            raise ConfigError(f"conv2d input shape must be (H, W, C), got {in_shape}")
        self.in_shape = tuple(int(s) for s in in_shape)
        self.kh, self.kw = (int(k) for k in kernel)
        self.cout = int(out_channels)
        self.stride = int(stride)
        self.relu = bool(relu)
        h, w, _ = self.in_shape
        if padding == "same":
            if self.stride != 1:
                raise ConfigError("'same' padding is only supported with stride 1; use 'valid'")
            # TensorFlow's split: the extra row/column goes to the bottom/right.
            pt, pl = (self.kh - 1) // 2, (self.kw - 1) // 2
            self.pads = (pt, self.kh - 1 - pt, pl, self.kw - 1 - pl)
        elif padding == "valid":
            self.pads = (0, 0, 0, 0)
        else:
            raise ConfigError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.padding = padding
        hp, wp = h + self.pads[0] + self.pads[1], w + self.pads[2] + self.pads[3]
        if hp < self.kh or wp < self.kw or self.stride < 1:
            raise ConfigError(f"kernel {kernel} does not fit input {in_shape} ({padding})")
        self.ho = (hp - self.kh) // self.stride + 1
        self.wo = (wp - self.kw) // self.stride + 1

    @property
    def out_shape(self) -> Shape:
        return (self.ho, self.wo, self.cout)

    @property
    def param_shapes(self) -> List[Shape]:
        return [(self.kh, self.kw, self.in_shape[2], self.cout), (self.cout,)]

    @property
    def fan_in(self) -> int:
        return self.kh * self.kw * self.in_shape[2]

    def im2col(self, x: np.ndarray) -> Tuple[np.ndarray, Shape]:
        pt, pb, pl, pr = self.pads
        if any(self.pads):
            x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
        s = self.stride
        win = sliding_window_view(x, (self.kh, self.kw), axis=(1, 2))[:, ::s, ::s]
        win = win[:, : self.ho, : self.wo]  # (B, Ho, Wo, C, kh, kw)
        cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, self.fan_in)
        return cols, x.shape

    def forward(self, w: np.ndarray, b: np.ndarray, x: np.ndarray) -> Tuple[np.ndarray, Any]:
        batch = x.shape[0]
        cols, padded_shape = self.im2col(x)
        z = (cols @ w.reshape(-1, self.cout) + b).reshape(batch, self.ho, self.wo, self.cout)
        on = z > 0 if self.relu else None
        return (z * on if on is not None else z), (cols, padded_shape, on)

    def backward(
        self, w: np.ndarray, cache: Any, dy: np.ndarray, need_w: bool, need_b: bool, need_x: bool
    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
        cols, padded_shape, on = cache
        dz = (dy * on if on is not None else dy).reshape(-1, self.cout)
        dw = (cols.T @ dz).reshape(w.shape) if need_w else None
        db = dz.sum(axis=0) if need_b else None
        dx = self.col2im(dz @ w.reshape(-1, self.cout).T, padded_shape) if need_x else None
        return dx, dw, db

    def col2im(self, dcols: np.ndarray, padded_shape: Shape) -> np.ndarray:
        """Input gradient from column gradients (rows in ``im2col`` order): the adjoint of
        im2col, summing every window's contribution back onto the (unpadded) input."""
        batch = padded_shape[0]
        dcols = dcols.reshape(batch, self.ho, self.wo, self.kh, self.kw, self.in_shape[2])
        dxp = np.zeros(padded_shape, dtype=dcols.dtype)
        s = self.stride
        h_span, w_span = s * (self.ho - 1) + 1, s * (self.wo - 1) + 1
        for i in range(self.kh):
            for j in range(self.kw):
                dxp[:, i : i + h_span : s, j : j + w_span : s, :] += dcols[:, :, :, i, j, :]
        pt, _, pl, _ = self.pads
        h, wd, _ = self.in_shape
        return dxp[:, pt : pt + h, pl : pl + wd, :]

    def macs(self) -> int:
        return self.ho * self.wo * self.fan_in * self.cout

    def bias_macs(self) -> int:
        return self.ho * self.wo * self.cout


class Conv1D:
    """(B, L, C) convolution with kernel (k, C_in, C_out): a 2-D convolution of height 1."""

    kind = "conv1d"

    def __init__(
        self,
        in_shape: Shape,
        kernel: int,
        out_channels: int,
        stride: int = 1,
        padding: str = "same",
        relu: bool = True,
    ) -> None:
        if len(in_shape) != 2:
            raise ConfigError(f"conv1d input shape must be (L, C), got {in_shape}")
        self.in_shape = tuple(int(s) for s in in_shape)
        self._conv = Conv2D((1,) + self.in_shape, (1, kernel), out_channels, stride, padding, relu)
        self.k = int(kernel)
        self.relu = bool(relu)

    @property
    def out_shape(self) -> Shape:
        return (self._conv.wo, self._conv.cout)

    @property
    def param_shapes(self) -> List[Shape]:
        return [(self.k, self.in_shape[1], self._conv.cout), (self._conv.cout,)]

    @property
    def fan_in(self) -> int:
        return self._conv.fan_in

    def forward(self, w: np.ndarray, b: np.ndarray, x: np.ndarray) -> Tuple[np.ndarray, Any]:
        y, cache = self._conv.forward(w[None], b, x[:, None])
        return y[:, 0], cache

    def backward(
        self, w: np.ndarray, cache: Any, dy: np.ndarray, need_w: bool, need_b: bool, need_x: bool
    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
        dx, dw, db = self._conv.backward(w[None], cache, dy[:, None], need_w, need_b, need_x)
        return (dx[:, 0] if dx is not None else None), (dw[0] if dw is not None else None), db

    def macs(self) -> int:
        return self._conv.macs()

    def bias_macs(self) -> int:
        return self._conv.bias_macs()


def check_shape(name: str, value: np.ndarray, shape: Shape) -> None:
    if tuple(np.shape(value)) != tuple(shape):
        raise ShapeError(f"parameter {name} has shape {np.shape(value)}, expected {shape}")
