"""Fuzzing the sysfs readers and the tegrastats log parser. Simulated board trees (JetPack 4
IIO, JetPack 5 hwmon with unrelated devices, a Raspberry Pi, a laptop's hwmon and powercap
with the /proc files every benchmark records) get fuzzed contents in one to three files; then
discovery, reading, the total-power rule, ``open_source("auto")`` and the environment
snapshot run as the agent runs them: only PowerError may come out, and the snapshot stays a
valid protocol JSON object. The targets are shared with fuzz/run.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz import targets
from tests.fuzzing import EDGE_TOKENS, fuzz_settings, inputs, mutated


@pytest.fixture(scope="module")
def sysfs():
    with targets.power_sysfs() as run:
        yield run


@pytest.fixture(scope="module")
def tegrastats():
    with targets.tegrastats_log() as run:
        yield run


@fuzz_settings(120)
@given(st.data())
def test_sysfs_readers(sysfs, data) -> None:
    changes = b""
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(sysfs.files) - 1))
        original = sysfs.originals[index]
        content = data.draw(mutated([original, original + original] + EDGE_TOKENS))
        changes += targets.record(index, content)
    sysfs(changes)


@fuzz_settings(200)
@given(inputs(targets.TEGRASTATS_SEEDS, max_size=300))
def test_tegrastats_log(tegrastats, data: bytes) -> None:
    tegrastats(data)


# Inputs that crashed a reader before it was fixed (file of the simulated trees, contents).
FOUND = [
    ("iio:device0/running_mode", "\u00b2".encode()),  # ValueError: isdigit() but not int()
    ("iio:device0/running_mode", b"--1"),  # ValueError: lstrip("-") then int()
    ("proc/meminfo", "MemAvailable: \u00b2 kB".encode()),  # ValueError in agent.sysfacts
    ("cpu/present", b"0-99999999999"),  # MemoryError: a list of 1e11 CPU numbers
    ("thermal_zone0/temp", b"9" * 400),  # OverflowError: int too large for a float
    ("proc/loadavg", b"nan nan nan 1/2 3"),  # env_pre refused by the protocol (not finite)
    ("proc/uptime", b"inf 1.0"),  # same
]


@pytest.mark.parametrize("suffix, content", FOUND)
def test_inputs_found_by_fuzzing(sysfs, suffix: str, content: bytes) -> None:
    index = next(i for i, name in enumerate(sysfs.files) if name.endswith(suffix))
    sysfs(targets.record(index, content))
