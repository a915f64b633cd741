"""STM32 X-NUCLEO-LPM01A (PowerShield) over its virtual COM port (serial.md §4), driven as the
MLPerf Tiny runner drives it: host control, ASCII decimal output, energy per 1 ms bin, D7
falling edges as timestamp events.

The answer to a command is the line ``ack <command>[ <value>]`` (after the prompt
``PowerShield > ``, which is stripped), or ``error <command>`` followed by ``Error detail:``.
Data lines hold ``MMMM±EE`` values (mantissa x 10^exp; joules per bin in energy output, amperes
in current output); ``TimeStamp: 001s 000ms, buff 00%`` closes every second and lets the driver
count bins the board dropped (expected: ``freq`` per second); ``event <n> ris|fal`` marks a D7
edge after the bin it fell in. ``stop`` is answered with ``Acquisition completed``.

Setup never switches the DUT's power off unless ``power_cycle`` is asked for: the DUT may be the
board we are measuring. The runner's "Power Manager did not acknowledge" failure is stale
output from a previous session, which the transport flushes at connect.
"""

from __future__ import annotations

import re
import time
from typing import Any, List, Optional

from firmware_bridge.errors import MeterError
from firmware_bridge.meters.base import LineSplitter, Meter
from firmware_bridge.transcript import Transcript

PROMPT = "PowerShield > "
VALUE_RE = re.compile(r"(\d{4})([+-])(\d{2})")
# Seconds bounded: a runaway digit string is not a timestamp (and int() refuses > 4300 digits).
TIMESTAMP_RE = re.compile(r"TimeStamp:[ ><]?(\d{1,9})s (\d+)ms, buff (\d+)%")
EVENT_RE = re.compile(r"event (\d+) (ris|fal)")
FREQS = {
    "100k": 100000, "50k": 50000, "20k": 20000, "10k": 10000, "5k": 5000, "2k": 2000,
    "1k": 1000, "500": 500, "200": 200, "100": 100, "50": 50, "20": 20, "10": 10, "5": 5,
    "2": 2, "1": 1,
}  # fmt: skip


def parse_values(line: str) -> List[float]:
    return [
        int(m) * 10.0 ** (int(e) * (-1 if s == "-" else 1)) for m, s, e in VALUE_RE.findall(line)
    ]


