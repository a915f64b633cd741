"""A fake Nordic Power Profiler Kit II, after IRNAS/ppk2-api-python and m-mcgowan/ppk2-python
(serial.md §5).

Host -> device: single-byte opcodes with fixed argument bytes (``0x19`` metadata, ``0x11 m``
mode, ``0x0D b1 b2`` source voltage, ``0x0C p`` DUT power, ``0x06``/``0x07`` start/stop,
``0x15``/``0x16`` spike filter, ``0x20`` reset). Device -> host: the metadata as ``key: value``
lines ending ``END``, and while measuring a stream of 4-byte little-endian words at 100 kS/s:

    bits 0-13 ADC, 14-16 range (0-4), 18-23 sample counter (+1 per sample, mod 64),
    24-31 the eight logic inputs

Each word's current is the mean of the profile over its 10 us bin, encoded by inverting the
calibration formula of the metadata (``GS = 0`` here, so it is linear), in the lowest range that
holds it -- as the hardware auto-ranges. The timestamp GPIO of a fake DUT on the same board
appears on logic input ``marker_pin``.

Faults: ``noise`` (relative, per sample), ``drop_every=N`` (every N-th 5 ms block loses 16..48
samples: a host overrun; the counter skips them, as on the real device), ``garbage`` (probability
per block of 1-3 stray bytes, which shifts the word alignment).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from firmware_bridge.fakes.core import FakeDevice, Faults
from firmware_bridge.fakes.profiles import RENDER_LAG_S, Board, Profile, Shifted

RATE = 100_000
ADC_MULT = 1.8 / 163840
# Calibration of this fake unit (plausible values; R as nRF Connect's defaults).
CAL: Dict[str, List[float]] = {
    "R": [1031.64, 101.65, 10.15, 0.94, 0.043],
    "GS": [0.0, 0.0, 0.0, 0.0, 0.0],
    "GI": [1.0, 0.9962, 1.0031, 0.9987, 1.012],
    "O": [61.3, 48.1, 52.7, 59.0, 64.2],
    "S": [0.0, 0.0, 0.0, 0.0, 0.0],
    "I": [0.0, 0.0, 0.0, 0.0, 0.0],
    "UG": [1.0, 1.0, 1.0, 1.0, 1.0],
}


def metadata_text(vdd_mv: int, hw: int = 9173, ia: int = 56) -> str:
    lines = ["Calibrated: 0"]
    for key in ("R", "GS", "GI", "O", "S", "I", "UG"):
        lines += [f"{key}{k}: {v!r}" for k, v in enumerate(CAL[key])]
    lines += [f"VDD: {vdd_mv}", f"HW: {hw}", "mode: 2", f"IA: {ia}", "END"]
    return "\n".join(lines) + "\n"


def encode_current(amps: np.ndarray, vdd_mv: float) -> np.ndarray:
    """(raw 14-bit ADC, range) words' low 17 bits for each current, auto-ranged."""
    r = np.asarray(CAL["R"])
    gi = np.asarray(CAL["GI"])
    o = np.asarray(CAL["O"])
    s = np.asarray(CAL["S"])
    i0 = np.asarray(CAL["I"])
    ug = np.asarray(CAL["UG"])
    # x = (I/UG - (S*V + I0)) / GI ; adc4 = x * R / ADC_MULT + O ; raw = adc4 / 4
    x = (amps[:, None] / ug[None, :] - (s * vdd_mv / 1000.0 + i0)[None, :]) / gi[None, :]
    raw = np.rint((x * r[None, :] / ADC_MULT + o[None, :]) / 4.0)
    fits = raw <= 16383 * 0.92  # keep headroom, as the hardware switches early
    rng = np.where(fits.any(axis=1), fits.argmax(axis=1), 4)
    chosen = raw[np.arange(amps.size), rng]
    chosen = np.clip(chosen, 0, 16383).astype(np.uint32)
    return chosen | (rng.astype(np.uint32) << 14)


@dataclass
class Ppk2Options:
    marker_pin: int = 0
    vdd_mv: int = 3300


