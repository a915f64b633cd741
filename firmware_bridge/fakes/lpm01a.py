"""A fake STM32 X-NUCLEO-LPM01A (PowerShield), after the command reference in mlcommons/tiny
``power_manager_lpm.py`` and serial.md §4.

Wire format as the MLPerf runner parses it (modelled, not captured from hardware):

* host -> board: one command per line (``\\r\\n`` or ``\\n``);
* the prompt ``PowerShield > `` is printed without a newline after every answer, so the next
  answer line reads ``PowerShield > ack htc``; a query's value follows on the same line
  (``PowerShield > ack version 1.0.6``); a refusal is ``PowerShield > error <cmd>`` and then
  ``Error detail: <why>``;
* ``start`` acks, then streams without prompts: values ``MMMM±EE`` (mantissa x 10^exp: amperes
  in ``output current``, joules per bin in ``output energy``), ``per_line`` per line;
  ``TimeStamp: 001s 000ms, buff 00%`` after every second of bins; ``event <n> ris`` after the
  bin in which the D7 line fell (the runner's parser matches ``ris`` although it configures
  ``eventsrc d7 fal``);
* ``stop`` is not acked: ``Acquisition completed`` and the prompt.

``ascii_dec`` is refused above 5 kHz for an infinite acquisition (the firmware's table), and
``bin_hexa`` is not modelled. Config commands need ``htc`` first.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from firmware_bridge.fakes.core import FakeDevice, Faults
from firmware_bridge.fakes.profiles import RENDER_LAG_S, Board, Profile, Shifted

PROMPT = "PowerShield > "
FREQS = {
    "100k": 100000, "50k": 50000, "20k": 20000, "10k": 10000, "5k": 5000, "2k": 2000,
    "1k": 1000, "500": 500, "200": 200, "100": 100, "50": 50, "20": 20, "10": 10, "5": 5,
    "2": 2, "1": 1,
}  # fmt: skip
UNITS = {"u": 1e-6, "m": 1e-3, "k": 1e3, "": 1.0}


def parse_number(text: str) -> float:
    """PowerShield numbers: ``3300m``, ``2m``, ``100u``, ``2-3`` (x10^-3), ``10``."""
    t = text.strip()
    for sign in ("-", "+"):
        head, sep, exp = t.rpartition(sign)
        if sep and head and exp.isdigit() and len(exp) <= 2:
            return float(head) * 10 ** (int(exp) * (-1 if sign == "-" else 1))
    unit = t[-1:] if t[-1:] in ("u", "m", "k") else ""
    return float(t[: len(t) - len(unit)]) * UNITS[unit]


def format_value(x: float) -> str:
    """``6409-07`` for 6.409e-4: four mantissa digits and a signed two-digit exponent."""
    if not x > 0 or not math.isfinite(x):
        return "0000+00"
    e = math.floor(math.log10(x)) - 3
    m = int(round(x / 10**e))
    if m >= 10000:
        m //= 10
        e += 1
    return f"{m:04d}{'-' if e < 0 else '+'}{abs(e):02d}"


@dataclass
class LpmOptions:
    uid: str = "004A00283137510B33383438"
    version: str = "1.0.6"
    per_line: int = 1  # values per data line


class FakeLpm01a(FakeDevice):
    tick_s = 0.01
    baudrate = 3686400

    def __init__(
        self,
        profile: Profile,
        options: Optional[LpmOptions] = None,
        faults: Optional[Faults] = None,
    ) -> None:
        super().__init__(faults)
        self.profile = profile
        self.options = options or LpmOptions()
        self._line = bytearray()
        self.on_boot_state()

    def on_boot_state(self) -> None:
        self.controlled = False
        self.volt = 3.3
        self.freq = 100
        self.acqtime = 10.0
        self.acqmode = "dyn"
        self.output = "current"
        self.fmt = "ascii_dec"
        self.trigsrc = "sw"
        self.eventsrc = ""
        self.pwr = "auto"
        self.acquiring = False
        self.lcd = ["", ""]

    def on_boot(self) -> None:
        self.on_boot_state()
        self._line.clear()
        self.emit(PROMPT.encode())

    # --- commands ---

    def on_bytes(self, data: bytes) -> None:
        for c in data:
            if c == 0x0A:
                line = bytes(self._line).decode("latin-1").strip("\r ")
                self._line.clear()
                if line:
                    self.command(line)
            elif len(self._line) < 256:
                self._line.append(c)

    def _ack(self, cmd: str, value: str = "") -> None:
        self.emit_line(f"ack {cmd}" + (f" {value}" if value else ""))
        if not self.acquiring:
            self.emit(PROMPT.encode())

    def _error(self, cmd: str, detail: str) -> None:
        self.emit_line(f"error {cmd}")
        self.emit_line(f"Error detail: {detail}")
        if not self.acquiring:
            self.emit(PROMPT.encode())

    def command(self, line: str) -> None:
        self.reply_delay()
        words = line.split()
        name, args = words[0], words[1:]
        free = ("help", "echo", "powershield", "version", "htc", "hrc", "status", "range", "stop")
        if name not in free and not self.controlled:
            self._error(line, "board not in host-controlled mode: send 'htc' first")
            return
        if self.acquiring and name not in ("stop", "pwr", "targrst", "status", "echo"):
            self._error(line, "acquisition running: send 'stop' first")
            return
        try:
            handler = getattr(self, "cmd_" + name)
        except AttributeError:
            self._error(line, f"unknown command '{name}'")
            return
        try:
            value = handler(args)
        except (ValueError, IndexError) as exc:
            self._error(line, str(exc) or "invalid argument")
            return
        if value is not False:
            self._ack(line, value or "")

    def cmd_help(self, args: List[str]) -> str:
        return "commands: htc hrc powershield version status volt freq acqtime output format ..."

    def cmd_echo(self, args: List[str]) -> str:
        return " ".join(args)

    def cmd_powershield(self, args: List[str]) -> str:
        return f"PowerShield present {self.options.uid}"

    def cmd_version(self, args: List[str]) -> str:
        return self.options.version

    def cmd_status(self, args: List[str]) -> str:
        return "ok"

    def cmd_range(self, args: List[str]) -> str:
        return "100n 10m" if self.acqmode == "dyn" else "2n 200m"

    def cmd_htc(self, args: List[str]) -> str:
        self.controlled = True
        return ""

    def cmd_hrc(self, args: List[str]) -> str:
        self.controlled = False
        return ""

    def cmd_lcd(self, args: List[str]) -> str:
        index = int(args[0])
        if index not in (1, 2):
            raise ValueError("LCD line must be 1 or 2")
        self.lcd[index - 1] = " ".join(args[1:]).strip('"')[:16]
        return ""

    def cmd_psrst(self, args: List[str]) -> str:
        self.on_boot_state()
        return ""

    def cmd_volt(self, args: List[str]) -> str:
        if args[0] == "get":
            return f"{int(round(self.volt * 1000))}m"
        v = parse_number(args[0])
        if not 1.8 <= v <= 3.3 + 1e-9:
            raise ValueError("voltage out of range [1800m; 3300m]")
        self.volt = v
        return ""

    def cmd_freq(self, args: List[str]) -> str:
        if args[0] not in FREQS:
            raise ValueError("frequency not in {100k, 50k, ..., 2, 1}")
        self.freq = FREQS[args[0]]
        return ""

    def cmd_acqtime(self, args: List[str]) -> str:
        if args[0] in ("inf", "0"):
            self.acqtime = 0.0
            return ""
        t = parse_number(args[0])
        if not 100e-6 <= t <= 100:
            raise ValueError("acquisition time out of range [100u; 100]")
        self.acqtime = t
        return ""

    def cmd_acqmode(self, args: List[str]) -> str:
        if args[0] not in ("dyn", "stat"):
            raise ValueError("acqmode must be dyn or stat")
        self.acqmode = args[0]
        return ""

    def cmd_funcmode(self, args: List[str]) -> str:
        if args[0] not in ("optim", "high"):
            raise ValueError("funcmode must be optim or high")
        return ""

    def cmd_output(self, args: List[str]) -> str:
        if args[0] not in ("current", "energy"):
            raise ValueError("output must be current or energy")
        self.output = args[0]
        return ""

    def cmd_format(self, args: List[str]) -> str:
        if args[0] not in ("ascii_dec", "bin_hexa"):
            raise ValueError("format must be ascii_dec or bin_hexa")
        self.fmt = args[0]
        return ""

    def cmd_trigsrc(self, args: List[str]) -> str:
        if args[0] not in ("sw", "d7"):
            raise ValueError("trigsrc must be sw or d7")
        self.trigsrc = args[0]
        return ""

    def cmd_trigdelay(self, args: List[str]) -> str:
        parse_number(args[0])
        return ""

    def cmd_currthres(self, args: List[str]) -> str:
        parse_number(args[0])
        return ""

    def cmd_eventsrc(self, args: List[str]) -> str:
        if args[0] != "d7" or args[1] not in ("ris", "fal"):
            raise ValueError("eventsrc must be 'd7 ris' or 'd7 fal'")
        self.eventsrc = " ".join(args[:2])
        return ""

    def cmd_pwr(self, args: List[str]) -> str:
        if args[0] == "get":
            return self.pwr
        if args[0] not in ("on", "off", "auto"):
            raise ValueError("pwr must be on, off or auto")
        self.pwr = args[0]
        return ""

    def cmd_pwrend(self, args: List[str]) -> str:
        return ""

    def cmd_targrst(self, args: List[str]) -> str:
        return ""

    def cmd_temp(self, args: List[str]) -> str:
        return "28.5 degc"

    def cmd_autotest(self, args: List[str]) -> str:
        return "ok"

    def cmd_calib(self, args: List[str]) -> str:
        return ""

    def cmd_start(self, args: List[str]) -> object:
        if self.fmt != "ascii_dec":
            raise ValueError("bin_hexa output is not modelled by this fake; use ascii_dec")
        if self.output == "energy" and self.freq > 10000:
            raise ValueError("energy output is limited to 10 kHz")
        if self.freq > 5000 and self.acqtime == 0.0:
            raise ValueError("ascii_dec at more than 5k needs a finite acqtime (<= 1 s at 10k)")
        if self.pwr == "off":
            raise ValueError("target power is off: send 'pwr on' or 'pwr auto'")
        self.acquiring = True  # no prompt after this ack: values start at the line's start
        self._ack("start")
        self._t_start = time.monotonic()
        self._bins = 0
        self._events = 0
        self._pending: List[str] = []
        self._seconds_dropped = 0
        profile = self.profile
        if isinstance(profile, Board):
            profile = Shifted(profile, profile.now())
        self._profile = profile
        return False  # already acked

    def cmd_stop(self, args: List[str]) -> object:
        if self.acquiring:
            self._stream(time.monotonic())
            self._finish()
        else:
            self.emit_line("Acquisition completed")
            self.emit(PROMPT.encode())
        return False

    def _finish(self) -> None:
        self._flush_values(force=True)
        self.acquiring = False
        self.emit_line("Acquisition completed")
        self.emit(PROMPT.encode())

    # --- the stream ---

    def on_tick(self, now: float) -> None:
        if self.acquiring:
            self._stream(now)

    def _flush_values(self, force: bool = False) -> None:
        per = max(1, self.options.per_line)
        while len(self._pending) >= per or (force and self._pending):
            chunk, self._pending = self._pending[:per], self._pending[per:]
            self.emit_line(" ".join(chunk))

    def _stream(self, now: float) -> None:
        f = self.freq
        due = int((now - RENDER_LAG_S - self._t_start) * f)
        if self.acqtime > 0:
            due = min(due, int(round(self.acqtime * f)))
        if due <= self._bins:
            return
        k = np.arange(self._bins, due + 1, dtype=np.float64)
        edges = k / f
        q = self._profile.charge(edges)
        per_bin = np.diff(q)  # A*s in each bin
        if self.faults.noise > 0:
            per_bin = per_bin * (1.0 + self.faults.noise * np.random.default_rng(
                self.rng.getrandbits(32)).standard_normal(per_bin.size))  # fmt: skip
        values = per_bin * self.volt if self.output == "energy" else per_bin * f
        falls = self._profile.edges(edges[0], edges[-1]) if self.eventsrc else []
        fall_bins = [int(e * f) for e in falls]
        for i, value in enumerate(values):
            b = self._bins + i
            second_end = (b + 1) % f == 0
            drop = (
                second_end
                and self.faults.drop_every > 0
                and ((b + 1) // f) % self.faults.drop_every == 0
            )
            if not drop:
                self._pending.append(format_value(float(value)))
            for fb in fall_bins:
                if fb == b:
                    self._flush_values(force=True)
                    self._events += 1
                    self.emit_line(f"event {self._events} ris")
            if second_end:
                self._flush_values(force=True)
                secs = (b + 1) // f
                self.emit_line(f"TimeStamp: {secs:03d}s 000ms, buff 00%")
        self._bins = due
        self._flush_values()
        if self.acqtime > 0 and self._bins >= int(round(self.acqtime * f)):
            self._finish()
