"""Hand-written baselines: exact update rules, masks, containers, cost counts."""

from __future__ import annotations

import numpy as np
import pytest

from halo.errors import ConfigError, ShapeError
from halo.optim import SGD, Adagrad, Adam, Momentum, RMSProp, make_baseline


def test_sgd_and_momentum_follow_their_rules() -> None:
    p = [np.array([1.0, -2.0])]
    g1, g2 = [np.array([0.5, 1.0])], [np.array([-1.0, 2.0])]
    sgd = SGD(lr=0.1)
    q, s = sgd.update(p, g1, sgd.init(p))
    np.testing.assert_allclose(q[0], [0.95, -2.1])
    mom = Momentum(lr=0.1, momentum=0.9)
    s = mom.init(p)
    q, s = mom.update(p, g1, s)
    q, s = mom.update(q, g2, s)
    v2 = 0.9 * np.array([0.5, 1.0]) + np.array([-1.0, 2.0])
    np.testing.assert_allclose(q[0], np.array([1.0, -2.0]) - 0.1 * np.array([0.5, 1.0]) - 0.1 * v2)
    np.testing.assert_allclose(s.slots[0]["v"], v2)


def test_adam_matches_textbook_with_bias_correction() -> None:
    rng = np.random.default_rng(0)
    p = [rng.normal(size=(3, 2))]
    opt = Adam(lr=0.01, beta1=0.8, beta2=0.95, eps=1e-6)
    s = opt.init(p)
    m = v = np.zeros((3, 2))
    theta = p[0].copy()
    for t in range(1, 4):
        g = rng.normal(size=(3, 2))
        p, s = opt.update(p, [g], s)
        m = 0.8 * m + 0.2 * g
        v = 0.95 * v + 0.05 * g * g
        theta = theta - 0.01 * (m / (1 - 0.8**t)) / (np.sqrt(v / (1 - 0.95**t)) + 1e-6)
        np.testing.assert_allclose(p[0], theta, rtol=1e-12)
    # First Adam step moves every coordinate by ~lr regardless of gradient scale.
    q, _ = Adam(lr=0.01).update(
        [np.zeros(3)], [np.array([1e-3, 1.0, 1e3])], Adam().init([np.zeros(3)])
    )
    np.testing.assert_allclose(q[0], -0.01, rtol=1e-4)


def test_adagrad_and_rmsprop_rules() -> None:
    p = [np.array([1.0])]
    g = [np.array([2.0])]
    q, s = Adagrad(lr=0.1).update(p, g, Adagrad(lr=0.1).init(p))
    np.testing.assert_allclose(q[0], 1.0 - 0.1 * 2.0 / (np.sqrt(0.1 + 4.0) + 1e-10))
    assert s.slots[0]["acc"][0] == pytest.approx(4.1)
    q, s = RMSProp(lr=0.1, decay=0.9).update(p, g, RMSProp(lr=0.1).init(p))
    np.testing.assert_allclose(q[0], 1.0 - 0.1 * 2.0 / (np.sqrt(0.4) + 1e-8))


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adagrad", "rmsprop"])
def test_every_baseline_minimises_a_quadratic_and_keeps_dtype(name: str) -> None:
    lr = {"sgd": 0.1, "momentum": 0.05, "adam": 0.05, "adagrad": 0.5, "rmsprop": 0.02}[name]
    opt = make_baseline(name, lr=lr)
    scales = [np.array([1.0, 4.0, 0.5], dtype=np.float32), np.array([[2.0]], dtype=np.float32)]
    p = [np.ones(3, dtype=np.float32), np.full((1, 1), -1.0, dtype=np.float32)]
    s = opt.init(p)
    f0 = sum(float(np.sum(c * x * x)) for c, x in zip(scales, p))
    for _ in range(200):
        p, s = opt.update(p, [2 * c * x for c, x in zip(scales, p)], s)
    f = sum(float(np.sum(c * x * x)) for c, x in zip(scales, p))
    assert f < 1e-2 * f0
    assert all(x.dtype == np.float32 for x in p)


def test_mask_freezes_value_and_state_including_adam_step_count() -> None:
    opt = Adam(lr=0.1)
    p = [np.ones(2), np.ones(3)]
    s = opt.init(p)
    g = [np.ones(2), np.ones(3)]
    p1, s1 = opt.update(p, g, s, mask=[True, False])
    assert p1[1] is p[1] and s1.slots[1] is s.slots[1]
    assert s1.slots[0]["t"] == 1 and s1.slots[1]["t"] == 0
    # A missing gradient means "not updated" even without a mask.
    p2, s2 = opt.update(p1, [None, np.ones(3)], s1)
    assert p2[0] is p1[0]
    assert s2.slots[0]["t"] == 1 and s2.slots[1]["t"] == 1
    # The second tensor's first real step is bias-corrected as a first step: moves by ~lr.
    np.testing.assert_allclose(p2[1], 0.9, rtol=1e-6)


def test_dict_params_keep_their_container_and_keys() -> None:
    opt = Momentum(lr=0.5)
    p = {"w": np.ones((2, 2)), "b": np.zeros(2)}
    s = opt.init(p)
    q, s = opt.update(p, {"b": np.ones(2), "w": np.ones((2, 2))}, s, mask={"w": False, "b": True})
    assert list(q) == ["w", "b"]
    np.testing.assert_array_equal(q["w"], 1.0)
    np.testing.assert_array_equal(q["b"], -0.5)
    with pytest.raises(ShapeError, match="keys differ"):
        opt.update(p, {"w": np.ones((2, 2))}, s)


def test_errors_are_actionable() -> None:
    with pytest.raises(ShapeError, match="parameters' order"):
        SGD().update([np.ones(2)], [np.ones(3)], SGD().init([np.ones(2)]))
    with pytest.raises(ShapeError, match="call init"):
        Adam().update([np.ones(2), np.ones(1)], [np.ones(2), np.ones(1)], Adam().init([np.ones(2)]))
    with pytest.raises(ConfigError, match="positive"):
        Adam(lr=-1.0)
    with pytest.raises(ConfigError, match="choose one of"):
        make_baseline("lion")


def test_costs_count_only_updated_tensors() -> None:
    sizes = [100, 10]
    assert SGD().cost(sizes).macs == 110
    adam = Adam().cost(sizes, [False, True])
    assert adam.params_updated == 10 and adam.state_floats == 20 and adam.transcendental == 20
    assert Momentum().cost(sizes).state_floats == 110
