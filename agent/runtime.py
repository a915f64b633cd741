"""One import path for the two TFLite Python runtimes.

``ai-edge-litert`` (LiteRT, cp310+ wheels) is preferred; ``tflite-runtime`` (2.13/2.14, cp38-cp311,
needs numpy<2) is the fallback used on Python 3.8 boards such as JetPack 5. Both expose the same
``Interpreter``, ``OpResolverType`` and ``load_delegate``. Which one ran, and its version, changes
results heavily, so every measurement records :func:`runtime_info`.

Python 3.8 compatible.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

# (distribution name, interpreter module), in order of preference.
RUNTIMES: Tuple[Tuple[str, str], ...] = (
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
)
RUNTIME_NAMES: Tuple[str, ...] = tuple(name for name, _ in RUNTIMES)

# make_interpreter(resolver=...) name -> OpResolverType member.
RESOLVERS: Dict[str, str] = {
    "auto": "AUTO",  # default kernels + XNNPACK delegate applied by default
    "builtin": "BUILTIN",  # builtin kernels; XNNPACK stays on (same timings as "auto")
    "ref": "BUILTIN_REF",  # reference kernels: slow, deterministic
    "xnnpack_off": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",  # = benchmark_model --use_xnnpack=false
}


class RuntimeNotFound(Exception):
    """No usable TFLite runtime is installed; the message says how to install one."""


@dataclass(frozen=True)
class Runtime:
    name: str  # "ai-edge-litert" or "tflite-runtime"
    version: str
    Interpreter: Any
    OpResolverType: Any
    load_delegate: Any


def install_hint(name: Optional[str] = None, version_info: Optional[Tuple[int, ...]] = None) -> str:
    """The pip command that installs runtime ``name``, or by default the one for this Python
    (ai-edge-litert on Python >= 3.10, tflite-runtime with numpy<2 on 3.8/3.9)."""
    if name is None:
        new = tuple((version_info or sys.version_info)[:2]) >= (3, 10)
        name = "ai-edge-litert" if new else "tflite-runtime"
    if name == "ai-edge-litert":
        return "pip install ai-edge-litert"
    return 'pip install tflite-runtime "numpy<2"'


def numpy_problem(name: str, numpy_version: str) -> Optional[str]:
    """Why ``name`` cannot run with this numpy, or None if it can."""
    major = numpy_version.split(".", 1)[0]
    if name == "tflite-runtime" and major.isdigit() and int(major) >= 2:
        return (
            "tflite-runtime was built against numpy 1.x and fails with numpy "
            f'{numpy_version}; run: pip install "numpy<2"'
        )
    return None


def _version(name: str, module_name: str) -> str:
    for dist in (name, name + "-nightly"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    package = importlib.import_module(module_name.split(".")[0])
    return str(getattr(package, "__version__", "unknown"))


@functools.lru_cache(maxsize=None)
def load_runtime(prefer: Optional[str] = None) -> Runtime:
    """Import the TFLite runtime: ai-edge-litert first, then tflite-runtime.

    ``prefer`` ("ai-edge-litert" or "tflite-runtime", ``_`` accepted for ``-``) forces one.
    Raises :class:`RuntimeNotFound` with install instructions if none can be used.
    """
    candidates = RUNTIMES
    if prefer is not None:
        wanted = prefer.replace("_", "-")
        if wanted not in RUNTIME_NAMES:
            choices = ", ".join(RUNTIME_NAMES)
            raise ValueError(f"unknown runtime {prefer!r}; choose one of {choices}")
        candidates = tuple(r for r in RUNTIMES if r[0] == wanted)

    failures = []
    for name, module_name in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            failures.append(f"{name}: {exc}")
            continue
        problem = numpy_problem(name, np.__version__)
        if problem:
            failures.append(f"{name}: {problem}")
            continue
        return Runtime(
            name=name,
            version=_version(name, module_name),
            Interpreter=module.Interpreter,
            OpResolverType=module.OpResolverType,
            load_delegate=module.load_delegate,
        )

    python = "{}.{}".format(*sys.version_info[:2])
    raise RuntimeNotFound(
        f"no usable TFLite runtime for Python {python} ({'; '.join(failures)}). "
        f"Install one with: {install_hint(None if prefer is None else candidates[0][0])}"
    )


def make_interpreter(
    runtime: Runtime,
    model_path: Union[str, os.PathLike, None] = None,
    model_content: Optional[bytes] = None,
    num_threads: int = 1,
    resolver: str = "auto",
    **interpreter_kwargs: Any,
) -> Any:
    """Build (not allocate) an interpreter for a model given by path or by bytes.

    ``resolver``: "auto" | "builtin" | "ref" | "xnnpack_off" (see :data:`RESOLVERS`).
    ``num_threads`` is explicit and at least 1: never "all cores" by default.
    Other keyword arguments (``experimental_delegates``, ...) go to ``Interpreter`` unchanged.
    """
    if (model_path is None) == (model_content is None):
        raise ValueError("give exactly one of model_path and model_content")
    if resolver not in RESOLVERS:
        raise ValueError(f"unknown resolver {resolver!r}; choose one of {', '.join(RESOLVERS)}")
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be an int >= 1, got {num_threads!r}")
    return runtime.Interpreter(
        model_path=None if model_path is None else os.fspath(model_path),
        model_content=None if model_content is None else bytes(model_content),
        num_threads=num_threads,
        experimental_op_resolver_type=getattr(runtime.OpResolverType, RESOLVERS[resolver]),
        **interpreter_kwargs,
    )


def runtime_info(runtime: Runtime) -> Dict[str, str]:
    """Context recorded with every number: runtime name and version, numpy and Python versions."""
    return {
        "name": runtime.name,
        "version": runtime.version,
        "numpy_version": np.__version__,
        "python_version": "{}.{}.{}".format(*sys.version_info[:3]),
    }
