"""Meta-training without autodiff: ES/PES estimates point where finite differences do, a few
ES steps improve the meta-objective, the training loop runs end to end and records how its
checkpoint was made, and the shipped optimizer says how it was made."""

from __future__ import annotations

import json

import numpy as np
import pytest

from halo.errors import ConfigError
from halo.meta.es import (
    Unroll,
    antithetic_gradient,
    antithetic_population,
    episode_objective,
    loss_rows,
)
from halo.meta.objective import MetaObjective
from halo.meta.problems import MetaProblem
from halo.meta.train import MetaTrainSettings, meta_train, provenance
from halo.optim import Adam, HierarchicalRNN, HRNNConfig
from halo.optim.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, load_default, read_metadata
from halo.optimizees import mlp
from halo.tasks.base import DomainData

HORIZON = 10


@pytest.fixture(scope="module")
def tiny():
    """A 3-4-2 MLP on a linearly separable problem and a small learned optimizer (424 meta-
    parameters), so exact finite differences over every meta-parameter are cheap."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 3))
    y = np.argmax(x @ rng.normal(size=(3, 2)) + 0.3 * rng.normal(size=(48, 2)), axis=1)
    data = DomainData(x[:40], y[:40], x[40:], y[40:])
    net = mlp((3, 4, 2))
    problem = MetaProblem("tiny", net, net.init(0, dtype=np.float64), data, x[:40], y[:40], 8, 0)
    opt = HierarchicalRNN(HRNNConfig(cell_sizes=(2, 3, 3), init_lr_range=(1e-2, 1e-2)), seed=0)
    return problem, opt


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _finite_differences(problem, opt, objective) -> np.ndarray:
    theta = opt.get_flat()
    n, h = theta.size, 1e-4
    steps = np.eye(n) * h
    both = np.concatenate([theta + steps, theta - steps])  # one population pass: 2n members
    j = episode_objective(both, opt, problem, HORIZON, seed=3, objective=objective)
    return (j[:n] - j[n:]) / (2 * h)


def test_es_and_pes_estimates_agree_with_finite_differences(tiny) -> None:
    problem, opt = tiny
    objective = MetaObjective()
    fd = _finite_differences(problem, opt, objective)
    theta = opt.get_flat()
    pairs, sigma = 384, 1e-3
    eps = np.random.default_rng(1).normal(0.0, sigma, (pairs, theta.size))
    j = episode_objective(
        antithetic_population(theta, eps), opt, problem, HORIZON, 3, objective=objective
    )
    es = antithetic_gradient(eps, j, sigma)
    # With N pairs in n dimensions the estimate's expected cosine is about sqrt(N / (N + n)).
    assert _cos(es, fd) > 0.5
    # PES over two truncations of one episode: fresh perturbations each truncation, the
    # accumulated ones weigh the objective differences; unbiased for the whole episode.
    unroll = Unroll([problem], opt, objective, 2 * pairs + 1, 3, [HORIZON], dtype=np.float64)
    rng = np.random.default_rng(2)
    xi = np.zeros_like(eps)
    pes = np.zeros_like(theta)
    for _ in range(2):
        eps = rng.normal(0.0, sigma, eps.shape)
        xi += eps
        j, done = unroll.run(antithetic_population(theta, eps), HORIZON // 2)
        pes += antithetic_gradient(xi, j, sigma)
    assert done
    assert _cos(pes, fd) > 0.5


def test_es_steps_lower_the_meta_objective(tiny) -> None:
    problem, _ = tiny
    # A slow start (every learning rate 1e-4) leaves room to improve.
    opt = HierarchicalRNN(HRNNConfig(cell_sizes=(2, 3, 3), init_lr_range=(1e-4, 1e-4)), seed=0)
    objective = MetaObjective()
    theta = opt.get_flat()
    before = episode_objective(theta[None], opt, problem, 12, seed=7, objective=objective)[0]
    meta_opt = Adam(lr=0.1)
    state = meta_opt.init([theta])
    noise = np.random.default_rng(1)
    for it in range(40):
        eps = noise.normal(0.0, 0.05, (16, theta.size))
        j = episode_objective(
            antithetic_population(theta, eps), opt, problem, 12, seed=100 + it, objective=objective
        )
        [theta], state = meta_opt.update([theta], [antithetic_gradient(eps, j, 0.05)], state)
    after = episode_objective(theta[None], opt, problem, 12, seed=7, objective=objective)[0]
    assert after < before - 0.1


def test_meta_loss_rows_of_a_class_balanced_task_weigh_every_class_alike() -> None:
    y = np.array([0] * 200 + [1] * 10 + [2] * 5)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(np.bincount(y[loss_rows(rng, y, 90, True)]), [30, 30, 30])
    plain = loss_rows(rng, y, 90, False)
    assert len(set(plain)) == 90 and np.bincount(y[plain])[0] > 60


def test_objective_caps_divergence_and_counts_the_penalty() -> None:
    objective = MetaObjective()
    ratio = objective.log_ratio(np.array([1.0, 0.5, np.nan, 1e9]), 1.0)
    assert ratio[0] == pytest.approx(np.log(1 / (1 + 1e-6) + 1e-6))
    assert ratio[1] < 0 and ratio[2] == ratio[3] == objective.max_log_ratio
    grads = [np.ones((2, 3)), None, 2 * np.ones((2, 1))]
    terms = objective.step_terms(np.ones(2), 1.0, grads, horizon=4)
    # mean of g^2 over the 4 computed coordinates = (3 + 4) / 4, weighted by 5e-4
    assert terms[0] == pytest.approx(ratio[0] / 4 + 5e-4 * 7 / 4)
    with pytest.raises(ConfigError):
        MetaObjective(eps=0.0)


def test_meta_train_runs_and_records_provenance(tmp_path) -> None:
    settings = MetaTrainSettings(
        iterations=4,
        kinds=("drift-mlp",),
        train_seeds=(101,),
        valid_seeds=(201,),
        horizons=(20,),
        valid_horizon=20,
        truncation=10,
        pairs=2,
        pretrain_steps=20,
        eval_every=2,
    )
    result = meta_train(settings)
    assert result.iterations_done == 4 and len(result.curve) == 4
    assert [v["iteration"] for v in result.validation] == [0, 2, 4]
    assert len(result.episodes) == 2  # 4 truncations of 10 steps, episodes of 20
    best = min(v["scores"]["mean"] for v in result.validation)
    chosen = next(v for v in result.validation if v["iteration"] == result.best_iteration)
    assert chosen["scores"]["mean"] == best
    extra = provenance(settings, result, "pytest")
    assert extra["settings"]["kinds"] == ["drift-mlp"]
    assert extra["problems"]["validation"] == ["drift-mlp/seed201"]
    assert extra["budget"]["iterations_done"] == 4 and extra["wall_time_s"] >= 0
    json.dumps(extra)  # the metadata must be plain JSON
    # Reproducible from the seed: the same settings give the same optimizer.
    again = meta_train(settings)
    np.testing.assert_array_equal(again.optimizer.get_flat(), result.optimizer.get_flat())
    assert again.curve == result.curve
    with pytest.raises(ConfigError, match="validation seeds"):
        MetaTrainSettings(train_seeds=(1,), valid_seeds=(1,))


def test_shipped_optimizer_loads_and_says_how_it_was_made() -> None:
    opt = load_default()
    assert opt.n_meta == 8349
    extra = read_metadata(DEFAULT_CHECKPOINT)["extra"]
    assert extra["made_by"] == "halo.meta.train"
    assert extra["command"].startswith("python -m halo.meta.train")
    assert extra["settings"]["seed"] == 0 and extra["settings"]["kinds"]
    assert 0 < extra["wall_time_s"] <= 30 * 60
    assert extra["budget"]["iterations_done"] > 0
    assert extra["meta_loss_curve"] and extra["validation_curve"]
    assert extra["validation_curve"][0]["iteration"] == 0
    # The JSON beside the weights is the same record, readable without numpy.
    beside = json.loads(DEFAULT_CHECKPOINT.with_suffix(".json").read_text())
    assert beside == extra
    # Meta-training moved the weights (the released recipe barely did, halo.md §5).
    init = HierarchicalRNN(opt.config, seed=0).get_flat()
    assert np.abs(opt.get_flat() - init).max() > 0.05
    assert load_checkpoint(DEFAULT_CHECKPOINT).config == opt.config


def test_command_line_writes_a_checkpoint_with_its_record(tmp_path) -> None:
    from halo.meta.train import main

    out = tmp_path / "opt.npz"
    args = [
        "--out", str(out), "--iterations", "2", "--kinds", "drift-mlp", "--train-seeds", "101",
        "--valid-seeds", "201", "--horizons", "20", "--valid-horizon", "20", "--truncation",
        "10", "--pairs", "2", "--pretrain-steps", "20", "--eval-every", "2", "--sparsity", "none",
    ]  # fmt: skip
    assert main(args) == 0
    extra = read_metadata(out)["extra"]
    assert extra["command"] == "python -m halo.meta.train " + " ".join(args)
    assert extra["settings"]["sparsity"] is None and extra["settings"]["iterations"] == 2
    assert json.loads(out.with_suffix(".json").read_text()) == extra
    assert load_checkpoint(out, expect=HRNNConfig()).n_meta == 8349
    assert main(["--out", str(out), "--kinds", "nope"]) == 2
