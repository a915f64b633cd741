"""Models for the agent's tests. These tests also run on Python 3.8 (the boards' Python), where
the coordinator's zoo cannot be imported: there `.ci/run` passes a model the zoo wrote on the
main leg through HALOFARM_TINY_TFLITE."""

from __future__ import annotations

import os
import sys

import pytest

TINY_MODEL_ENV = "HALOFARM_TINY_TFLITE"


@pytest.fixture(scope="session")
def tiny_model() -> bytes:
    """float32 FULLY_CONNECTED x[1,8] -> y[1,4], built by the in-repo zoo writer."""
    if sys.version_info >= (3, 10):
        try:
            from coordinator.zoo.testing import tiny_model_bytes
        except ImportError:
            pass
        else:
            return tiny_model_bytes()
    path = os.environ.get(TINY_MODEL_ENV)
    if path and os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read()
    pytest.skip("no model: the zoo needs Python >= 3.10 and HALOFARM_TINY_TFLITE is not set")


@pytest.fixture(scope="session")
def tiny_model_file(tiny_model, tmp_path_factory) -> str:
    """The tiny model as a file."""
    path = tmp_path_factory.mktemp("models") / "tiny.tflite"
    path.write_bytes(tiny_model)
    return str(path)
