"""The MLPerf Tiny / EEMBC device-under-test driver: ``name``, ``profile``, ``timestamp``,
``db load`` + ``db`` chunks, ``infer N W``, ``results`` -- directly (performance mode, 115200
baud) or through an interface board (energy mode: ``dut <cmd>%`` to the board, ``[dut]: ``
before every DUT line, the board's own ``m-ready`` first).

Every reply is read up to ``m-ready`` with a per-command timeout (5 s; ``infer`` at least 30 s
and more for long windows); a reply without ``m-ready`` is a :class:`CommandTimeout` carrying
what did arrive; ``e-[...]`` becomes a :class:`DeviceError` with the device's text. ``infer``
always sends W (the firmware's default is 10 warmups, not the 0 its help text claims).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from firmware_bridge import eembc
from firmware_bridge.errors import CommandTimeout, DeviceError, ProtocolError
from firmware_bridge.transcript import Transcript
from firmware_bridge.transport import PortSettings, Transport

DIRECT_BAUD = 115200
IFACE_BAUD = 115200  # host <-> interface board; the board talks to the DUT at 9600


@dataclass
class Timeouts:
    command_s: float = 5.0  # the runner's default
    infer_min_s: float = 30.0  # the runner's infer timeout; longer windows get more
    reconnect_s: float = 30.0  # how long to wait for an unplugged DUT to come back


@dataclass
class DutIdentity:
    name: str
    profile: str  # the firmware string, "ULPMark for tinyML Firmware V0.0.1"
    model: str  # ic01, kws01, vww01, ad01, ...
    timestamp_mode: str  # "performance" (prints m-lap-us) or "energy" (GPIO pulse)
    url: str
    interface: Optional[str] = None  # the interface board's name, in energy mode

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class InferReply:
    n: int
    warmups: int
    t0_us: Optional[int]  # the two m-lap-us values (None in energy mode)
    t1_us: Optional[int]
    results: List[float]
    host_start_ns: int  # when the command was sent
    host_t0_ns: Optional[int]  # when each lap line was read
    host_t1_ns: Optional[int]
    host_end_ns: int  # when m-ready was read
    messages: List[str] = field(default_factory=list)

    @property
    def elapsed_us(self) -> Optional[int]:
        if self.t0_us is None or self.t1_us is None:
            return None
        return eembc.lap_delta_us(self.t0_us, self.t1_us)


class EembcDut:
    """One DUT on one transport."""

    def __init__(
        self, transport: Transport, interface: bool = False, timeouts: Optional[Timeouts] = None
    ) -> None:
        self.transport = transport
        self.interface = interface
        self.timeouts = timeouts or Timeouts()
        self.url = transport.settings.url
        self.identity: Optional[DutIdentity] = None

    @classmethod
    def open(
        cls,
        url: str,
        baudrate: Optional[int] = None,
        interface: bool = False,
        trace: Optional[Transcript] = None,
        timeouts: Optional[Timeouts] = None,
        exclusive: bool = True,
        settle_s: float = 0.0,
        reconnect: bool = True,
    ) -> EembcDut:
        settings = PortSettings(
            url,
            baudrate=baudrate or (IFACE_BAUD if interface else DIRECT_BAUD),
            exclusive=exclusive,
            settle_s=settle_s,
            reconnect=reconnect,
            tag="iface" if interface else "dut",
        )
        return cls(Transport(settings, trace).open(), interface, timeouts)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> EembcDut:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- one command ---

    def command(self, text: str, timeout_s: Optional[float] = None) -> eembc.Reply:
        """Send ``text%`` (wrapped as ``dut text%`` via an interface board) and read the reply
        up to ``m-ready``."""
        timeout_s = self.timeouts.command_s if timeout_s is None else timeout_s
        payload = eembc.build_command(text)
        if self.interface:
            payload = eembc.build_command("dut " + text, eembc.IFACE_CMD_SIZE)
        generation = self.transport.generation
        reply = eembc.Reply(command=text)
        started = time.monotonic()
        deadline = started + timeout_s
        self.transport.write(payload)
        if self.interface:
            self._board_ack(text, reply, deadline, generation)
        joiner = eembc.ErrorJoiner()
        while True:
            left = deadline - time.monotonic()
            line = self.transport.read_line(max(left, 0.0), generation) if left > 0 else None
            if line is None:
                raise CommandTimeout(
                    f"{self.url}: no m-ready within {timeout_s:g} s after '{text}' (got "
                    f"{len(reply.messages)} message(s), last {reply.messages[-1:] or 'none'}); "
                    "the DUT may be hung, rebooting or at another baud rate -- power-cycle it "
                    "or check --baud",
                    reply.messages,
                )
            if self.interface:
                if not line.startswith(eembc.IFACE_PREFIX.rstrip()):
                    reply.text.append(line)  # the board's own chatter
                    continue
                line = line.split(":", 1)[1][1:] if ":" in line else ""
            msg = eembc.message(line)
            error = joiner.feed(line, msg)
            if error is not None:
                reply.errors.append(error)
            if msg is None:
                if line.strip():
                    reply.text.append(line)
                continue
            reply.messages.append(msg)
            reply.arrival_ns.append(time.monotonic_ns())
            if msg.endswith(eembc.READY):
                if "m-init-done" not in reply.messages:
                    break
                # A boot banner (the DUT booted or reset as we connected), not our reply:
                # keep it aside and wait on for the answer to the command.
                reply.text += ["(boot banner) " + m for m in reply.messages]
                reply.messages, reply.arrival_ns = [], []
        reply.seconds = time.monotonic() - started
        if reply.errors:
            raise DeviceError(
                f"the DUT at {self.url} rejected '{text}': {reply.errors[0]!r}",
                reply.errors[0],
                reply.messages,
            )
        return reply

    def _board_ack(self, text: str, reply: eembc.Reply, deadline: float, generation: int) -> None:
        """The interface board answers ``m-dut-passthrough(<cmd>)``, ``m-ready`` first."""
        while True:
            left = deadline - time.monotonic()
            line = self.transport.read_line(max(left, 0.0), generation) if left > 0 else None
            if line is None:
                raise CommandTimeout(
                    f"{self.url}: the interface board did not acknowledge 'dut {text}'; "
                    "is this an EEMBC/MLPerf Tiny interface board at 115200 baud?",
                    reply.text,
                )
            if line.startswith(eembc.IFACE_PREFIX.rstrip()):
                reply.text.append(line)  # a late DUT line from before: not ours
                continue
            msg = eembc.message(line)
            if msg is not None and msg.startswith("e-["):
                raise DeviceError(
                    f"the interface board at {self.url} rejected 'dut {text}': {msg}", msg
                )
            if msg == eembc.READY:
                return
            reply.text.append(line)

    # --- the commands ---

    def name(self) -> str:
        """``m-name-dut-[...]``. Retried once after an ``Unknown command`` error: whatever a
        previous session left half-typed in the DUT's buffer was glued to our first command,
        and that command's ``%`` has cleared it."""
        try:
            reply = self.command("name")
        except DeviceError as exc:
            if "Unknown command" not in exc.text:
                raise
            reply = self.command("name")
        hit = reply.find(eembc.NAME_RE)
        if hit is None:
            raise ProtocolError(f"{self.url}: no m-name-dut-[...] in {reply.messages}")
        return hit.group(1)

    def profile(self) -> Dict[str, str]:
        reply = self.command("profile")
        profile, model = reply.find(eembc.PROFILE_RE), reply.find(eembc.MODEL_RE)
        if profile is None or model is None:
            raise ProtocolError(f"{self.url}: no m-profile/m-model in {reply.messages}")
        return {"profile": profile.group(1), "model": model.group(1)}

    def timestamp(self) -> Optional[int]:
        """The lap counter in performance mode; None in energy mode (a GPIO pulse instead)."""
        hit = self.command("timestamp").find(eembc.LAP_RE)
        return int(hit.group(1)) if hit else None

    def identify(self) -> DutIdentity:
        board = None
        if self.interface:
            board_reply = self._board_command("name")
            board = next((t for t in board_reply if t.strip()), None)
        name = self.name()
        prof = self.profile()
        mode = "performance" if self.timestamp() is not None else "energy"
        self.identity = DutIdentity(name, prof["profile"], prof["model"], mode, self.url, board)
        return self.identity

    def _board_command(self, text: str) -> List[str]:
        """A command to the interface board itself (not relayed): its lines before m-ready."""
        self.transport.write(eembc.build_command(text, eembc.IFACE_CMD_SIZE))
        lines: List[str] = []
        deadline = time.monotonic() + self.timeouts.command_s
        while True:
            left = deadline - time.monotonic()
            line = self.transport.read_line(left) if left > 0 else None
            if line is None:
                raise CommandTimeout(f"{self.url}: interface board did not answer '{text}'", lines)
            if eembc.message(line) == eembc.READY:
                return lines
            lines.append(line)

    def load(self, data: bytes, chunk: Optional[int] = None) -> None:
        """``db load N`` then ``db <hex>`` chunks (31 bytes direct, 26 via the interface
        board); checks ``m-[Expecting N bytes]`` and that ``m-load-done`` comes with the last
        chunk and not before."""
        if not data:
            raise ValueError("nothing to load: the DUT refuses 'db load 0'")
        if len(data) > eembc.MAX_DB_INPUT_SIZE:
            raise ValueError(
                f"input of {len(data)} bytes exceeds MAX_DB_INPUT_SIZE "
                f"({eembc.MAX_DB_INPUT_SIZE}) of the reference firmware"
            )
        chunk = chunk or (eembc.DB_CHUNK_IFACE if self.interface else eembc.DB_CHUNK_DIRECT)
        reply = self.command(f"db load {len(data)}")
        hit = reply.find(eembc.EXPECTING_RE)
        if hit is None or int(hit.group(1)) != len(data):
            raise ProtocolError(
                f"{self.url}: 'db load {len(data)}' answered {reply.messages + reply.text}; "
                "the firmware's MAX_DB_INPUT_SIZE may be smaller than the input"
            )
        commands = eembc.db_commands(data, chunk)
        for i, cmd in enumerate(commands):
            reply = self.command(cmd)
            done = "m-load-done" in reply.messages
            last = i == len(commands) - 1
            if done != last:
                raise ProtocolError(
                    f"{self.url}: m-load-done {'early, at chunk' if done else 'missing after'} "
                    f"{i + 1} of {len(commands)}; the DUT's byte count differs from ours"
                )

    def infer(
        self,
        n: int,
        warmups: int,
        expected_s: Optional[float] = None,
        timeout_s: Optional[float] = None,
    ) -> InferReply:
        """``infer N W`` (W always sent). ``expected_s``: how long N + W inferences should
        take, which lengthens the timeout beyond the 30 s default."""
        if n < 1:
            raise ValueError("infer needs N >= 1 (the firmware refuses 0)")
        if warmups < 0:
            raise ValueError("infer needs W >= 0")
        if timeout_s is None:
            timeout_s = self.timeouts.infer_min_s
            if expected_s is not None:
                timeout_s = max(timeout_s, 1.5 * expected_s + 10.0)
        start = time.monotonic_ns()
        reply = self.command(f"infer {n} {warmups}", timeout_s)
        end = time.monotonic_ns()
        warm = reply.find(eembc.WARMUP_RE)
        started = reply.find(eembc.INFER_START_RE)
        if warm is None or started is None:
            raise ProtocolError(
                f"{self.url}: infer reply lacks warmup/infer-start: {reply.messages}"
            )
        if int(warm.group(1)) != warmups or int(started.group(1)) != n:
            raise ProtocolError(
                f"{self.url}: asked infer {n} {warmups}, the DUT ran {started.group(1)} after "
                f"{warm.group(1)} warmups"
            )
        laps = [
            (int(h.group(1)), i)
            for i, m in enumerate(reply.messages)
            for h in [eembc.LAP_RE.match(m)]
            if h
        ]
        results = reply.find(eembc.RESULTS_RE)
        t0 = t1 = h0 = h1 = None
        if len(laps) >= 2:
            (t0, i0), (t1, i1) = laps[-2], laps[-1]
            h0, h1 = reply.arrival_ns[i0], reply.arrival_ns[i1]
        elif laps:
            raise ProtocolError(f"{self.url}: only one m-lap-us line in the infer reply")
        return InferReply(
            n=n,
            warmups=warmups,
            t0_us=t0,
            t1_us=t1,
            results=eembc.parse_results(results.group(1)) if results else [],
            host_start_ns=start,
            host_t0_ns=h0,
            host_t1_ns=h1,
            host_end_ns=end,
            messages=reply.messages,
        )

    def results(self) -> List[float]:
        hit = self.command("results").find(eembc.RESULTS_RE)
        if hit is None:
            raise ProtocolError(f"{self.url}: no m-results-[...] in the reply")
        return eembc.parse_results(hit.group(1))

    def db_print(self) -> bytes:
        """The DUT's input buffer as it holds it (blank lines ignored)."""
        out = bytearray()
        for m in self.command("db print").find_all(eembc.BUFFER_RE):
            out += bytes.fromhex(m.group(1).replace("-", ""))
        return bytes(out)

    # --- after an unplug ---

    def wait_back(self, timeout_s: Optional[float] = None) -> bool:
        """Wait for the transport to reconnect, then drop the boot banner."""
        timeout_s = self.timeouts.reconnect_s if timeout_s is None else timeout_s
        if not self.transport.wait_connected(timeout_s):
            return False
        self.transport.flush_stale(quiet_s=0.2, max_s=2.0)
        return True


def infer_count(per_inference_s: float, min_window_s: float, margin: float = 1.05) -> int:
    """The N whose window lasts at least ``min_window_s``."""
    if per_inference_s <= 0:
        return 1
    return max(1, int(math.ceil(min_window_s * margin / per_inference_s)))
