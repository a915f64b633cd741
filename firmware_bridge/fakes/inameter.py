"""A fake halofarm DIY meter (INA219/INA3221 + microcontroller) speaking the halofarm line
protocol v1 -- the same protocol ``firmware_bridge/firmware/halofarm_inameter`` implements on
real hardware; the specification is ``firmware_bridge/firmware/PROTOCOL.md``.

Each channel measures the board's profile scaled by ``ch_scale`` (channel 1 the whole profile,
others fractions of it), with the bus voltage ``mv`` less a small drop; every sample is the
mean over its sample period, quantised to the INA3221's LSBs (8 mV bus; 40 uV / shunt current).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from firmware_bridge.fakes.core import FakeDevice, Faults
from firmware_bridge.fakes.profiles import RENDER_LAG_S, Board, Profile, Shifted

PROTO = 1
MAX_RATE_HZ = 1000


def checksum(body: str) -> str:
    x = 0
    for ch in body.encode("ascii"):
        x ^= ch
    return f"{x:02X}"


def framed(body: str) -> str:
    return f"{body}*{checksum(body)}"


@dataclass
class InaOptions:
    ident: str = "fake-0001"
    chip: str = "ina3221"
    channels: int = 3
    labels: str = "VDD_DUT,VDD_IO,VDD_AUX"
    shunt_uohm: int = 1000000  # 1 ohm: 40 uA steps (0.1 ohm breakouts: 400 uA)
    rate_hz: int = 100
    mv: float = 3300.0
    marker_pin: int = 2
    lap_start_us: int = 0  # micros() at boot (wraps at 2**32)


class FakeInaMeter(FakeDevice):
    tick_s = 0.005

    def __init__(
        self,
        profile: Profile,
        options: Optional[InaOptions] = None,
        faults: Optional[Faults] = None,
    ) -> None:
        super().__init__(faults)
        self.profile = profile
        self.options = options or InaOptions()
        self._cmd = bytearray()
        self._np_rng = np.random.default_rng(self.faults.seed)
        self.on_boot_state()

    def on_boot_state(self) -> None:
        o = self.options
        self.labels: List[str] = (o.labels.split(",") + [f"CH{i + 1}" for i in range(3)])[
            : o.channels
        ]
        self.rate = o.rate_hz
        self.streaming = False
        self.seq = 0
        self._t_boot = time.monotonic()
        self.sent_lines = 0

    def on_boot(self) -> None:
        self.on_boot_state()
        self._cmd.clear()
        self.emit_line(f"m-boot-inameter-proto-{PROTO}")
        self.emit_line("m-ready")

    def micros(self, at: Optional[float] = None) -> int:
        t = time.monotonic() if at is None else at
        return (self.options.lap_start_us + int((t - self._t_boot) * 1e6)) % (1 << 32)

    # --- commands: EEMBC style, but CR/LF are ignored rather than becoming part of a command ---

    def on_bytes(self, data: bytes) -> None:
        for c in data:
            if c == ord("%"):
                command = bytes(self._cmd).decode("latin-1").strip()
                self._cmd.clear()
                self.command(command)
            elif c in (0x0D, 0x0A):
                continue
            elif len(self._cmd) < 32:
                self._cmd.append(c)

    def command(self, command: str) -> None:
        self.reply_delay()
        words = command.split()
        name = words[0] if words else ""
        o = self.options
        if name == "name":
            self.emit_line(f"m-name-inameter-[{o.ident}]")
        elif name == "info":
            self.emit_line(
                f"m-info-[proto={PROTO},fw=0.1.0-fake,chip={o.chip},channels={o.channels},"
                f"rate_hz={self.rate},max_rate_hz={MAX_RATE_HZ},marker_pin={o.marker_pin}]"
            )
            for i, label in enumerate(self.labels):
                self.emit_line(f"m-chan-[{i + 1},{label},{o.shunt_uohm}]")
        elif name == "rate":
            hz = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
            if not 1 <= hz <= MAX_RATE_HZ:
                self.emit_line(f"e-[rate must be 1..{MAX_RATE_HZ} Hz]")
            elif self.streaming:
                self.emit_line("e-[stop the stream before changing the rate]")
            else:
                self.rate = hz
                self.emit_line(f"m-rate-{hz}")
        elif name == "label" and len(words) == 3 and words[1].isdigit():
            ch = int(words[1])
            if 1 <= ch <= len(self.labels):
                self.labels[ch - 1] = words[2][:16]
                self.emit_line(f"m-chan-[{ch},{self.labels[ch - 1]},{o.shunt_uohm}]")
            else:
                self.emit_line(f"e-[no channel {ch}]")
        elif name == "start":
            if not self.streaming:
                self.streaming = True
                self._t0 = time.monotonic()
                self._k = 0
                profile = self.profile
                if isinstance(profile, Board):
                    profile = Shifted(profile, profile.now())
                self._profile = profile
            self.emit_line(f"m-started-{self.micros(self._t0)}")
        elif name == "stop":
            if self.streaming:
                self.on_tick(time.monotonic())
            self.streaming = False
            self.emit_line(f"m-stopped-{self.sent_lines}")
        elif name == "mark" and len(words) == 2 and words[1].isdigit():
            if self.streaming:
                self._stream_line(f"E,{self.seq},{self.micros()},mark,{int(words[1])}")
            self.emit_line("m-marked")
        else:
            self.emit_line(f"e-[Unknown command: {command}]")
        self.emit_line("m-ready")

    def _stream_line(self, body: str) -> None:
        line = framed(body)
        if self.faults.garbage > 0 and self.rng.random() < self.faults.garbage:
            # Line noise inside a record: its checksum no longer matches.
            i = self.rng.randrange(2, len(line) - 3)
            line = line[:i] + chr(self.rng.choice(b"#%&?@~")) + line[i + 1 :]
        self.emit((line + "\r\n").encode("latin-1"))
        self.seq = (self.seq + 1) % 65536
        self.sent_lines += 1

    def on_tick(self, now: float) -> None:
        if not self.streaming:
            return
        period = 1.0 / self.rate
        due = int((now - RENDER_LAG_S - self._t0) / period)
        if due <= self._k:
            return
        k = np.arange(self._k, due + 1, dtype=np.float64)
        times = k * period
        amps = np.diff(self._profile.charge(times)) / period
        edges = self._profile.edges(times[0], times[-1])
        o = self.options
        lsb_ua = 40.0 / (o.shunt_uohm / 1e6)  # 40 uV shunt LSB / R
        for i in range(amps.size):
            t_end = self._t0 + times[i + 1]
            for e in [e for e in edges if times[i] <= e < times[i + 1]]:
                self._stream_line(f"E,{self.seq},{self.micros(self._t0 + e)},gpio,{o.marker_pin}")
            drop = self.faults.drop_every > 0 and (self._k + i + 1) % self.faults.drop_every == 0
            for ch in range(len(self.labels)):
                scale = 1.0 if ch == 0 else 0.25 / ch
                ua = amps[i] * 1e6 * scale
                if self.faults.noise > 0:
                    ua *= 1.0 + self.faults.noise * float(self._np_rng.standard_normal())
                ua = round(ua / lsb_ua) * lsb_ua
                mv = round((o.mv - ua * 1e-3 * 0.05) / 8.0) * 8.0
                body = f"P,{self.seq},{self.micros(t_end)},{ch + 1},{int(mv)},{int(round(ua))}"
                if drop:
                    self.seq = (self.seq + 1) % 65536  # lost on the wire: the seq shows it
                    continue
                self._stream_line(body)
        self._k = due
