"""The TFLite runtime shim against whichever runtime is really installed (no mocks).

Runs on the main CI leg (Python >= 3.10, ai-edge-litert) and on the Python 3.8 leg
(tflite-runtime, numpy<2).
"""

from __future__ import annotations

import importlib.util
import sys
from importlib import metadata

import numpy as np
import pytest

from agent.runtime import (
    RESOLVERS,
    RUNTIME_NAMES,
    Runtime,
    RuntimeNotFound,
    install_hint,
    load_runtime,
    make_interpreter,
    numpy_problem,
    runtime_info,
)

INSTALLED = [
    name for name in RUNTIME_NAMES if importlib.util.find_spec(name.replace("-", "_")) is not None
]
MISSING = [name for name in RUNTIME_NAMES if name not in INSTALLED]


def test_loads_the_installed_runtime():
    runtime = load_runtime()
    assert isinstance(runtime, Runtime)
    assert runtime.name == INSTALLED[0]  # ai-edge-litert wins when both are installed
    assert callable(runtime.Interpreter)
    assert callable(runtime.load_delegate)
    assert set(RESOLVERS.values()) <= set(runtime.OpResolverType.__members__)


def test_version_matches_installed_distribution():
    runtime = load_runtime()
    assert runtime.version == metadata.version(runtime.name)
    assert runtime.version[0].isdigit()


def test_import_is_cached():
    assert load_runtime() is load_runtime()


@pytest.mark.parametrize("name", INSTALLED)
def test_prefer_selects_runtime(name):
    assert load_runtime(prefer=name).name == name
    assert load_runtime(prefer=name.replace("-", "_")).name == name


@pytest.mark.parametrize("name", MISSING)
def test_prefer_missing_runtime_says_how_to_install(name):
    with pytest.raises(RuntimeNotFound) as excinfo:
        load_runtime(prefer=name)
    message = str(excinfo.value)
    assert install_hint(name) in message
    assert "{}.{}".format(*sys.version_info[:2]) in message


def test_prefer_unknown_runtime_is_rejected():
    with pytest.raises(ValueError, match="unknown runtime"):
        load_runtime(prefer="tensorflow")


def test_install_hint_per_python_version():
    assert install_hint(version_info=(3, 8)) == 'pip install tflite-runtime "numpy<2"'
    assert install_hint(version_info=(3, 9)) == 'pip install tflite-runtime "numpy<2"'
    assert install_hint(version_info=(3, 10)) == "pip install ai-edge-litert"
    assert install_hint(version_info=(3, 13)) == "pip install ai-edge-litert"


def test_numpy_problem_only_for_tflite_runtime_with_numpy2():
    assert "numpy<2" in numpy_problem("tflite-runtime", "2.4.6")
    assert numpy_problem("tflite-runtime", "1.24.4") is None
    assert numpy_problem("ai-edge-litert", "2.4.6") is None
    assert numpy_problem(load_runtime().name, np.__version__) is None


def test_runtime_info():
    runtime = load_runtime()
    info = runtime_info(runtime)
    assert info["name"] == runtime.name
    assert info["version"] == metadata.version(runtime.name)
    assert info["numpy_version"] == np.__version__
    assert info["python_version"].startswith("{}.{}.".format(*sys.version_info[:2]))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({}, "exactly one"),
        ({"model_path": "m.tflite", "model_content": b"x"}, "exactly one"),
        ({"model_content": b"x", "resolver": "gpu"}, "unknown resolver"),
        ({"model_content": b"x", "num_threads": 0}, "num_threads"),
        ({"model_content": b"x", "num_threads": -1}, "num_threads"),
        ({"model_content": b"x", "num_threads": True}, "num_threads"),
    ],
)
def test_make_interpreter_rejects_bad_arguments(kwargs, error):
    with pytest.raises(ValueError, match=error):
        make_interpreter(load_runtime(), **kwargs)


def _run(interpreter, x):
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


@pytest.mark.parametrize("resolver", sorted(RESOLVERS))
def test_make_interpreter_each_resolver(tiny_model, resolver):
    runtime = load_runtime()
    x = np.linspace(-1.0, 1.0, 8, dtype=np.float32).reshape(1, 8)
    reference = _run(make_interpreter(runtime, model_content=tiny_model, resolver="ref"), x)
    y = _run(make_interpreter(runtime, model_content=tiny_model, resolver=resolver), x)
    assert y.shape == (1, 4)
    assert y.dtype == np.float32
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-6)


def test_make_interpreter_from_path(tiny_model, tmp_path):
    runtime = load_runtime()
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tiny_model)
    x = np.ones((1, 8), dtype=np.float32)
    from_path = _run(make_interpreter(runtime, model_path=path, num_threads=2), x)
    from_bytes = _run(make_interpreter(runtime, model_content=tiny_model), x)
    np.testing.assert_array_equal(from_path, from_bytes)
