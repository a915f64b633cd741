"""Optimizees: manual backprop checked by finite differences, truncated backward, MAC counts."""

from __future__ import annotations

import numpy as np
import pytest

from halo.errors import ShapeError
from halo.optimizees import classifier_head, cnn1d, cnn2d, mlp, softmax_cross_entropy
from halo.optimizees.network import Network


def _grad_check(net: Network, x: np.ndarray, y: np.ndarray, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    params = [p + 0.1 * rng.normal(size=p.shape) for p in net.init(seed, dtype=np.float64)]
    loss, grads, info = net.loss_and_grads(params, x, y)
    assert loss == pytest.approx(net.loss(params, x, y), rel=1e-12)
    assert all(info.computed)
    eps = 1e-6
    for t, p in enumerate(params):
        flat = p.reshape(-1)
        for k in rng.choice(flat.size, size=min(flat.size, 12), replace=False):
            old = flat[k]
            flat[k] = old + eps
            up = net.loss(params, x, y)
            flat[k] = old - eps
            down = net.loss(params, x, y)
            flat[k] = old
            numeric = (up - down) / (2 * eps)
            assert grads[t].reshape(-1)[k] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (
                f"{net.tensor_names[t]}[{k}]"
            )


def test_mlp_gradients_with_weight_decay() -> None:
    rng = np.random.default_rng(1)
    net = mlp((5, 7, 6, 3), weight_decay=1e-2)
    _grad_check(net, rng.normal(size=(9, 5)), rng.integers(0, 3, 9))


def test_cnn1d_gradients_same_and_strided() -> None:
    rng = np.random.default_rng(2)
    net = cnn1d((12, 2), 3, channels=(4, 3), kernels=(3, 2), strides=(1, 2))
    assert net.layers[1].out_shape == (6, 3)  # stride 2, valid
    _grad_check(net, rng.normal(size=(6, 12, 2)), rng.integers(0, 3, 6))


def test_cnn2d_gradients_and_relu_logits_quirk() -> None:
    rng = np.random.default_rng(3)
    net = cnn2d((6, 5, 2), 4, channels=(3, 2), kernels=(3, 2))  # even kernel: asymmetric pad
    assert net.layers[1].pads == (0, 1, 0, 1)
    x = rng.normal(size=(5, 6, 5, 2))
    _grad_check(net, x, rng.integers(0, 4, 5))
    # Flattened inputs are accepted and reshaped.
    params = net.init(0, dtype=np.float64)
    np.testing.assert_allclose(net.logits(params, x.reshape(5, -1)), net.logits(params, x))
    relu_head = cnn2d((6, 5, 2), 4, channels=(3, 2), kernels=(3, 2), relu_logits=True)
    assert np.all(relu_head.logits(params, x) >= 0)


def test_conv2d_matches_direct_convolution() -> None:
    rng = np.random.default_rng(4)
    net = cnn2d((5, 4, 2), 2, channels=(3,), kernels=(3,))
    params = net.init(1, dtype=np.float64)
    x = rng.normal(size=(2, 5, 4, 2))
    w, b = params[0], params[1]
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    direct = np.zeros((2, 5, 4, 3))
    for i in range(5):
        for j in range(4):
            direct[:, i, j] = np.einsum("nhwc,hwcd->nd", xp[:, i : i + 3, j : j + 3], w) + b
    h, _ = net.layers[0].forward(w, b, x)
    np.testing.assert_allclose(h, np.maximum(direct, 0), atol=1e-12)


def test_head_gradients() -> None:
    rng = np.random.default_rng(5)
    net = classifier_head(16, 4, hidden=(8,))
    assert net.name.startswith("head-") and net.param_shapes[0] == (16, 8)
    _grad_check(net, rng.normal(size=(7, 16)), rng.integers(0, 4, 7))
    linear = classifier_head(16, 4)
    assert len(linear.layers) == 1
    _grad_check(linear, rng.normal(size=(7, 16)), rng.integers(0, 4, 7))


def test_truncated_backward_computes_only_what_is_needed() -> None:
    rng = np.random.default_rng(6)
    net = mlp((10, 20, 15, 4))
    params = net.init(0, dtype=np.float64)
    x, y = rng.normal(size=(32, 10)), rng.integers(0, 4, 32)
    _, full, dense_info = net.loss_and_grads(params, x, y)
    need = [False, False, False, True, True, False]  # b2 and W3: backprop stops at layer 1
    loss, grads, info = net.loss_and_grads(params, x, y, need)
    assert info.computed == need
    assert [g is None for g in grads] == [not n for n in need]
    for t in (3, 4):
        np.testing.assert_allclose(grads[t], full[t], rtol=1e-12)
    b = 32
    assert info.backward.lowest_layer == 1
    assert info.backward.per_tensor == [0, 0, 0, b * 15, b * 15 * 4, 0]
    assert info.backward.input_grad == [0, 0, b * 15 * 4]  # layer 1's input grad is not needed
    assert info.macs_backward < dense_info.macs_backward == info.macs_backward_dense
    assert dense_info.macs_backward == b * (2 * (15 * 4) + 2 * (20 * 15) + 10 * 20 + 4 + 15 + 20)
    assert info.macs_forward == b * (10 * 20 + 20 * 15 + 15 * 4)
    none_loss, none_grads, none_info = net.loss_and_grads(params, x, y, [False] * 6)
    assert none_loss == pytest.approx(loss) and all(g is None for g in none_grads)
    assert none_info.macs_backward == 0 and none_info.backward.lowest_layer is None


def test_conv_macs_and_truncation() -> None:
    net = cnn2d((8, 8, 1), 5)  # HALO's meta-training CNN shape on 8x8 digits
    assert net.macs_forward(1) == 64 * 9 * 8 + 64 * 200 * 8 + 512 * 5
    head_only = net.macs_backward(64, [False, False, False, False, True, True])
    assert head_only.total == 64 * (512 * 5 + 5)  # no input gradient below the head
    assert net.macs_backward(64).total > 3 * head_only.total


def test_softmax_cross_entropy_is_stable_and_checks_labels() -> None:
    logits = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    loss, d = softmax_cross_entropy(logits, np.array([0, 0]))
    assert loss == pytest.approx(500.0)
    np.testing.assert_allclose(d.sum(axis=1), 0.0, atol=1e-12)
    net = mlp((3, 2))
    params = net.init(0)
    with pytest.raises(ShapeError, match=r"labels must be in \[0, 2\)"):
        net.loss(params, np.ones((2, 3)), np.array([0, 2]))
    with pytest.raises(ShapeError, match="takes inputs of shape"):
        net.loss(params, np.ones((2, 4)), np.array([0, 1]))
    with pytest.raises(ShapeError, match="parameter tensors"):
        net.loss(params[:1], np.ones((2, 3)), np.array([0, 1]))


def test_init_is_seeded_and_reinit_head_only_touches_the_last_layer() -> None:
    net = mlp((26, 30, 30, 4))
    a, b = net.init(3), net.init(3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and a[0].dtype == np.float32
    assert net.n_params == 26 * 30 + 30 + 30 * 30 + 30 + 30 * 4 + 4
    assert net.tensor_names[:2] == ["dense0.W", "dense0.b"] and net.layer_of == [0, 0, 1, 1, 2, 2]
    c = net.reinit_layer(a, 2, seed=1)
    assert all(c[t] is a[t] for t in range(4))
    assert not np.array_equal(c[4], a[4]) and c[4].std() < 0.02
