"""The ``adapt`` job: HALO-style on-device adaptation run by the daemon, reported as an
``AdaptResult`` on ``job/{job}/adapt_result`` (never as a ``BenchResult``: an adaptation is no
latency measurement).

It runs exactly what ``halo-agent adapt --json`` runs (:func:`agent.adapt_cli.
adaptation_document`), with the command's settings and, instead of paths, the blobs the worker
fetched: three CSVs (source rows, target training rows, target test rows) and optionally a
learned-optimizer checkpoint. Energy constants come from this board's state directory as for
the CLI (``halo-agent adapt --calibrate`` writes them there).

Cancel: the cancel event is looked at before every optimizer step (pretraining and LR tuning
included), so a cancel or a shutdown stops the job within one step; the worker then closes it
``cancelled`` (no result is sent) or, after a shutdown, runs it again on restart.

Python 3.8 compatible.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional

from protocol import AdaptResult, AdaptSpec

from .config import PowerConfig

# Blob roles of an adapt job, in the order the worker fetches them.
DATA_ROLES = ("source", "target", "target_test")


def adapt_problem(spec: AdaptSpec) -> Optional[str]:
    """Why this agent cannot run a (protocol-valid) spec, or None: checked before queueing,
    so the sender sees it in the rejection. (A power source that is not there fails the job
    with the reason, as for ``halo-agent adapt --power NAME``.)"""
    from halo.errors import HaloError
    from halo.optimizees.zoo import parse_model
    from halo.sparsity import SparsitySchedule

    if spec.sparsity is not None:
        try:
            SparsitySchedule.parse(spec.sparsity)
        except HaloError as exc:
            return f"adapt.sparsity: {exc}"
    if spec.model is not None:
        try:  # the sizes are checked here; whether the kind fits the data is checked at run time
            parse_model(spec.model, (8,), 2)
        except HaloError as exc:
            if not spec.model.startswith("cnn2d"):
                return f"adapt.model: {exc}"
    return None


def options(spec: AdaptSpec, blobs: Dict[str, str]) -> Dict[str, Any]:
    """The adaptation options (as :data:`agent.adapt_cli.DEFAULT_OPTIONS`) of a spec, with
    the fetched blob files (role -> path in this agent's blob cache)."""
    from .adapt_cli import DEFAULT_OPTIONS

    opts = dict(DEFAULT_OPTIONS)
    opts.update(
        task=spec.task,
        source=blobs.get("source"),
        target=blobs.get("target"),
        target_test=blobs.get("target_test"),
        label=spec.label,
        model=spec.model,
        optimizer=spec.optimizer,
        optimizer_file=blobs.get("optimizer"),
        lr=spec.lr,
        tune_lr=spec.tune_lr,
        steps=spec.steps,
        batch=spec.batch,
        sparsity=spec.sparsity,
        seed=spec.seed,
        eval_every=spec.eval_every,
        pretrain_steps=spec.pretrain_steps,
        power=spec.power,
        class_balanced=bool(spec.class_balanced),
    )
    return opts


def _provenance(document: Dict[str, Any], spec: AdaptSpec) -> Dict[str, Any]:
    """Blob files are this agent's cache paths: say which blobs they were instead."""
    settings = document.get("settings") or {}
    for role in DATA_ROLES:
        if settings.get(role) is not None:
            settings[role] = "blob:" + str(getattr(spec, role + "_sha256"))
    info = document.get("optimizer_info") or {}
    if spec.optimizer_sha256 is not None and "file" in info:
        info["file"] = "blob:" + spec.optimizer_sha256
    return document


def run_adapt_job(
    spec: AdaptSpec,
    job_id: str,
    cmd_id: str,
    result_id: str,
    blobs: Dict[str, str],
    power: PowerConfig,
    state_dir: Path,
    cancel: Optional[threading.Event] = None,
) -> AdaptResult:
    """Never raises for what the command asked: a run that cannot go is a failed result."""
    import click

    from halo.errors import Stopped

    from .adapt_cli import adaptation_document

    started = time.time()
    document: Optional[Dict[str, Any]] = None
    reason: Optional[str] = None
    if cancel is not None and cancel.is_set():
        reason = "cancelled before the adaptation started"
    else:
        try:
            should_stop = None if cancel is None else cancel.is_set
            document = _provenance(
                adaptation_document(options(spec, blobs), power, state_dir, should_stop), spec
            )
        except Stopped as exc:
            reason = f"cancelled: {exc}"
        except click.ClickException as exc:
            reason = exc.format_message()
        except Exception as exc:  # e.g. numpy on hostile CSV contents: a verdict on the input
            reason = f"adaptation failed: {type(exc).__name__}: {exc}"
    return AdaptResult(
        result_id=result_id,
        job_id=job_id,
        cmd_id=cmd_id,
        status="ok" if document is not None else "failed",
        reason=None if reason is None else reason[:1000],
        spec=spec,
        document=document,
        started_at=started,
        finished_at=time.time(),
    )
