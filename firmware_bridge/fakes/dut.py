"""A fake MLPerf Tiny / EEMBC device under test, byte for byte after the reference firmware
(mlcommons/tiny ``benchmark/api/internally_implemented.cpp``; serial.md §1).

Faithful in the details drivers trip over:

* the command buffer is ``EE_CMD_SIZE + 1`` = 81 chars; the 81st and later characters all land
  on the last position, so anything past 80 chars is lost (a 39-byte ``db`` chunk has an odd
  number of hex digits left: ``e-[Insufficent number of hex digits]``, sic);
* ``%`` ends a command and nothing else does: a CR/LF after it becomes the start of the next
  command (``e-[Unknown command: \\r\\nname]``, which arrives as two lines);
* tokens are split with ``strtok(" ")`` and numbers read with ``atoi``;
* ``infer N`` without W runs **10** warmups; ``m-results-[...]`` prints ``%0.3f`` values, with a
  trailing comma when ``trailing_comma`` is set (the empty reference's habit);
* ``db print`` ends with an extra empty line when the size is not a multiple of 8;
* ``db load N`` above ``MAX_DB_INPUT_SIZE`` prints a warning that is not an ``m-`` line and ends
  with ``\\n`` only;
* every command ends with ``m-ready``; ``m-lap-us-<n>`` is a 32-bit microsecond counter
  (it wraps: start it near 2**32 with ``lap_start_us``);
* energy mode (``energy=1``): ``th_timestamp()`` pulses the GPIO (seen by meters on the same
  board) and prints nothing.

An empty command (a bare ``%``) makes the reference firmware call ``strncmp(NULL, ...)``
(undefined behaviour: a crash on most MCUs); this fake answers ``e-[Unknown command: (null)]``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import List, Optional

from firmware_bridge.fakes.core import FakeDevice, Faults
from firmware_bridge.fakes.profiles import Board, board

EE_CMD_SIZE = 80
MAX_DB_INPUT_SIZE = 96 * 96 * 3
FW_VERSION = "ULPMark for tinyML Firmware V0.0.1"
CLASSES = {"ic01": 10, "kws01": 12, "vww01": 2, "ad01": 1, "strww01": 2}


def atoi(text: str) -> int:
    """C ``atoi``: optional whitespace and sign, then digits; 0 when there are none."""
    s = text.lstrip(" \t\n\v\f\r")
    sign = 1
    if s[:1] in ("+", "-"):
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    digits = ""
    for ch in s:
        if not ch.isdigit():
            break
        digits += ch
    return sign * int(digits) if digits else 0


def strtok(text: str) -> List[str]:
    return [t for t in text.split(" ") if t]


@dataclass
class DutOptions:
    """The fake's firmware build (each field is a URL parameter of ``fake-dut://<model>``)."""

    model: str = "ic01"
    name: str = "halofarm fake DUT"  # TH_VENDOR_NAME_STRING
    infer_us: float = 2000.0  # one inference
    jitter: float = 0.0  # relative standard deviation of the inference time
    energy: bool = False  # EE_CFG_ENERGY_MODE
    trailing_comma: bool = False
    lap_start_us: int = 0  # the microsecond counter's value at boot
    idle_ma: float = 2.0
    active_ma: float = 12.0
    board: str = ""  # share the supply/GPIO with meters on this board name


