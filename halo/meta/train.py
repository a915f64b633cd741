"""Meta-training the learned optimizer: ES/PES meta-gradients, Adam on the flat meta-vector,
held-out validation, and a checkpoint that records how it was made.

Each meta-iteration advances one problem kind (round robin) by one truncation: the population
of 2N + 1 optimizers (:mod:`halo.meta.es`) runs T steps, the antithetic estimate of the
meta-gradient goes through gradient-norm clipping into Adam. Every ``eval_every`` iterations
the current meta-parameters are scored on held-out problems (seeds never used for training,
fixed randomness, full episodes); the best-scoring snapshot is what gets saved.

    python -m halo.meta.train --out halo/data/optimizers/halo_default.npz --seed 0

reproduces the shipped optimizer: the defaults are the settings it was made with (its metadata
records the exact command; its ``--time-budget 1500`` guard was not reached). Runs are
deterministic for a seed on one machine (one BLAS thread); float32 sums may differ in the last
bits across BLAS builds, so expect a close, not bit-identical, result elsewhere.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from halo.errors import ConfigError
from halo.meta.es import (
    ESSettings,
    Unroll,
    antithetic_gradient,
    antithetic_population,
    episode_objective,
)
from halo.meta.objective import MetaObjective
from halo.meta.problems import KINDS, MetaProblem, make_problem
from halo.optim.baselines import Adam
from halo.optim.checkpoint import save_checkpoint
from halo.optim.hrnn import HierarchicalRNN
from halo.optim.hrnn_config import HRNNConfig
from halo.regularizer import GradNormPenalty
from halo.sparsity import SparsitySchedule


@dataclass(frozen=True)
class MetaTrainSettings:
    seed: int = 0
    iterations: int = 1600
    time_budget_s: Optional[float] = None  # stop early (after a validation) when exceeded
    kinds: Tuple[str, ...] = ("thyroid-mlp", "digits-mlp", "digits-cnn", "drift-mlp")
    train_seeds: Tuple[int, ...] = (101, 102, 103, 104)
    valid_seeds: Tuple[int, ...] = (201, 202)
    horizons: Tuple[int, ...] = (200, 400, 600)
    valid_horizon: int = 400
    truncation: int = 20
    pairs: int = 8
    sigma: float = 0.01
    estimator: str = "pes"
    meta_lr: float = 3e-3
    meta_lr_decay: str = "linear"  # "linear": to 0 at the last iteration; "none"
    grad_clip: float = 3.0  # max norm of one estimate, in units of its kind's running norm
    penalty_weight: float = 5e-4
    penalty_reduction: str = "mean"
    sparsity: Optional[str] = "0.1,0.3,0.5"
    sparse_fraction: float = 0.5  # share of episodes run with the sparsity schedule
    pretrain_steps: int = 500
    eval_every: int = 200
    meta_loss: str = "heldout"  # meta-loss rows: held out from adaptation, or the train rows
    init_lr_range: Tuple[float, float] = (1e-3, 1e-2)
    global_input: str = "last"

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.eval_every < 1:
            raise ConfigError("iterations must be >= 0 and eval_every >= 1")
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ConfigError(f"unknown problem kinds {unknown}; choose from {KINDS}")
        if not self.horizons or min(self.horizons) < 1 or self.valid_horizon < 1:
            raise ConfigError("episode horizons must be whole numbers >= 1, like 200,400")
        if not self.train_seeds or not self.valid_seeds:
            raise ConfigError("give at least one training and one validation seed")
        if set(self.train_seeds) & set(self.valid_seeds):
            raise ConfigError("validation seeds must not be training seeds")
        if not (0.0 <= self.sparse_fraction <= 1.0):
            raise ConfigError("sparse_fraction must be in [0, 1]")
        if self.meta_lr_decay not in ("linear", "none"):
            raise ConfigError("meta_lr_decay must be 'linear' or 'none'")
        ESSettings(self.pairs, self.sigma, self.estimator, self.truncation)  # validates
        GradNormPenalty(self.penalty_weight, self.penalty_reduction)

    def es(self) -> ESSettings:
        return ESSettings(self.pairs, self.sigma, self.estimator, self.truncation)

    def objective(self) -> MetaObjective:
        return MetaObjective(penalty=GradNormPenalty(self.penalty_weight, self.penalty_reduction))

    def hrnn_config(self) -> HRNNConfig:
        return HRNNConfig(init_lr_range=self.init_lr_range, global_input=self.global_input)

    def schedule(self) -> Optional[SparsitySchedule]:
        return SparsitySchedule.parse(self.sparsity) if self.sparsity else None


@dataclass
class MetaTrainResult:
    optimizer: HierarchicalRNN
    best_iteration: int
    wall_s: float
    iterations_done: int
    curve: List[Dict[str, Any]] = field(default_factory=list)  # per-iteration training record
    validation: List[Dict[str, Any]] = field(default_factory=list)
    episodes: List[Dict[str, Any]] = field(default_factory=list)  # member 0's whole episodes
    optimizee_steps: int = 0  # member-steps simulated (population x steps)


def _validation_problems(settings: MetaTrainSettings) -> List[MetaProblem]:
    return [
        make_problem(kind, seed, settings.pretrain_steps, settings.meta_loss)
        for kind in settings.kinds
        for seed in settings.valid_seeds
    ]


def validate(
    flat: np.ndarray,
    optimizer: HierarchicalRNN,
    problems: List[MetaProblem],
    settings: MetaTrainSettings,
) -> Dict[str, float]:
    """Episode objective of ``flat`` on each held-out problem, dense and (if meta-training
    uses it) sparse; fixed seeds make it a deterministic score."""
    scores: Dict[str, float] = {}
    schedule = settings.schedule()
    variants: List[Tuple[str, Optional[SparsitySchedule]]] = [("dense", None)]
    if schedule is not None and settings.sparse_fraction > 0:
        variants.append(("sparse", schedule))
    for problem in problems:
        for label, sparsity in variants:
            j = episode_objective(
                flat[None, :],
                optimizer,
                problem,
                settings.valid_horizon,
                seed=settings.seed + 1000,
                objective=settings.objective(),
                sparsity=sparsity,
                dtype=np.float32,
            )
            scores[f"{problem.name}/{label}"] = float(j[0])
    scores["mean"] = float(np.mean(list(scores.values())))
    return scores


def meta_train(
    settings: MetaTrainSettings,
    progress: Optional[Callable[[str], None]] = None,
) -> MetaTrainResult:
    """Run meta-training from ``settings.seed``; returns the best validated optimizer."""
    say = progress or (lambda line: None)
    t_start = time.perf_counter()
    es = settings.es()
    root = np.random.SeedSequence(settings.seed)
    init_seq, noise_seq, *unroll_seqs = root.spawn(2 + len(settings.kinds))
    optimizer = HierarchicalRNN(
        settings.hrnn_config(), seed=int(init_seq.generate_state(1)[0] % 2**31)
    )
    theta = optimizer.get_flat()
    say(f"pretraining {len(settings.kinds)} kinds x {len(settings.train_seeds)} seeds")
    train_problems = {
        kind: [
            make_problem(kind, s, settings.pretrain_steps, settings.meta_loss)
            for s in settings.train_seeds
        ]
        for kind in settings.kinds
    }
    valid_problems = _validation_problems(settings)
    population = 2 * es.pairs + 1
    schedule = settings.schedule()
    unrolls = [
        Unroll(
            train_problems[kind],
            optimizer,
            settings.objective(),
            population,
            int(seq.generate_state(1)[0]),
            settings.horizons,
            schedule,
            settings.sparse_fraction if schedule is not None else 0.0,
        )
        for kind, seq in zip(settings.kinds, unroll_seqs)
    ]
    noise = np.random.default_rng(noise_seq)
    meta_opt = Adam(lr=settings.meta_lr)
    meta_state = meta_opt.init([theta])
    result = MetaTrainResult(optimizer, 0, 0.0, 0)

    def run_validation(iteration: int) -> None:
        scores = validate(theta, optimizer, valid_problems, settings)
        entry = {
            "iteration": iteration,
            "wall_s": round(time.perf_counter() - t_start, 2),
            "scores": scores,
        }
        result.validation.append(entry)
        best = min(result.validation, key=lambda e: e["scores"]["mean"])
        if best is entry:
            result.best_iteration = iteration
            best_theta[:] = theta
        say(f"iter {iteration}: validation meta-loss {scores['mean']:.4f}")

    best_theta = theta.copy()
    kind_norms: Dict[str, float] = {}
    run_validation(0)
    iteration = 0
    for iteration in range(1, settings.iterations + 1):
        unroll = unrolls[(iteration - 1) % len(unrolls)]
        eps = noise.normal(0.0, es.sigma, size=(es.pairs, theta.size))
        if es.estimator == "es":
            unroll.broadcast_member0()
        objectives, done = unroll.run(antithetic_population(theta, eps), es.truncation)
        if es.estimator == "pes":
            assert unroll.xi is not None
            unroll.xi += eps
            directions = unroll.xi
        else:
            directions = eps
        grad = antithetic_gradient(directions, objectives, es.sigma)
        norm = float(np.linalg.norm(grad))
        kind = settings.kinds[(iteration - 1) % len(unrolls)]
        if not math.isfinite(norm):
            grad, norm = np.zeros_like(grad), 0.0
        else:
            # Kinds differ in how noisy their estimates are (the CNN's small batches give
            # larger ones); each is scaled by its own running norm so that every kind steers
            # the meta-parameters alike, then clipped against outliers.
            seen = kind_norms.get(kind)
            kind_norms[kind] = norm if seen is None else 0.9 * seen + 0.1 * norm
            grad = grad / max(kind_norms[kind], 1e-12)
            scaled = float(np.linalg.norm(grad))
            if scaled > settings.grad_clip:
                grad = grad * (settings.grad_clip / scaled)
        if settings.meta_lr_decay == "linear":
            frac = 1.0 - (iteration - 1) / max(settings.iterations, 1)
            meta_opt = Adam(lr=settings.meta_lr * max(frac, 1e-3))
        [theta], meta_state = meta_opt.update([theta], [grad], meta_state)
        result.optimizee_steps += population * es.truncation
        result.curve.append(
            {
                "iteration": iteration,
                "problem": unroll.problem.name,
                "objective": float(objectives[0]),
                "grad_norm": norm,
            }
        )
        if done:
            result.episodes.append(
                {
                    "iteration": iteration,
                    "problem": unroll.problem.name,
                    "horizon": unroll.horizon,
                    "sparse": unroll.sparse is not None,
                    "objective": float(unroll.episode_objective[0]),
                }
            )
        over_budget = (
            settings.time_budget_s is not None
            and time.perf_counter() - t_start > settings.time_budget_s
        )
        if iteration % settings.eval_every == 0 or iteration == settings.iterations or over_budget:
            run_validation(iteration)
        if over_budget:
            say(f"time budget of {settings.time_budget_s:g} s reached at iteration {iteration}")
            break
    optimizer.set_flat(best_theta)
    result.iterations_done = iteration
    result.wall_s = time.perf_counter() - t_start
    return result


def _curve_summary(curve: List[Dict[str, Any]], bins: int = 60) -> List[Dict[str, Any]]:
    """The per-iteration record averaged over equal bins of iterations (for the metadata)."""
    if not curve:
        return []
    edges = np.linspace(0, len(curve), min(bins, len(curve)) + 1).astype(int)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        chunk = curve[a:b]
        out.append(
            {
                "iterations": [chunk[0]["iteration"], chunk[-1]["iteration"]],
                "objective": round(float(np.mean([c["objective"] for c in chunk])), 5),
                "grad_norm": round(float(np.mean([c["grad_norm"] for c in chunk])), 4),
            }
        )
    return out


def provenance(
    settings: MetaTrainSettings, result: MetaTrainResult, command: str
) -> Dict[str, Any]:
    """How the checkpoint was made: saved as the checkpoint's ``extra`` metadata."""
    first = result.validation[0]["scores"] if result.validation else {}
    best = next(
        (v["scores"] for v in result.validation if v["iteration"] == result.best_iteration), {}
    )
    return {
        "made_by": "halo.meta.train",
        "command": command,
        "settings": json.loads(json.dumps(asdict(settings))),
        "problems": {
            "train": [f"{k}/seed{s}" for k in settings.kinds for s in settings.train_seeds],
            "validation": [f"{k}/seed{s}" for k in settings.kinds for s in settings.valid_seeds],
            "what": "pretrain on the task's source domain with Adam, adapt on the target "
            "domain's training split; see halo.meta.problems",
        },
        "objective": "mean_t log(L_t/(L_0+1e-6)+1e-6) + penalty_weight * sum_t R(theta_t), "
        "L_t = loss on a random subset of the meta-loss rows: "
        + (
            "20 % of the target training split held out from adaptation"
            if settings.meta_loss == "heldout"
            else "the target training split"
        ),
        "gradient_estimator": f"antithetic {settings.estimator.upper()}, "
        f"{settings.pairs} pairs, sigma {settings.sigma}, truncation {settings.truncation}",
        "meta_optimizer": f"Adam lr {settings.meta_lr} ({settings.meta_lr_decay} decay) on the "
        "flat meta-vector, "
        f"each estimate divided by its problem kind's running norm, clipped to "
        f"{settings.grad_clip}",
        "budget": {
            "iterations_done": result.iterations_done,
            "optimizee_member_steps": result.optimizee_steps,
            "episodes_completed": len(result.episodes),
        },
        "wall_time_s": round(result.wall_s, 1),
        "selected_iteration": result.best_iteration,
        "validation_meta_loss": {"initial": first, "selected": best},
        "validation_curve": [
            {"iteration": v["iteration"], "mean": round(v["scores"]["mean"], 5)}
            for v in result.validation
        ],
        "meta_loss_curve": _curve_summary(result.curve),
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.machine(),
        },
    }


