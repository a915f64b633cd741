"""Hypothesis strategies the fuzz tests share: arbitrary bytes, and structure-aware mutations
of valid samples (bytes flipped, inserted, deleted, repeated; fields replaced by edge-case
tokens; two samples spliced), so that inputs reach past the first check of a parser.

The targets themselves are in :mod:`fuzz.targets` (shared with the atheris harness).
Python 3.8 compatible: the on-device packages' fuzz tests run on the 3.8 CI leg too.
"""

from __future__ import annotations

import re
from typing import Any, Callable, List, Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def fuzz_settings(max_examples: int) -> Any:
    """Bounded examples (the whole fuzz suite stays under 90 s of CI), no deadline (a loaded
    machine is slow, not wrong)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Values that break parsers: empty, signs, huge and non-finite numbers, digits int() takes but
# ASCII-only code does not, separators and brackets of the formats under test, bad UTF-8.
EDGE_TOKENS: List[bytes] = [
    b"",
    b"0",
    b"-0",
    b"-1",
    b"--1",
    b"+1",
    b"1_0",
    b"0x1F",
    b"1e999",
    b"-1e999",
    b"nan",
    b"inf",
    b"-inf",
    b"NaN",
    b"9" * 25,
    b"9" * 400,
    b"18446744073709551616",
    b"-9223372036854775809",
    "\u00b2".encode(),  # superscript two: str.isdigit() is true, int() refuses it
    "\u0663".encode(),  # Arabic-Indic three: int() takes it
    b"\x00",
    b"\xff\xfe",
    b"\xc3(",
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b",",
    b";",
    b":",
    b"=",
    b"%",
    b"*",
    b"-",
    b"/",
    b"[",
    b"]",
    b"{",
    b"}",
    b'"',
    b"'",
    b"\\",
    b"#",
    b"true",
    b"null",
    b"[]",
    b"{}",
    b'""',
    b"..",
    b"../../etc/passwd",
]

_TOKEN_RE = re.compile(rb"[A-Za-z0-9_.+\-]+|[^A-Za-z0-9_.+\-]")


@st.composite
def mutated(draw: Callable[..., Any], samples: Sequence[bytes], steps: int = 4) -> bytes:
    """A sample changed in 1..``steps`` places."""
    data = bytearray(draw(st.sampled_from(list(samples))))
    for _ in range(draw(st.integers(1, steps))):
        op = draw(
            st.sampled_from(
                ["token", "token", "flip", "insert", "delete", "repeat", "splice", "cut"]
            )
        )
        pos = draw(st.integers(0, len(data)))
        if op == "token":
            # Replace one token (a word, a number, or a single other character).
            tokens = [m.span() for m in _TOKEN_RE.finditer(bytes(data))]
            if tokens:
                start, end = draw(st.sampled_from(tokens))
                data[start:end] = draw(st.sampled_from(EDGE_TOKENS) | st.binary(max_size=8))
        elif op == "flip" and data:
            i = min(pos, len(data) - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(EDGE_TOKENS) | st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "repeat":
            end = min(len(data), pos + draw(st.integers(1, 64)))
            data[pos:pos] = data[pos:end] * draw(st.integers(1, 4))
        elif op == "splice":
            other = draw(st.sampled_from(list(samples)))
            data[pos:] = other[draw(st.integers(0, len(other))) :]
        elif op == "cut":
            del data[pos:]
    return bytes(data)


def inputs(samples: Sequence[bytes], max_size: int = 512) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, or (more often) a mutated valid sample."""
    return st.binary(max_size=max_size) | mutated(samples) | mutated(samples, steps=12)
