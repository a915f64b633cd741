from __future__ import annotations

from pathlib import Path

import pytest

# A real mosquitto on a free loopback port for every test that asks for `mosquitto`; a real
# PostgreSQL server (one per session) and a fresh database for every test that asks for
# `postgres_url`.
pytest_plugins = ["tests.mqtt_broker", "tests.postgres_server"]

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's reference data: ``../shared/data`` next to the repository root."""
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path