class FakeDut(FakeDevice):
    """The EEMBC monitor and a pretend model."""

    def __init__(self, options: Optional[DutOptions] = None, faults: Optional[Faults] = None):
        super().__init__(faults)
        self.options = options or DutOptions()
        o = self.options
        self.board: Board = (
            board(o.board, o.idle_ma, o.active_ma) if o.board else Board(o.idle_ma, o.active_ma)
        )
        self.commands: List[str] = []  # every command the parser saw, for tests
        self._cmd = bytearray(EE_CMD_SIZE + 1)
        self._pos = 0
        self._t_boot = time.monotonic()
        self.buffer = bytearray()
        self.buff_size = 0
        self.buff_pos = 0
        self.results_vector: List[float] = []

    # --- boot and clock ---

    def on_boot(self) -> None:
        self._pos = 0
        self._t_boot = time.monotonic()
        self.buffer = bytearray(MAX_DB_INPUT_SIZE)
        self.buff_size = self.buff_pos = 0
        self.results_vector = [0.0] * CLASSES.get(self.options.model, 2)
        mode = "energy" if self.options.energy else "performance"
        self.emit_line(f"m-timestamp-mode-{mode}")
        self.th_timestamp()
        self.emit_line("m-init-done")
        self.emit_line("m-ready")

    def lap_us(self, at: Optional[float] = None) -> int:
        t = time.monotonic() if at is None else at
        elapsed = int((t - self._t_boot) * 1e6)
        return (self.options.lap_start_us + elapsed) % (1 << 32)

    def th_timestamp(self, at: Optional[float] = None) -> None:
        """At monotonic time ``at`` (default now): a lap line, or a GPIO pulse in energy mode."""
        at = time.monotonic() if at is None else at
        if self.options.energy:
            self.board.pulse(at - self.board.t0)
        else:
            self.emit_line(f"m-lap-us-{self.lap_us(at)}")

    # --- the UART ISR: ee_serial_callback ---

    def on_bytes(self, data: bytes) -> None:
        for c in data:
            if c == ord("%"):
                command = bytes(self._cmd[: self._pos]).decode("latin-1")
                self._pos = 0
                self.parse(command)
                if not self.plugged:
                    return
            else:
                self._cmd[self._pos] = c
                self._pos = EE_CMD_SIZE if self._pos >= EE_CMD_SIZE else self._pos + 1

    # --- ee_serial_command_parser_callback ---

    def parse(self, command: str) -> None:
        self.commands.append(command)
        self.reply_delay()
        tokens = strtok(command)
        tok = tokens[0] if tokens else None
        if tok == "name":
            self.emit_line(f"m-name-dut-[{self.options.name}]")
        elif tok == "timestamp":
            self.th_timestamp()
        elif tok is not None and self.profile_parse(tok, tokens[1:]):
            pass
        else:
            self.emit_line(f"e-[Unknown command: {'(null)' if tok is None else tok}]")
        if self.plugged:
            self.emit_line("m-ready")

    def profile_parse(self, tok: str, args: List[str]) -> bool:
        if tok == "profile":
            self.emit_line(f"m-profile-[{FW_VERSION}]")
            self.emit_line(f"m-model-[{self.options.model}]")
        elif tok == "help":
            for line in HELP:
                self.emit_line(line)
        elif tok == "db":
            self.buffer_parse(args)
        elif tok == "infer":
            n, w = 1, 10  # the firmware's defaults; its help text claims W=0
            if args:
                i = atoi(args[0])
                if i <= 0:
                    self.emit_line("e-[Inference iterations must be >0]")
                    return True
                n = i
                if len(args) > 1:
                    i = atoi(args[1])
                    if i < 0:
                        self.emit_line("e-[Inference warmup must be >=0]")
                        return True
                    w = i
            self.ee_infer(n, w)
        elif tok == "results":
            self.th_results()
        else:
            return False
        return True

    def buffer_parse(self, args: List[str]) -> None:
        if not args:
            self.emit_line("e-[Command 'db' requires a subcommand]")
        elif args[0] == "load":
            if len(args) < 2:
                self.emit_line("e-[Command 'db load' requires the # of bytes]")
                return
            size = atoi(args[1])
            if size <= 0:  # (size_t)atoi: 0 is refused, negatives become huge
                if size == 0:
                    self.emit_line("e-[Command 'db load' must be >0 bytes]")
                    return
                size = size % (1 << 32)
            self.buff_size = size
            self.buff_pos = 0
            if size > MAX_DB_INPUT_SIZE:
                self.emit(
                    f"Supplied buffer size {size} exceeds maximum of {MAX_DB_INPUT_SIZE}\n".encode()
                )
            else:
                self.emit_line(f"m-[Expecting {size} bytes]")
        elif args[0] == "print":
            self.db_print()
        else:
            hexdigits = args[0][:EE_CMD_SIZE]
            if len(hexdigits) % 2:
                self.emit_line("e-[Insufficent number of hex digits]")
                return
            for i in range(0, len(hexdigits), 2):
                pair = hexdigits[i : i + 2]
                try:
                    if not all(c in "0123456789abcdefABCDEF" for c in pair):
                        raise ValueError
                    value = int(pair, 16)
                except ValueError:
                    self.emit_line(f"e-[Invalid hex digit '{pair}']")
                    return
                if self.buff_pos < len(self.buffer):
                    self.buffer[self.buff_pos] = value
                self.buff_pos += 1
                if self.buff_pos == self.buff_size:
                    self.emit_line("m-load-done")
                    return

    def db_print(self) -> None:
        out = b""
        size = min(self.buff_size, len(self.buffer))
        i = 0
        while i < size:
            if i % 8 == 0:
                out += b"m-buffer-"
            out += b"%02x" % self.buffer[i]
            out += b"\r\n" if (i + 1) % 8 == 0 or i + 1 == size else b"-"
            i += 1
        if i % 8 != 0:
            out += b"\r\n"  # the reference's extra empty line
        self.emit(out)

    # --- inference ---

    def _duration(self, count: int) -> float:
        per = self.options.infer_us / 1e6
        if self.options.jitter > 0:
            per *= max(0.05, 1.0 + self.rng.gauss(0.0, self.options.jitter))
        return per * count

    def _compute(self, start: float, seconds: float) -> bool:
        """Compute from monotonic ``start`` for ``seconds`` (the board draws more current);
        False if the device was unplugged meanwhile. The timeline is the planned one, as on a
        real MCU: a late wake-up of this thread does not stretch the measured interval."""
        b0 = start - self.board.t0
        self.board.busy(b0, b0 + seconds)
        ok = self.wait(start + seconds - time.monotonic())
        if not ok:
            self.board.cut(self.board.now())
        return ok

    def ee_infer(self, n: int, w: int) -> None:
        nth = self.count("infer")
        if self.fault_due(self.faults.error_at, "infer", nth):
            self.emit_line("e-[th_infer() failed: injected fault]")
            return
        if self.fault_due(self.faults.unplug_at, "infer", nth):
            half = (n + w) * self.options.infer_us / 1e6 / 2
            self._schedule_unplug(half)
        self.emit_line(f"m-warmup-start-{w}")
        if w and not self._compute(time.monotonic(), self._duration(w)):
            return
        self.emit_line("m-warmup-done")
        self.emit_line(f"m-infer-start-{n}")
        start = time.monotonic()
        seconds = self._duration(n)
        self.th_timestamp(start)
        if self.options.energy:
            # The closing pulse is known now; registered ahead so no meter renders past it
            # before it exists (an unplug cuts it away again).
            self.th_timestamp(start + seconds)
        if not self._compute(start, seconds):
            return
        if not self.options.energy:
            self.th_timestamp(start + seconds)
        self.emit_line("m-infer-done")
        self._compute_results()
        self.th_results()

    def _schedule_unplug(self, after_s: float) -> None:
        import threading

        timer = threading.Timer(after_s, self.unplug)
        timer.daemon = True
        timer.start()

    def _compute_results(self) -> None:
        """A deterministic 'softmax' of the loaded input, so a test can see the input arrive."""
        k = len(self.results_vector)
        data = self.buffer[: min(self.buff_pos, self.buff_size)]
        if k == 1:
            self.results_vector = [float(sum(data) % 1000) / 1000.0]
            return
        scores = [float(sum(data[i::k])) / 255.0 for i in range(k)] if data else [0.0] * k
        top = max(scores)
        exps = [math.exp(s - top) for s in scores]
        total = sum(exps)
        self.results_vector = [e / total for e in exps]

    def th_results(self) -> None:
        values = ",".join(f"{v:0.3f}" for v in self.results_vector)  # the firmware's %0.3f
        comma = "," if self.options.trailing_comma else ""
        self.emit_line(f"m-results-[{values}{comma}]")


HELP = [
    FW_VERSION,
    "",
    "help         : Print this information",
    "name         : Print the name of the device",
    "timestsamp   : Generate a timetsamp",
    "db SUBCMD    : Manipulate a generic byte buffer",
    "  load N     : Allocate N bytes and set load counter",
    "  db HH[HH]* : Load 8-bit hex byte(s) until N bytes",
    "  print [N=16] [offset=0]",
    "             : Print N bytes at offset as hex",
    "infer N [W=0]: Load input, execute N inferences after W warmup loops",
    "results      : Return the result fp32 vector",
]
