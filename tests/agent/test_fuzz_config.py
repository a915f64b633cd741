"""Fuzzing the agent's TOML configuration: any file gives an AgentConfig or a one-line
ConfigError naming what to fix. The target is shared with fuzz/run.py."""

from __future__ import annotations

import pytest
from hypothesis import example, given

from fuzz import targets
from tests.fuzzing import fuzz_settings, inputs


@pytest.fixture(scope="module")
def load():
    with targets.agent_config() as run:
        yield run


@fuzz_settings(300)
@given(inputs(targets.AGENT_CONFIG_SEEDS))
@example(b"\x80")  # was UnicodeDecodeError: not UTF-8
@example(b'[broker]\nurl = "mqtt://user:pw@[:61]:1883"\n')  # was ValueError from urlsplit
@example(b'[power]\n"x\\ny" = 1\n')  # the error was two lines: the key is quoted now
def test_agent_config(load, data: bytes) -> None:
    load(data)
