"""Nordic Power Profiler Kit II over its CDC-ACM port (serial.md §5; the formulas follow
IRNAS/ppk2-api-python and Nordic's nRF Connect Power Profiler).

The stream is 4-byte little-endian words at 100 kS/s (400 kB/s): bits 0-13 ADC, 14-16 range,
18-23 a 6-bit sample counter, 24-31 the logic inputs. :class:`Ppk2Decoder` turns any chunk of
it into energy with numpy (no Python loop per sample):

* current = ``UG * (x * (GS * x + GI) + (S * Vdd + I))`` with
  ``x = (4 * adc - O) * (1.8 / 163840 / R)``, per-range calibration from the metadata (``0x19``);
  energy = current x source voltage x 10 us. Nordic's spike filter (a smoothing of the samples
  right after a range switch, for display) is not applied: it redistributes charge between
  samples and energy integrates the raw values.
* **drops**: the counter goes up by one per sample; a jump of k means k - 1 samples were lost
  (a host overrun; the device drops whole USB packets). They are counted, and their energy is
  filled with the mean of the samples on either side -- flagged, never silent. A counter that
  runs backwards or jumps by 64 or more cannot be told apart from a smaller jump: the 6-bit
  counter aliases, so the count is a lower bound.
* **alignment**: if a stray byte shifts the word boundaries (the counters stop counting), the
  decoder tries the other three byte offsets, keeps the one whose counters count, and counts the
  skipped bytes as bad.
* **markers**: falling edges on logic input ``marker_pin`` (the DUT's timestamp GPIO) are events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from firmware_bridge.errors import MeterError
from firmware_bridge.meters.base import Meter
from firmware_bridge.transcript import Transcript

RATE = 100_000
DT = 1.0 / RATE
ADC_MULT = 1.8 / 163840
KEYS = ("R", "GS", "GI", "O", "S", "I", "UG")
# nRF Connect's defaults when the metadata lacks a value (R is never 0).
DEFAULTS = {
    "R": [1031.64, 101.65, 10.15, 0.94, 0.043],
    "GS": [0.0] * 5,
    "GI": [1.0] * 5,
    "O": [0.0] * 5,
    "S": [0.0] * 5,
    "I": [0.0] * 5,
    "UG": [1.0] * 5,
}


@dataclass
class Calibration:
    values: Dict[str, List[float]] = field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULTS.items()}
    )
    extra: Dict[str, str] = field(default_factory=dict)  # HW, IA, Calibrated, VDD, mode ...

    def arrays(self) -> Dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.values.items()}

    def to_dict(self) -> Dict[str, Any]:
        return {"per_range": self.values, "device": self.extra}


def parse_metadata(text: str) -> Calibration:
    """The ``key: value`` lines before ``END``; unknown keys are kept in ``extra``; ``-nan``
    and unparsable values leave the default (some PPK2s report ``R`` = 0: ignored too)."""
    cal = Calibration()
    for raw in text.replace("\r", "").split("\n"):
        line = raw.strip()
        if not line or line == "END" or ": " not in line:
            continue
        key, _, value = line.partition(": ")
        base, idx = key.rstrip("0123456789"), key[len(key.rstrip("0123456789")) :]
        if base in KEYS and idx.isdigit() and int(idx) < 5:
            try:
                number = float(value)
            except ValueError:
                continue
            if number != number or (base == "R" and number == 0):  # NaN, or a zero shunt
                continue
            cal.values[base][int(idx)] = number
        else:
            cal.extra[key] = value
    return cal


def currents(words: np.ndarray, cal: Dict[str, np.ndarray], vdd_mv: float) -> np.ndarray:
    """Amperes of each stream word."""
    adc = (words & 0x3FFF).astype(np.float64) * 4.0
    rng = np.minimum((words >> 14) & 0x7, 4).astype(np.intp)
    x = (adc - cal["O"][rng]) * (ADC_MULT / cal["R"][rng])
    return cal["UG"][rng] * (
        x * (cal["GS"][rng] * x + cal["GI"][rng])
        + (cal["S"][rng] * (vdd_mv / 1000.0) + cal["I"][rng])
    )


@dataclass
class Decoded:
    samples: int = 0  # words decoded
    dropped: int = 0  # counter gaps
    bad_bytes: int = 0
    energy_j: float = 0.0
    last_a: Optional[float] = None
    events: List[Tuple[int, float]] = field(default_factory=list)  # (sample index, energy_j at it)


class Ppk2Decoder:
    """Stateful stream decoder; ``index`` counts samples including lost ones (meter time)."""

    def __init__(self, cal: Calibration, vdd_mv: float, marker_pin: Optional[int] = 0) -> None:
        self.cal = cal.arrays()
        self.vdd_mv = vdd_mv
        self.volts = vdd_mv / 1000.0
        self.marker_pin = marker_pin
        self.rest = b""
        self.expected: Optional[int] = None  # next counter value
        self.index = 0
        self.prev_a: Optional[float] = None
        self.prev_level: Optional[int] = None
        self.energy_j = 0.0  # cumulative (for event stamps)

    def _aligned_prefix(self, words: np.ndarray) -> Tuple[int, bool]:
        """(index of the first word that breaks the count, whether it is surely misaligned);
        (len(words), False) when the counters count. A lost block is one bad step followed
        by good ones; misaligned words give random counters, so two bad steps close together
        mark the first misaligned word. A bad step among the last two is not decided yet."""
        c = ((words >> 18) & 0x3F).astype(np.int64)
        off = 0
        if self.expected is not None:
            c = np.concatenate(([(self.expected - 1) & 0x3F], c))
            off = 1
        elif c.size >= 2 and (c[1] - c[0]) & 0x3F != 1:
            return 0, True  # the stream starts with junk (stale bytes)
        if c.size < 2:
            return len(words), False
        bad = np.flatnonzero(((c[1:] - c[:-1]) & 0x3F) != 1)  # step j leads into c[j + 1]
        if bad.size == 0:
            return len(words), False
        close = np.flatnonzero(np.diff(bad) <= 2)
        if close.size:
            return max(0, int(bad[close[0]]) + 1 - off), True
        if bad[-1] >= c.size - 3:
            return max(0, int(bad[-1]) + 1 - off), False
        return len(words), False

    @staticmethod
    def _plausible(word: int) -> bool:
        """A real word has a range of 0..4 and bit 17 (between range and counter) clear."""
        return ((word >> 14) & 0x7) <= 4 and not (word >> 17) & 1

    def _realign(self, buf: bytes, pos: int, suspect: bool) -> Optional[int]:
        """Bytes to skip at ``pos`` (1..7) so that the words after count up again; None when
        there is not enough data yet to tell. With a ``suspect`` word at ``pos``, a shift
        below 4 says it was part junk, 4 or more that it was genuine. Counters fit by chance
        (1 in 64), so a candidate must also look like real words (range 0..4, bit 17 clear)
        and continuity with the last decoded counter breaks ties."""
        if len(buf) - pos < 4 * 12:
            return None
        first = int.from_bytes(buf[pos : pos + 4], "little")
        best, best_score = 4, -1
        for shift in range(1, 8):
            w = np.frombuffer(buf, dtype="<u4", count=9, offset=pos + shift)
            c = (w >> 18) & 0x3F
            good = int(np.count_nonzero(((c[1:] - c[:-1]) & 0x3F) == 1))
            if good < 6 or not self._plausible(int(w[0])):
                continue
            keeps_suspect = suspect and shift >= 4
            if keeps_suspect and not self._plausible(first):
                continue
            score = 2 * good
            if self.expected is not None:
                if keeps_suspect:
                    score += 3 * (((first >> 18) & 0x3F) == self.expected)
                    score += 3 * (int(c[0]) == (self.expected + 1) & 0x3F)
                else:
                    score += 3 * (int(c[0]) == self.expected)
            if score > best_score:
                best, best_score = shift, score
        return best

    def feed(self, data: bytes) -> Decoded:
        """Decode what ``data`` completes. The newest word is held back until the next call:
        when stray bytes shift the alignment, the word just before the first misaligned one
        may itself be part junk (its counter can match by chance, 1 in 64), and only the
        realignment tells -- so it must not be decoded yet."""
        out = Decoded()
        buf = self.rest + data
        pos = 0
        while True:
            n = (len(buf) - pos) // 4
            if n < 2:
                break
            words = np.frombuffer(buf, dtype="<u4", count=n, offset=pos)
            good, misaligned = self._aligned_prefix(words)
            if good >= n or not misaligned:
                keep = min(good, n) - 1  # hold back the newest (or the undecided) word
                if keep > 0:
                    self._decode(words[:keep], out)
                    pos += 4 * keep
                break
            suspect = good - 1  # the word before the first misaligned one (-1: none here)
            if suspect > 0:
                self._decode(words[:suspect], out)
                pos += 4 * suspect
            shift = self._realign(buf, pos, suspect >= 0)
            if shift is None:
                break  # wait for more data; nothing from ``pos`` on is decoded yet
            if suspect >= 0 and shift >= 4:
                # Realigned after the suspect word: it was genuine.
                self._decode(np.frombuffer(buf, dtype="<u4", count=1, offset=pos), out)
                out.bad_bytes += shift - 4
            else:
                out.bad_bytes += shift
            pos += shift
        self.rest = buf[pos:]
        return out

    def _decode(self, words: np.ndarray, out: Decoded) -> None:
        n = len(words)
        counters = ((words >> 18) & 0x3F).astype(np.int64)
        amps = currents(words, self.cal, self.vdd_mv)
        # Gaps: before the first word (across calls), then between words.
        steps = np.empty(n, dtype=np.int64)
        steps[0] = 1 if self.expected is None else ((counters[0] - self.expected) & 0x3F) + 1
        steps[1:] = (counters[1:] - counters[:-1]) & 0x3F
        steps = np.where(steps == 0, 64, steps)  # same counter twice: a full wrap was lost
        missing = steps - 1
        # Energy: each sample's own 10 us, plus the lost samples between neighbours, filled
        # with the mean of the two.
        prev = np.empty(n)
        prev[0] = amps[0] if self.prev_a is None else self.prev_a
        prev[1:] = amps[:-1]
        fill = missing * 0.5 * (prev + amps)
        charge_steps = amps + fill  # per-word charge in units of DT amperes
        cum = np.cumsum(charge_steps) * (DT * self.volts)
        indices = self.index + np.cumsum(steps) - 1  # sample index of every word
        if self.marker_pin is not None:
            level = ((words >> (24 + self.marker_pin)) & 1).astype(np.int8)
            before = np.empty(n, dtype=np.int8)
            before[0] = level[0] if self.prev_level is None else self.prev_level
            before[1:] = level[:-1]
            for i in np.flatnonzero((before == 1) & (level == 0)):
                # The edge is at the start of sample i: energy up to it excludes sample i.
                at = self.energy_j + (cum[i] - amps[i] * DT * self.volts)
                out.events.append((int(indices[i]), float(at)))
            self.prev_level = int(level[-1])
        out.samples += n
        out.dropped += int(missing.sum())
        out.energy_j += float(cum[-1])
        out.last_a = float(amps[-1])
        self.energy_j += float(cum[-1])
        self.index = int(indices[-1]) + 1
        self.expected = int((counters[-1] + 1) & 0x3F)
        self.prev_a = float(amps[-1])


class Ppk2(Meter):
    """A PPK2 in source-meter mode (it powers the DUT at ``voltage_mv``) or ampere-meter mode
    (in series with an external supply of ``voltage_mv``, which the PPK2 cannot measure)."""

    kind = "ppk2"
    default_baud = 9600  # CDC-ACM: the rate is not used on the wire
    rx_trace = "count"

    def __init__(
        self,
        url: str,
        rail: str = "VOUT",
        voltage_mv: int = 3300,
        mode: str = "source",
        marker_pin: Optional[int] = 0,
        power_dut: bool = True,
        metadata_timeout_s: float = 5.0,
        trace: Optional[Transcript] = None,
        **kwargs: Any,
    ) -> None:
        if mode not in ("source", "ampere"):
            raise ValueError("PPK2 mode must be 'source' or 'ampere'")
        if not 800 <= voltage_mv <= 5000:
            raise ValueError(f"PPK2 voltage must be 800..5000 mV, got {voltage_mv}")
        if marker_pin is not None and not 0 <= marker_pin <= 7:
            raise ValueError("PPK2 marker_pin must be a logic input 0..7 (or None)")
        super().__init__(url, [rail], trace=trace, **kwargs)
        self.voltage_mv = voltage_mv
        self.mode = mode
        self.marker_pin = marker_pin
        self.power_dut = power_dut
        self.metadata_timeout_s = metadata_timeout_s
        self.calibration = Calibration()
        self.decoder: Optional[Ppk2Decoder] = None

    def setup(self) -> None:
        t = self.transport
        t.set_sink(None)
        t.clear()
        t.write(bytes([0x07]))  # a stream left running by a previous session stops first
        t.flush_stale(quiet_s=0.05, max_s=0.5)
        t.write(bytes([0x19]))
        raw = t.read_until(b"END", self.metadata_timeout_s)
        if raw is None:
            raise MeterError(
                f"no PPK2 metadata from {self.url} within {self.metadata_timeout_s:g} s: is it "
                "a PPK2's data interface (the one whose location ends in 1)? Other devices "
                "never answer 0x19"
            )
        text = raw.decode("latin-1")
        self.calibration = parse_metadata(text)
        t.read_until(b"\n", 0.2)
        mode_byte = 0x02 if self.mode == "source" else 0x01
        t.write(bytes([0x11, mode_byte]))
        diff = self.voltage_mv - 800 + 32
        t.write(bytes([0x0D, 3 + diff // 256, diff % 256]))
        if self.mode == "source" and self.power_dut:
            t.write(bytes([0x0C, 0x01]))
        extra = self.calibration.extra
        self.info.identity = f"PPK2 HW {extra.get('HW', '?')}"
        self.info.firmware = extra.get("IA", "")
        self.info.rate_hz = RATE
        self.info.calibration = self.calibration.to_dict()
        self.info.settings = {
            "mode": self.mode,
            "voltage_mv": self.voltage_mv,
            "marker_pin": self.marker_pin,
            "dut_power": self.power_dut,
            "spike_filter": "not applied (energy integrates raw samples)",
            "drop_fill": "mean of the neighbouring samples",
        }

    def _start(self) -> None:
        self.decoder = Ppk2Decoder(self.calibration, self.voltage_mv, self.marker_pin)
        self.transport.set_sink(self._on_data)
        self.transport.write(bytes([0x06]))

    def _stop(self) -> None:
        self.transport.write(bytes([0x07]))
        time.sleep(0.02)

    def release(self) -> None:
        self.transport.set_sink(None)

    def reset_decoder(self) -> None:
        self.decoder = None

    def _on_data(self, data: bytes, t_ns: int) -> None:
        dec = self.decoder
        if dec is None:
            return
        out = dec.feed(data)
        if out.samples == 0:
            if out.bad_bytes:
                self._bad_data(out.bad_bytes)
            return
        # The meter's cumulative energy may include earlier streams; the decoder's does not.
        base_energy = self.energy_now()[0] - (dec.energy_j - out.energy_j)
        self._commit(
            out.samples,
            dec.index * DT,
            [out.energy_j],
            t_ns,
            dropped=out.dropped,
            bad=out.bad_bytes,
            mv=[float(self.voltage_mv)],
            ma=[out.last_a * 1000.0 if out.last_a is not None else None],
        )
        for index, at in out.events:
            self._event(index, index * DT, f"logic{self.marker_pin}", [base_energy + at])