class Lpm01a(Meter):
    kind = "lpm01a"
    default_baud = 3686400

    def __init__(
        self,
        url: str,
        rail: str = "VOUT",
        voltage_mv: int = 3300,
        freq: str = "1k",
        output: str = "energy",
        acqmode: str = "dyn",
        power_cycle: bool = False,
        events: bool = True,
        trace: Optional[Transcript] = None,
        **kwargs: Any,
    ) -> None:
        if not 1800 <= voltage_mv <= 3300:
            raise ValueError(f"LPM01A voltage must be 1800..3300 mV, got {voltage_mv}")
        if freq not in FREQS:
            raise ValueError(f"LPM01A freq must be one of {', '.join(FREQS)}")
        if FREQS[freq] > 5000:
            raise ValueError("ascii_dec streams at most 5 kHz for unlimited time; use freq <= 5k")
        if output not in ("energy", "current"):
            raise ValueError("LPM01A output must be 'energy' or 'current'")
        super().__init__(url, [rail], trace=trace, **kwargs)
        self.voltage_mv = voltage_mv
        self.freq = freq
        self.rate = FREQS[freq]
        self.output = output
        self.acqmode = acqmode
        self.power_cycle = power_cycle
        self.use_events = events
        self._lines = LineSplitter()
        self._stream_reset()

    def _stream_reset(self) -> None:
        self._bins = 0  # bins of this stream, lost ones included
        self._second_bins = 0  # bins since the last TimeStamp line
        self._seconds = 0

    def reset_decoder(self) -> None:
        self._lines = LineSplitter()
        self._stream_reset()

    # --- commands ---

    def command(self, cmd: str, timeout_s: float = 2.0) -> str:
        """Send one command; the value after ``ack <cmd>`` (may be ""). Raises
        :class:`MeterError` with the board's ``Error detail``."""
        self.drain_replies()
        self.transport.write(cmd.encode("latin-1") + b"\r\n")
        line, _ = self.wait_reply(
            lambda s: s.startswith(("ack " + cmd, "error " + cmd)), timeout_s, f"'{cmd}'"
        )
        if line.startswith("error"):
            try:
                detail, _ = self.wait_reply(lambda s: s.startswith("Error detail"), 1.0, "detail")
                detail = detail.partition(":")[2].strip() or "no detail given"
            except MeterError:
                detail = "no detail given"
            raise MeterError(f"LPM01A at {self.url} refused '{cmd}': {detail}")
        return line[len("ack " + cmd) :].strip()

    def setup(self) -> None:
        self.transport.set_sink(self._on_data)
        self.transport.write(b"\r\n")  # end a half-typed line left by someone else
        time.sleep(0.05)
        self.drain_replies()
        self.command("htc")
        present = self.command("powershield")
        version = self.command("version")
        if self.power_cycle:
            self.command("pwr off")
        for cmd in (
            f"volt {self.voltage_mv}m",
            f"acqmode {self.acqmode}",
            "acqtime inf",
            "trigdelay 0",
            "trigsrc sw",
            "eventsrc d7 fal",
            f"output {self.output}",
            "format ascii_dec",
            f"freq {self.freq}",
            "pwr on nostatus",
        ):
            self.command(cmd)
        self.info.identity = present
        self.info.firmware = version
        self.info.rate_hz = float(self.rate)
        self.info.settings = {
            "voltage_mv": self.voltage_mv,
            "freq": self.freq,
            "output": self.output,
            "acqmode": self.acqmode,
            "format": "ascii_dec",
            "events": "D7 falling edges",
            "range": "100 nA - 10 mA (dyn), 2 nA - 200 mA (stat); see the ST manual",
        }

    def _start(self) -> None:
        self._stream_reset()
        self.command("start")

    def _stop(self) -> None:
        self.drain_replies()
        self.transport.write(b"stop\r\n")
        self.wait_reply(lambda s: "Acquisition completed" in s, 3.0, "'stop'")

    def release(self) -> None:
        try:
            self.command("hrc")
        except MeterError:
            pass

    # --- the stream (reader thread) ---

    def _on_data(self, data: bytes, t_ns: int) -> None:
        bins = 0
        energy = 0.0
        dropped = 0
        bad = 0
        last_a: Optional[float] = None
        events = []
        volts = self.voltage_mv / 1000.0
        before = self.energy_now()[0]
        for raw in self._lines.feed(data):
            line = raw[len(PROMPT) :] if raw.startswith(PROMPT) else raw
            line = line.strip()
            if not line:
                continue
            values = parse_values(line) if self.streaming else []
            if values and VALUE_RE.sub("", line).strip(" ,;\t") == "":
                for v in values:
                    e = v if self.output == "energy" else v * volts / self.rate
                    energy += e
                    last_a = (v / volts * self.rate) if self.output == "energy" else v
                bins += len(values)
                self._bins += len(values)
                self._second_bins += len(values)
                continue
            m = TIMESTAMP_RE.search(line)
            if m:
                seconds = int(m.group(1))
                expected = (seconds - self._seconds) * self.rate
                lost = expected - self._second_bins
                if lost > 0 and self._second_bins:
                    # Fill the lost bins with this second's mean: counted, not silent.
                    energy += lost * (energy / bins if bins else 0.0)
                    self._bins += lost
                    dropped += lost
                self._seconds = seconds
                self._second_bins = 0
                continue
            m = EVENT_RE.search(line)
            if m:
                events.append((self._bins, energy, f"d7-{m.group(2)}"))
                continue
            if values:
                bad += 1  # a value line with junk in it: not trusted
                continue
            self.replies.put(line)
        if bins or dropped:
            self._commit(
                bins,
                self._bins / self.rate,
                [energy],
                t_ns,
                dropped=dropped,
                bad=bad,
                mv=[float(self.voltage_mv)],
                ma=[None if last_a is None else last_a * 1000.0],
            )
        elif bad:
            self._bad_data(bad)
        for index, at, source in events:
            self._event(index, index / self.rate, source, [before + at])
