"""The MLPerf Tiny / EEMBC DUT protocol as data: building commands that survive the firmware's
parser and reading its replies (serial.md §1; mlcommons/tiny ``internally_implemented.cpp``).
Pure functions and dataclasses; the driver that talks is :mod:`firmware_bridge.dut`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Pattern

from firmware_bridge.errors import CommandTooLong, ProtocolError

TERMINATOR = b"%"
# EE_CMD_SIZE: the firmware keeps the first 80 characters and silently loses the rest.
CMD_SIZE = 80
# The interface board's own buffer: 64 characters is what its 26-byte db chunks imply
# ("dut db " + 52 hex digits = 59); an assumption, see fakes/iface.py.
IFACE_CMD_SIZE = 64
DB_CHUNK_DIRECT = 31  # bytes per db command, as the official runner sends them
DB_CHUNK_IFACE = 26
MAX_DB_INPUT_SIZE = 96 * 96 * 3
LAP_WRAP = 1 << 32  # m-lap-us is an unsigned long of microseconds on 32-bit MCUs
READY = "m-ready"
IFACE_PREFIX = "[dut]: "

# Numbers are bounded (m-lap-us is a 32-bit counter): a runaway digit string does not match,
# rather than reaching int(), which refuses more than 4300 digits.
NAME_RE = re.compile(r"^m-name-dut-\[([^\]]+)\]$")
PROFILE_RE = re.compile(r"^m-profile-\[([^\]]+)\]$")
MODEL_RE = re.compile(r"^m-model-\[([^\]]+)\]$")
LAP_RE = re.compile(r"^m-lap-us-(\d{1,10})$")
RESULTS_RE = re.compile(r"^m-results-\[(.*)\]$")
EXPECTING_RE = re.compile(r"^m-\[Expecting (\d{1,10}) bytes\]$")
WARMUP_RE = re.compile(r"^m-warmup-start-(\d{1,10})$")
INFER_START_RE = re.compile(r"^m-infer-start-(\d{1,10})$")
MODE_RE = re.compile(r"^m-timestamp-mode-(\w+)$")
BUFFER_RE = re.compile(r"^m-buffer-((?:[0-9a-fA-F]{2}-?)+)$")


def build_command(text: str, limit: int = CMD_SIZE) -> bytes:
    """``text`` + ``%`` as bytes, refusing what the firmware would mangle: CR/LF and ``%``
    inside (they start or end another command) and more than ``limit`` characters (the rest
    would be lost without an error)."""
    if "%" in text:
        raise ValueError(f"a DUT command cannot contain '%': {text!r}")
    if "\r" in text or "\n" in text:
        raise ValueError(
            f"a DUT command cannot contain CR/LF (they would become part of the next "
            f"command): {text!r}"
        )
    if len(text) > limit:
        raise CommandTooLong(
            f"command of {len(text)} characters exceeds the DUT's {limit}-character buffer "
            f"(the excess would be silently lost): {text[:40]!r}..."
        )
    try:
        return text.encode("ascii") + TERMINATOR
    except UnicodeEncodeError:
        raise ValueError(f"a DUT command must be ASCII: {text!r}") from None


def db_commands(data: bytes, chunk: int = DB_CHUNK_DIRECT) -> List[str]:
    """``db <hex>`` commands loading ``data`` in ``chunk``-byte pieces."""
    if not 1 <= chunk <= (CMD_SIZE - 3) // 2:
        raise CommandTooLong(f"db chunks must hold 1..{(CMD_SIZE - 3) // 2} bytes, got {chunk}")
    return ["db " + data[i : i + chunk].hex() for i in range(0, len(data), chunk)]


def message(line: str) -> Optional[str]:
    """The ``m-``/``e-`` message in a received line, or None for free text. Garbage in front
    (line noise, a boot-loader's bytes) is skipped: the message starts at the first ``m-`` or
    ``e-`` after only non-printable or non-alphanumeric junk."""
    printable = "".join(ch for ch in line if " " <= ch <= "~")
    best = -1
    for tag in ("m-", "e-"):
        i = printable.find(tag)
        if i >= 0 and (best < 0 or i < best):
            best = i
    if best < 0:
        return None
    return printable[best:].rstrip()


@dataclass
class Reply:
    """What one command produced, up to and including ``m-ready``."""

    command: str
    messages: List[str] = field(default_factory=list)  # m-/e- messages, cleaned
    text: List[str] = field(default_factory=list)  # other (free text) lines
    errors: List[str] = field(default_factory=list)  # e-[...] contents
    seconds: float = 0.0
    arrival_ns: List[int] = field(default_factory=list)  # host time each message was read

    def find(self, pattern: Pattern[str]) -> Optional[re.Match]:  # type: ignore[type-arg]
        for m in self.messages:
            hit = pattern.match(m)
            if hit:
                return hit
        return None

    def find_all(self, pattern: Pattern[str]) -> List[re.Match]:  # type: ignore[type-arg]
        return [h for h in (pattern.match(m) for m in self.messages) if h]


class ErrorJoiner:
    """``e-[`` messages whose text holds a line break arrive split over lines (a CR/LF sent
    after ``%`` becomes part of the next command, which the firmware then echoes in its error):
    collect the pieces until the closing ``]``."""

    def __init__(self) -> None:
        self.pending: Optional[str] = None

    def feed(self, line: str, msg: Optional[str]) -> Optional[str]:
        """The complete error text when ``line`` completes one, else None."""
        if self.pending is not None:
            if msg == READY or (msg is not None and msg.endswith(READY)):
                done, self.pending = self.pending, None
                return done  # never closed: give what we have
            self.pending += "\n" + line
            if line.rstrip().endswith("]"):
                done, self.pending = self.pending, None
                return done[3:].rstrip()[:-1]
            return None
        if msg is not None and msg.startswith("e-["):
            if msg.endswith("]"):
                return msg[3:-1]
            self.pending = msg
        return None


def parse_results(body: str) -> List[float]:
    """``0.000,0.992,`` -> [0.0, 0.992]: empty items (a trailing comma, spaces) are dropped."""
    out = []
    for item in body.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(float(item))
        except ValueError:
            raise ProtocolError(f"bad value {item!r} in m-results-[{body}]") from None
    return out


def lap_delta_us(t0: int, t1: int) -> int:
    """Microseconds from lap ``t0`` to lap ``t1`` across a 32-bit wrap of the counter."""
    return (t1 - t0) % LAP_WRAP
