"""The halofarm DIY meter: an INA219/INA3221 on a microcontroller speaking the halofarm line
protocol v1 (``firmware_bridge/firmware/PROTOCOL.md``; reference sketch
``firmware_bridge/firmware/halofarm_inameter/``).

Stream records are checked (``*XX`` XOR checksum; a line that fails is counted bad and
skipped) and sequenced (a 16-bit ``seq`` over all records: a gap is lost records). Power per
channel is ``mV x uA``; energy is the trapezoid between consecutive samples of a channel on the
meter's own microsecond clock (unwrapped at 2^32), so a lost sample is bridged linearly.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional

from firmware_bridge.errors import MeterError, ProtocolError
from firmware_bridge.meters.base import LineSplitter, Meter
from firmware_bridge.transcript import Transcript

INFO_RE = re.compile(r"^m-info-\[(.*)\]$")
# Bounded numbers: a runaway digit string is not a channel (int() refuses > 4300 digits).
CHAN_RE = re.compile(r"^m-chan-\[(\d{1,3}),([^,\]]*),(\d{1,10})\]$")
NAME_RE = re.compile(r"^m-name-inameter-\[(.*)\]$")
WRAP = 1 << 32
# Far above any board a DIY meter powers: a record claiming more is garbled.
MAX_PLAUSIBLE_W = 1e4


def checksum_ok(line: str) -> Optional[str]:
    """The record body if its ``*XX`` checksum is right, else None."""
    body, star, given = line.rpartition("*")
    if not star or len(given) != 2:
        return None
    x = 0
    for ch in body.encode("latin-1"):
        x ^= ch
    return body if f"{x:02X}" == given.upper() else None


def parse_info(line: str) -> Dict[str, str]:
    m = INFO_RE.match(line)
    if not m:
        raise ProtocolError(f"not an info line: {line!r}")
    out = {}
    for item in m.group(1).split(","):
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return out


class InaMeter(Meter):
    kind = "inameter"
    default_baud = 115200

    def __init__(
        self,
        url: str,
        rails: Optional[List[str]] = None,
        rate_hz: int = 100,
        trace: Optional[Transcript] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, list(rails or ["CH1"]), trace=trace, **kwargs)
        self.rate_hz = rate_hz
        self.device_channels: List[Dict[str, Any]] = []
        self._lines = LineSplitter()
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._seq: Optional[int] = None
        self._t_first: Optional[int] = None  # unwrapped us of the first record
        self._t_last_raw: Optional[int] = None
        self._wraps = 0
        n = len(self.channels)
        self._prev_t: List[Optional[int]] = [None] * n
        self._prev_p: List[Optional[float]] = [None] * n
        self._last_mv: List[Optional[float]] = [None] * n
        self._last_ma: List[Optional[float]] = [None] * n
        # Energy integrated through each channel's own newest sample, and what was reported
        # beyond it: channels are sampled one after the other, so a snapshot at the newest
        # sample holds the others' last power up to that instant (never counted twice).
        self._integrated = [0.0] * n
        self._held = [0.0] * n
        self._base = self.energy_now()  # the meter's cumulative energy when this stream began

    def reset_decoder(self) -> None:
        self._lines = LineSplitter()
        self._reset_stream()

    # --- commands ---

    def command(self, cmd: str, timeout_s: float = 2.0) -> List[str]:
        """Send ``cmd%``; the reply lines before ``m-ready``. ``e-[...]`` raises."""
        self.drain_replies()
        self.transport.write(cmd.encode("ascii") + b"%")
        _, lines = self.wait_reply(lambda s: s.endswith("m-ready"), timeout_s, f"'{cmd}'")
        for line in lines:
            if line.startswith("e-["):
                raise MeterError(f"meter at {self.url} refused '{cmd}': {line[3:].rstrip(']')}")
        return lines

    def setup(self) -> None:
        self.transport.set_sink(self._on_data)
        self.transport.write(b"stop%")  # a stream left running stops; its reply is flushed
        self.transport.flush_stale(quiet_s=0.1, max_s=1.0)
        self.drain_replies()
        try:
            lines = self.command("name")
        except MeterError:
            lines = self.command("name")  # the first '%' ended a half command in the buffer
        names = [NAME_RE.match(s) for s in lines]
        ident = next((m.group(1) for m in names if m), None)
        if ident is None:
            raise MeterError(
                f"{self.url} does not speak the halofarm meter protocol (name% gave {lines}); "
                "flash firmware_bridge/firmware/halofarm_inameter or pick the right port"
            )
        lines = self.command("info")
        info_line = next((s for s in lines if s.startswith("m-info-")), None)
        if info_line is None:
            raise MeterError(f"meter at {self.url} answered info% without m-info-[...]: {lines}")
        info = parse_info(info_line)
        self.device_channels = []
        for s in lines:
            m = CHAN_RE.match(s)
            if m:
                self.device_channels.append(
                    {"ch": int(m.group(1)), "label": m.group(2), "shunt_uohm": int(m.group(3))}
                )
        if len(self.device_channels) < len(self.channels):
            raise MeterError(
                f"meter at {self.url} has {len(self.device_channels)} channel(s) but "
                f"{len(self.channels)} rails are configured ({', '.join(self.channels)})"
            )
        self.command(f"rate {self.rate_hz}")
        self.info.identity = ident
        self.info.firmware = info.get("fw", "")
        self.info.rate_hz = float(self.rate_hz)
        self.info.settings = {
            "protocol": info.get("proto"),
            "chip": info.get("chip"),
            "channels": self.device_channels[: len(self.channels)],
            "integration": "trapezoid on the meter's microsecond clock",
        }

    def _start(self) -> None:
        self._reset_stream()
        self.command("start")

    def _stop(self) -> None:
        self.command("stop")

    def mark(self, ident: int) -> None:
        """A software marker in the stream (aligned on the meter's clock)."""
        self.command(f"mark {int(ident)}")

    # --- the stream (reader thread) ---

    def _unwrap(self, raw: int) -> int:
        if self._t_last_raw is not None and raw < self._t_last_raw - (WRAP // 2):
            self._wraps += 1
        self._t_last_raw = raw
        return raw + self._wraps * WRAP

    def _hold(self, k: int, t_us: int) -> float:
        """Channel k's energy beyond its newest sample up to ``t_us``, at its last power."""
        pt, pp = self._prev_t[k], self._prev_p[k]
        if pt is None or pp is None:
            return 0.0
        return pp * max(0, t_us - pt) / 1e6

    def _on_data(self, data: bytes, t_ns: int) -> None:
        n = len(self.channels)
        samples = dropped = bad = 0
        events = []
        integrated_before = list(self._integrated)
        for line in self._lines.feed(data):
            start = max(line.find("P,"), line.find("E,"))
            if start < 0 or line.rfind("*") < start:
                if line:
                    self.replies.put(line[line.find("m-") :] if "m-" in line else line)
                continue
            body = checksum_ok(line[start:])
            if body is None:
                bad += 1
                continue
            fields = body.split(",")
            try:
                seq, t_raw = int(fields[1]), int(fields[2])
            except (IndexError, ValueError):
                bad += 1
                continue
            if not (0 <= seq < 65536 and 0 <= t_raw < WRAP):  # a 16-bit seq, a 32-bit clock
                bad += 1
                continue
            if self._seq is not None:
                dropped += (seq - self._seq - 1) % 65536
            self._seq = seq
            t_us = self._unwrap(t_raw)
            if self._t_first is None:
                self._t_first = t_us
            if fields[0] == "P" and len(fields) == 6:
                try:
                    ch = int(fields[3]) - 1
                    mv, ua = float(fields[4]), float(fields[5])
                except ValueError:
                    bad += 1
                    continue
                p = mv * ua * 1e-9  # W
                if not (math.isfinite(p) and abs(p) <= MAX_PLAUSIBLE_W):  # nan, inf, garbled
                    bad += 1
                    continue
                if not 0 <= ch < n:
                    continue  # a channel nobody configured
                pt, pp = self._prev_t[ch], self._prev_p[ch]
                if pt is not None and pp is not None and t_us > pt:
                    self._integrated[ch] += 0.5 * (p + pp) * (t_us - pt) / 1e6
                self._prev_t[ch], self._prev_p[ch] = t_us, p
                self._last_mv[ch], self._last_ma[ch] = mv, ua / 1000.0
                if ch == 0:
                    samples += 1
            elif fields[0] == "E" and len(fields) == 5:
                at = [self._base[k] + self._integrated[k] + self._hold(k, t_us) for k in range(n)]
                t_s = (t_us - self._t_first) / 1e6
                idx = int(round(t_s * self.rate_hz))
                events.append((idx, t_s, f"{fields[3]}{fields[4]}", at))
            else:
                bad += 1
        newest = max((t for t in self._prev_t if t is not None), default=None)
        if samples or dropped or bad:
            held = [self._hold(k, newest) if newest is not None else 0.0 for k in range(n)]
            increments = [
                self._integrated[k] - integrated_before[k] + held[k] - self._held[k]
                for k in range(n)
            ]
            self._held = held
            self._commit(
                samples,
                0.0 if newest is None or self._t_first is None else (newest - self._t_first) / 1e6,
                increments,
                t_ns,
                dropped=dropped,
                bad=bad,
                mv=list(self._last_mv),
                ma=list(self._last_ma),
            )
        for idx, t_s, source, at in events:
            self._event(idx, t_s, source, at)
