"""Check generated models in the installed LiteRT runtime against the writer's NumPy forward pass.

Each model is rebuilt from its manifest line (its sha256 must match the file, which also proves
generation is reproducible) and run with the reference kernels in a child process, so a model
that crashes the runtime is reported instead of taking the command down. Criteria: float32 max
abs error ≤ 1e-4; int8 outputs within two quantisation steps and the same top class (a tie with
the reference maximum counts as the same).
"""

from __future__ import annotations

import hashlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coordinator.zoo import kernels
from coordinator.zoo.generate import build_graph, make_spec
from coordinator.zoo.graph import Graph, evaluate

FLOAT_TOL = 1e-4
INT8_STEPS = 2
TIMEOUT_S = 300


@dataclass
class Verdict:
    id: str
    dtype: str
    ok: bool
    resolver: str
    max_abs_err: float | None = None
    max_steps: int | None = None
    argmax_ok: bool | None = None
    detail: str = ""


def reference_inputs(graph: Graph, seed: int = 1234) -> np.ndarray:
    """The input fed to both sides: seeded uniform [-1, 1), quantised for int8 models."""
    t = graph.tensors[graph.inputs[0]]
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, t.shape)
    if t.dtype == "int8":
        return kernels.quantize(x, t.quant.scale, t.quant.zero_point)
    return x.astype(np.float32)


def run_in_runtime(
    path: str, x: np.ndarray, resolver: str, tensors: list[int]
) -> dict[int, np.ndarray]:
    """Child-process body: one model, one inference; returns the asked-for tensors."""
    from agent.runtime import load_runtime, make_interpreter

    it = make_interpreter(
        load_runtime(),
        model_path=path,
        num_threads=1,
        resolver=resolver,
        experimental_preserve_all_tensors=True,
    )
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return {t: it.get_tensor(t).copy() for t in tensors}


def compare(
    graph: Graph, got: dict[int, np.ndarray], want: dict[int, np.ndarray]
) -> tuple[bool, dict]:
    """Float: every activation tensor within FLOAT_TOL relative to its own magnitude (so an
    error early in the network cannot hide behind a saturated softmax) and the output within
    FLOAT_TOL absolute. Int8: the output within INT8_STEPS steps and the same top class."""
    o = graph.outputs[0]
    out = graph.tensors[o]
    for t, ref in want.items():
        if got[t].shape != ref.shape:
            return False, {
                "detail": f"tensor {graph.tensors[t].name!r}: shape {got[t].shape} "
                f"!= reference {ref.shape}"
            }
    if out.dtype != "int8":
        worst, where = 0.0, ""
        for t, ref in want.items():
            rel = float(np.abs(got[t] - ref).max()) / max(1.0, float(np.abs(ref).max()))
            if rel > worst:
                worst, where = rel, graph.tensors[t].name
        err = float(np.abs(got[o].astype(np.float64) - want[o]).max())
        facts = {"max_abs_err": err}
        if worst > FLOAT_TOL:
            facts["detail"] = f"tensor {where!r} differs by {worst:.3g} (relative)"
        return err <= FLOAT_TOL and worst <= FLOAT_TOL, facts
    got, want = got[o], want[o]
    steps = int(np.abs(got.astype(np.int64) - want.astype(np.int64)).max())
    scale = float(out.quant.scale[0])
    facts = {"max_steps": steps, "max_abs_err": steps * scale}
    if got.ndim == 2:  # a classifier: top class must agree up to ties in the reference
        top = int(np.argmax(got[0]))
        facts["argmax_ok"] = bool(want[0][top] >= want[0].max() - 1)
    return steps <= INT8_STEPS and facts.get("argmax_ok", True), facts


class Verifier:
    def __init__(self, timeout_s: float = TIMEOUT_S):
        self.timeout_s = timeout_s
        self._ctx = multiprocessing.get_context("spawn")
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def _run(self, path: str, x: np.ndarray, resolver: str, tensors: list[int]) -> dict:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=self._ctx)
        try:
            return self._pool.submit(run_in_runtime, path, x, resolver, tensors).result(
                self.timeout_s
            )
        except BrokenProcessPool:
            self._pool.shutdown(wait=False)
            self._pool = None
            raise

    def verify(self, path: Path, row: dict) -> Verdict:
        spec = make_spec(
            row["space"],
            row["arch"],
            row["dataset"],
            row.get("resolution"),
            row["dtype"],
            row["seed"],
        )
        verdict = Verdict(row["id"], row["dtype"], False, "ref")
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        if sha != row["sha256"]:
            verdict.detail = "file sha256 differs from the manifest"
            return verdict
        _, graph = build_graph(spec)
        x = reference_inputs(graph)
        values = evaluate(
            graph, {graph.inputs[0]: x.astype(np.float64) if x.dtype != np.int8 else x}, keep=True
        )
        checked = [graph.outputs[0]]
        if graph.tensors[graph.outputs[0]].dtype == "float32":
            checked += [op.outputs[0] for op in graph.ops]
        want = {t: values[t] if t in values else graph.tensors[t].data for t in checked}
        for resolver in ("ref", "builtin"):
            verdict.resolver = resolver
            try:
                got = self._run(str(path), x, resolver, list(want))
            except BrokenProcessPool:
                verdict.detail = f"runtime crashed with the {resolver} kernels"
                continue
            except TimeoutError:
                verdict.detail = f"no result within {self.timeout_s:.0f} s"
                return verdict
            except Exception as exc:  # the runtime's own error for a model it rejects
                verdict.detail = f"runtime error: {exc}".splitlines()[0]
                return verdict
            ok, facts = compare(graph, got, want)
            for key, value in facts.items():
                setattr(verdict, key, value)
            verdict.ok = ok
            if resolver == "builtin":
                verdict.detail = (
                    "reference kernels crashed (a LiteRT limit, e.g. int8 SOFTMAX "
                    "over 1000 classes); checked with the builtin kernels"
                )
            return verdict
        return verdict