def write_checkpoint(
    out: Path, settings: MetaTrainSettings, result: MetaTrainResult, command: str
) -> Path:
    """The checkpoint with its provenance, and the same record as JSON beside it (readable
    without numpy). What ``halo-coord halo train`` calls after :func:`meta_train`."""
    extra = provenance(settings, result, command)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(out, result.optimizer, extra=extra)
    path.with_suffix(".json").write_text(json.dumps(extra, indent=1) + "\n")
    return path


def write_log(path: Path, result: MetaTrainResult) -> None:
    """The full training record (every iteration, validation and episode) as JSON."""
    record = {"curve": result.curve, "validation": result.validation, "episodes": result.episodes}
    Path(path).write_text(json.dumps(record))


def _pair(text: str) -> Tuple[float, float]:
    try:
        parts = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        parts = []
    if len(parts) != 2:
        raise ConfigError(f"expected two numbers min,max, got {text!r}")
    return parts[0], parts[1]


def parse_args(argv: Optional[List[str]]) -> Tuple[MetaTrainSettings, Path, Optional[Path]]:
    """(settings, checkpoint path, log path) from command-line words; a bad value raises
    :class:`ConfigError` (argparse itself still exits 2 on unknown options)."""
    d = MetaTrainSettings()
    p = argparse.ArgumentParser(
        prog="python -m halo.meta.train",
        description="Meta-train HALO's learned optimizer with ES/PES (no autodiff).",
    )
    p.add_argument("--out", type=Path, required=True, help="checkpoint path (.npz)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--time-budget", type=float, default=None, help="seconds; stop early")
    p.add_argument("--kinds", default=",".join(d.kinds), help=f"from {', '.join(KINDS)}")
    p.add_argument("--train-seeds", default=",".join(map(str, d.train_seeds)))
    p.add_argument("--valid-seeds", default=",".join(map(str, d.valid_seeds)))
    p.add_argument("--horizons", default=",".join(map(str, d.horizons)))
    p.add_argument("--valid-horizon", type=int, default=d.valid_horizon)
    p.add_argument("--truncation", type=int, default=d.truncation)
    p.add_argument("--pairs", type=int, default=d.pairs)
    p.add_argument("--sigma", type=float, default=d.sigma)
    p.add_argument("--estimator", choices=["pes", "es"], default=d.estimator)
    p.add_argument("--meta-lr", type=float, default=d.meta_lr)
    p.add_argument("--meta-lr-decay", choices=["linear", "none"], default=d.meta_lr_decay)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--penalty-weight", type=float, default=d.penalty_weight)
    p.add_argument("--penalty-reduction", choices=["mean", "sum"], default=d.penalty_reduction)
    p.add_argument("--sparsity", default=d.sparsity, help="schedule, or 'none' for dense")
    p.add_argument("--sparse-fraction", type=float, default=d.sparse_fraction)
    p.add_argument("--pretrain-steps", type=int, default=d.pretrain_steps)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--meta-loss", choices=["heldout", "train"], default=d.meta_loss)
    p.add_argument(
        "--init-lr-range",
        default=",".join(map(str, d.init_lr_range)),
        help="the optimizer's initial learning rates are drawn in this range (min,max)",
    )
    p.add_argument("--log", type=Path, default=None, help="write the full training record here")
    a = p.parse_args(argv)

    def ints(text: str) -> Tuple[int, ...]:
        try:
            return tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise ConfigError(f"expected whole numbers like 200,400, got {text!r}") from None

    settings = MetaTrainSettings(
        seed=a.seed,
        iterations=a.iterations,
        time_budget_s=a.time_budget,
        kinds=tuple(k.strip() for k in a.kinds.split(",") if k.strip()),
        train_seeds=ints(a.train_seeds),
        valid_seeds=ints(a.valid_seeds),
        horizons=ints(a.horizons),
        valid_horizon=a.valid_horizon,
        truncation=a.truncation,
        pairs=a.pairs,
        sigma=a.sigma,
        estimator=a.estimator,
        meta_lr=a.meta_lr,
        meta_lr_decay=a.meta_lr_decay,
        grad_clip=a.grad_clip,
        penalty_weight=a.penalty_weight,
        penalty_reduction=a.penalty_reduction,
        sparsity=None if str(a.sparsity).lower() in ("none", "", "1", "1.0") else a.sparsity,
        sparse_fraction=a.sparse_fraction,
        pretrain_steps=a.pretrain_steps,
        eval_every=a.eval_every,
        meta_loss=a.meta_loss,
        init_lr_range=_pair(a.init_lr_range),
    )
    return settings, a.out, a.log


def main(argv: Optional[List[str]] = None) -> int:
    try:
        settings, out, log = parse_args(argv)
    except ConfigError as exc:
        print(f"halo.meta.train: error: {exc}", file=sys.stderr)
        return 2
    command = "python -m halo.meta.train " + " ".join(sys.argv[1:] if argv is None else argv)
    result = meta_train(settings, progress=lambda line: print(line, file=sys.stderr, flush=True))
    path = write_checkpoint(out, settings, result, command)
    if log is not None:
        write_log(log, result)
    print(
        f"wrote {path} (iteration {result.best_iteration} of {result.iterations_done}, "
        f"{result.wall_s:.0f} s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
