"""Fuzzing the files an adapt command brings to the board as blobs: learned-optimizer
checkpoints (.npz) and task tables (CSV). Only CheckpointError / TaskDataError (one line,
naming the file) may come out. The targets are shared with fuzz/run.py."""

from __future__ import annotations

import io
import zipfile

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fuzz import targets
from tests.fuzzing import fuzz_settings, inputs, mutated

SEED = targets.halo_checkpoint_seeds()[0]
with zipfile.ZipFile(io.BytesIO(SEED)) as _z:
    MEMBERS = {name: _z.read(name) for name in _z.namelist()}
METADATA = "__metadata__.npy"


def _zip(members) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


@st.composite
def checkpoints(draw) -> bytes:
    """An archive with right CRCs around a mutated member (the metadata's JSON and .npy
    header, or a parameter's .npy), a dropped member, or damaged bytes anywhere."""
    members = dict(MEMBERS)
    how = draw(st.sampled_from(["metadata", "member", "drop", "bytes"]))
    if how == "bytes":
        return draw(mutated([SEED], steps=3))
    name = METADATA if how == "metadata" else draw(st.sampled_from(sorted(MEMBERS)))
    if how == "drop":
        del members[name]
    else:
        members[name] = draw(mutated([MEMBERS[name]], steps=3))
    return _zip(members)


@pytest.fixture(scope="module")
def checkpoint():
    with targets.halo_checkpoint() as run:
        yield run


@pytest.fixture(scope="module")
def table():
    with targets.halo_table() as run:
        yield run


@fuzz_settings(80)
@given(checkpoints() | st.binary(max_size=64))
@example(b"")  # was EOFError from np.load
# Found by atheris: NotImplementedError ("zip file version 9.5") from zipfile.
@example(SEED[: SEED.index(b"PK\x01\x02") + 6] + (95).to_bytes(2, "little")
         + SEED[SEED.index(b"PK\x01\x02") + 8 :])  # fmt: skip
@example(MEMBERS["gru0/b_c.npy"])  # a lone .npy: np.load returns an array, not an archive
def test_halo_checkpoint(checkpoint, data: bytes) -> None:
    checkpoint(data)


def test_checkpoint_header_that_is_no_literal(checkpoint) -> None:
    # Was tokenize.TokenError, escaping from numpy's .npy header parser.
    members = dict(MEMBERS)
    members[METADATA] = members[METADATA].replace(b"'shape': (), }", b"'shape': (), (( ")
    err = checkpoint(_zip(members))
    assert "record '__metadata__' is damaged" in str(err)


def test_checkpoint_dtype_that_is_no_literal(checkpoint) -> None:
    # Found by atheris: SyntaxError, escaping from numpy's dtype parser.
    members = dict(MEMBERS)
    members[METADATA] = members[METADATA].replace(b"'<U1051'", b"'09f8,i'")
    assert "record '__metadata__' is damaged" in str(checkpoint(_zip(members)))


def test_checkpoint_with_an_encrypted_member(checkpoint) -> None:
    # Found by atheris: RuntimeError ("password required") from zipfile.
    start = SEED.index(b"PK\x01\x02")
    flags = int.from_bytes(SEED[start + 8 : start + 10], "little") | 1
    data = SEED[: start + 8] + flags.to_bytes(2, "little") + SEED[start + 10 :]
    assert "encrypted" in str(checkpoint(data))


def test_checkpoint_member_claiming_terabytes(checkpoint) -> None:
    # Was MemoryError: numpy allocates what a .npy header claims before reading it.
    members = dict(MEMBERS)
    name = "gru0/W_ru.npy"
    members[name] = members[name].replace(b"(14, 4), }    ", b"(99999999999, 4), }")
    err = checkpoint(_zip(members))
    assert "record 'gru0/W_ru' is damaged" in str(err)


@fuzz_settings(200)
@given(inputs(targets.HALO_TABLE_SEEDS))
@example(b"\x80")  # was UnicodeDecodeError
@example(b'a,"x\ny",b\n1,2,3\n')  # found by atheris: a column name broke the error into lines
@example(b"a,label\n1," + b"2" * 40 + b"\n")  # found by atheris: OverflowError (int64 labels)
@example(b"a,label\n1,1000000000\n")  # was a billion-class output layer
@example(b"a,label\n" + b"1" * 200000 + b",x\n")  # was csv.Error: field larger than field limit
def test_halo_task_table(table, data: bytes) -> None:
    table(data)