class FakePpk2(FakeDevice):
    tick_s = 0.005

    def __init__(
        self,
        profile: Profile,
        options: Optional[Ppk2Options] = None,
        faults: Optional[Faults] = None,
    ) -> None:
        super().__init__(faults)
        self.profile = profile
        self.options = options or Ppk2Options()
        self._np_rng = np.random.default_rng(self.faults.seed)
        self._args: List[int] = []
        self._op = 0
        self.on_boot_state()

    def on_boot_state(self) -> None:
        self.vdd_mv = self.options.vdd_mv
        self.mode = 0
        self.dut_power = False
        self.measuring = False
        self.counter = 0
        self.samples_sent = 0
        self.samples_dropped = 0
        self.blocks = 0

    def on_boot(self) -> None:
        self.on_boot_state()
        self._args.clear()
        self._op = 0

    ARGS = {0x11: 1, 0x0D: 2, 0x0C: 1, 0x25: 5, 0x01: 3, 0x02: 1, 0x03: 1, 0x04: 1, 0x05: 0}

    def on_bytes(self, data: bytes) -> None:
        for c in data:
            if self._op:
                self._args.append(c)
                if len(self._args) >= self.ARGS[self._op]:
                    self.opcode(self._op, self._args)
                    self._op, self._args = 0, []
            elif self.ARGS.get(c, 0) > 0:
                self._op = c
            else:
                self.opcode(c, [])

    def opcode(self, op: int, args: List[int]) -> None:
        self.reply_delay()
        if op == 0x19:
            self.emit(metadata_text(self.vdd_mv).encode())
        elif op == 0x11:
            self.mode = args[0]
        elif op == 0x0D:
            self.vdd_mv = 800 + (args[0] - 3) * 256 + args[1] - 32
        elif op == 0x0C:
            self.dut_power = bool(args[0])
        elif op == 0x06:
            if not self.measuring:
                self.measuring = True
                self._t0 = time.monotonic()
                self._k = 0  # next sample index (counts dropped ones too)
                profile = self.profile
                if isinstance(profile, Board):
                    profile = Shifted(profile, profile.now())
                self._profile = profile
        elif op == 0x07:
            self.measuring = False
        elif op == 0x20:
            self.on_boot_state()
        # 0x15/0x16 spike filter, 0x25 user gains, trigger opcodes: accepted, no effect here

    def on_tick(self, now: float) -> None:
        if not self.measuring:
            return
        due = int((now - RENDER_LAG_S - self._t0) * RATE)
        if due <= self._k:
            return
        k = np.arange(self._k, due + 1, dtype=np.float64)
        q = self._profile.charge(k / RATE)
        amps = np.diff(q) * RATE
        if not (self.dut_power and self.mode == 2) and self.mode != 1:
            amps = np.zeros_like(amps)  # source meter with the DUT off: no current
        if self.faults.noise > 0:
            amps = amps * (1.0 + self.faults.noise * self._np_rng.standard_normal(amps.size))
        amps = np.maximum(amps, 0.0)
        n = amps.size
        counters = (np.arange(self._k, self._k + n) & 0x3F).astype(np.uint32)
        logic = self._profile.gpio(k[:-1] / RATE).astype(np.uint32) << self.options.marker_pin
        words = encode_current(amps, self.vdd_mv) | (counters << 18) | (logic << 24)
        self.blocks += 1
        if self.faults.drop_every > 0 and self.blocks % self.faults.drop_every == 0 and n > 80:
            # Whole 64-byte USB packets (16 samples); fewer than 64 samples, which the 6-bit
            # counter can still see (a 64-sample loss would alias to no loss at all).
            lost = 16 * int(self._np_rng.integers(1, 4))
            start = int(self._np_rng.integers(0, n - lost))
            words = np.concatenate([words[:start], words[start + lost :]])
            self.samples_dropped += lost
        payload = words.astype("<u4").tobytes()
        if self.faults.garbage > 0 and self.rng.random() < self.faults.garbage:
            payload = (
                bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 3))) + payload
            )
        self.samples_sent += words.size
        self._k = due
        self.emit(payload)


def pack_word(adc: int, rng: int, counter: int, logic: int) -> bytes:
    """One stream word (for tests that build streams by hand)."""
    return struct.pack(
        "<I", (adc & 0x3FFF) | (rng & 7) << 14 | (counter & 0x3F) << 18 | logic << 24
    )
