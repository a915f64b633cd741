"""Population optimizees: P members in one batched pass give each member's own loss and
gradients, with the same truncated backward pass and MAC counts."""

from __future__ import annotations

import numpy as np
import pytest

from halo.errors import ShapeError
from halo.optimizees import cnn1d, cnn2d, mlp
from halo.optimizees.population import PopulationNetwork

NETS = [
    (lambda: mlp((5, 7, 6, 3), weight_decay=1e-2), (9, 5)),
    (lambda: cnn1d((12, 2), 3, channels=(4, 3), kernels=(3, 2), strides=(1, 2)), (6, 12, 2)),
    (lambda: cnn2d((6, 5, 2), 3, channels=(3, 2), kernels=(3, 2)), (5, 6, 5, 2)),
]


@pytest.mark.parametrize("make,x_shape", NETS, ids=["mlp", "cnn1d", "cnn2d"])
def test_each_member_matches_its_own_network_pass(make, x_shape) -> None:
    rng = np.random.default_rng(0)
    net = make()
    x = rng.normal(size=x_shape)
    y = rng.integers(0, 3, x_shape[0])
    members = [
        [p + 0.1 * rng.normal(size=p.shape) for p in net.init(i, dtype=np.float64)]
        for i in range(3)
    ]
    stacked = [np.stack([m[t] for m in members]) for t in range(len(net.param_shapes))]
    pop = PopulationNetwork(net)
    masks = [
        None,
        [False, False, True, True, True, False],
        [False, False, False, False, True, True],
    ]
    for need in masks:
        losses, grads, info = pop.loss_and_grads(stacked, x, y, need)
        for i, params in enumerate(members):
            loss, ref, ref_info = net.loss_and_grads(params, x, y, need)
            assert losses[i] == pytest.approx(loss, rel=1e-12)
            for g, r in zip(grads, ref):
                assert (g is None) == (r is None)
                if g is not None:
                    np.testing.assert_allclose(g[i], r, rtol=1e-10, atol=1e-13)
        assert info.macs_backward == ref_info.macs_backward
        assert info.macs_forward == ref_info.macs_forward
    np.testing.assert_allclose(
        pop.loss(stacked, x, y), [net.loss(m, x, y) for m in members], rtol=1e-12
    )


def test_replicate_and_shape_errors() -> None:
    net = mlp((4, 3, 2))
    pop = PopulationNetwork(net)
    params = pop.replicate(net.init(0), 5)
    assert [p.shape for p in params] == [(5, 4, 3), (5, 3), (5, 3, 2), (5, 2)]
    np.testing.assert_array_equal(pop.member(params, 4)[0], net.init(0)[0])
    with pytest.raises(ShapeError, match="population parameter"):
        pop.loss([p[0] for p in params], np.zeros((2, 4)), np.zeros(2, dtype=int))
