"""The machinery every fake shares: a device thread fed with the host's bytes, output to
whatever port is attached, interruptible waits, fault injection and unplug/replug.

A *link* is the host side of a connection (the in-process pyserial port, or a pty pair). It
offers ``deliver(bytes)``, ``hangup()`` (the device vanished: reads and writes fail) and
``replugged()`` (the device is back: a fresh connection may be opened).
"""

from __future__ import annotations

import queue
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Optional, Tuple

GARBAGE = bytes(range(0x80, 0x100)) + b"\x00"


def parse_url(url: str) -> Tuple[str, str, Dict[str, str]]:
    """``fake-dut://ic01?infer_us=2500`` -> (``fake-dut``, ``ic01``, {``infer_us``: ``2500``})."""
    # Split by hand: urlsplit() refuses '_' in a scheme (fake_dut://).
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    params = {k: v[-1] for k, v in urllib.parse.parse_qs(query, True).items()}
    return scheme.lower().replace("_", "-"), rest.strip("/"), params


def _convert(kind: Any, value: str, key: str) -> Any:
    try:
        if kind in (bool, "bool"):
            if value.lower() in ("1", "true", "yes", "on", ""):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind in (int, "int", "Optional[int]"):
            return int(value)
        if kind in (float, "float", "Optional[float]"):
            return float(value)
    except ValueError:
        raise ValueError(f"URL parameter {key}={value!r} must be a {kind}") from None
    return value


def take_params(cls: Any, params: Dict[str, str]) -> Dict[str, Any]:
    """The entries of ``params`` that are fields of dataclass ``cls``, converted to the
    field's type, removed from ``params``."""
    out = {}
    for f in fields(cls):
        if f.name in params:
            out[f.name] = _convert(f.type, params.pop(f.name), f.name)
    return out


def reject_unknown(url: str, params: Dict[str, str], allowed: List[str]) -> None:
    if params:
        raise ValueError(
            f"{url}: unknown parameter(s) {', '.join(sorted(params))}; "
            f"known: {', '.join(sorted(allowed))}"
        )


@dataclass
class Faults:
    """What can go wrong, on purpose. Every field is also a URL query parameter."""

    seed: int = 0
    latency_ms: float = 0.0  # added before every reply
    garbage: float = 0.0  # probability that an output line gets junk bytes in front
    error_at: str = ""  # "infer:3": the 3rd infer command answers with an e-[...] error
    unplug_at: str = ""  # "infer:2": unplug halfway through the 2nd infer command
    unplug_after_s: Optional[float] = None  # unplug this long after the first connection
    replug_after_s: Optional[float] = 0.5  # come back this long after an unplug (None: never)
    reset_on_dtr: bool = False  # Arduino-style: DTR asserted at open reboots the device
    boot_s: float = 0.0  # boot time before the banner
    noise: float = 0.0  # meters: relative standard deviation of each current sample
    drop_every: int = 0  # meters: lose a block of samples every N blocks (host overrun)
    baud_delay: bool = False  # simulate the wire time of every byte at the link's baud rate


def count_spec(spec: str) -> Tuple[str, int]:
    """``"infer:2"`` -> ("infer", 2); ``""`` -> ("", 0)."""
    if not spec:
        return "", 0
    what, _, nth = spec.partition(":")
    return what, int(nth or 1)


class FakeDevice:
    """Base of every fake: override :meth:`on_bytes`, :meth:`on_tick`, :meth:`on_boot`."""

    tick_s = 0.05  # how often on_tick runs when no input arrives
    baudrate = 115200  # the device's own UART speed (for ``baud_delay``)

    def __init__(self, faults: Optional[Faults] = None) -> None:
        self.faults = faults or Faults()
        self.rng = random.Random(self.faults.seed)
        self._inq: queue.Queue[Optional[bytes]] = queue.Queue()
        self._links: List[Any] = []
        self._links_lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._running = threading.Event()
        self._interrupt = threading.Event()  # set on unplug: long waits end early
        self.plugged = True
        self.boots = 0
        self.connects = 0
        self.counts: Dict[str, int] = {}
        self.on_replug: List[Callable[[], None]] = []
        self._unplug_timer: Optional[threading.Timer] = None

    # --- lifecycle ---

    def start(self) -> FakeDevice:
        if self._thread is None:
            self._running.set()
            self._thread = threading.Thread(
                target=self._run, name=f"fake-{type(self).__name__}", daemon=True
            )
            self._thread.start()
            self._inq.put(b"")  # boot inside the device thread
        return self

    def stop(self) -> None:
        self._running.clear()
        self._interrupt.set()
        self._inq.put(None)
        for timer in (self._unplug_timer,):
            if timer is not None:
                timer.cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def _run(self) -> None:
        booted = False
        while self._running.is_set():
            try:
                data = self._inq.get(timeout=self.tick_s)
            except queue.Empty:
                data = b""
            if data is None:
                break
            if not booted:
                booted = True
                self._boot()
            self.service()
            if data and self.plugged:
                self.on_bytes(data)
            if self.plugged:
                self.on_tick(time.monotonic())

    def _boot(self) -> None:
        self.boots += 1
        self._interrupt.clear()
        if self.faults.boot_s > 0:
            time.sleep(self.faults.boot_s)
        self.on_boot()

    def reboot(self) -> None:
        """Lose all state and print the boot banner again (from the device thread)."""
        # Drop what the host sent before the reset: a real UART ring buffer is gone too.
        while True:
            try:
                item = self._inq.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._inq.put(None)
                return
        self._boot()

    # --- hooks ---

    def on_boot(self) -> None:
        """Reset state and print the banner."""

    def on_bytes(self, data: bytes) -> None:
        """Bytes from the host."""

    def on_tick(self, now: float) -> None:
        """Time passes (streams produce samples here)."""

    def on_dtr(self, level: bool) -> None:
        if self.faults.reset_on_dtr and level:
            self._inq.put(b"")  # make sure the thread runs
            self._reset_request = True

    # --- host side ---

    def attach(self, link: Any) -> None:
        with self._links_lock:
            self._links.append(link)
        self.connects += 1
        if self.connects == 1 and self.faults.unplug_after_s is not None:
            self._unplug_timer = threading.Timer(self.faults.unplug_after_s, self.unplug)
            self._unplug_timer.daemon = True
            self._unplug_timer.start()

    def detach(self, link: Any) -> None:
        with self._links_lock:
            if link in self._links:
                self._links.remove(link)

    @property
    def attached(self) -> int:
        with self._links_lock:
            return len(self._links)

    def receive(self, data: bytes) -> None:
        """The host wrote ``data`` (called from the host's thread)."""
        if self.plugged and data:
            if self.faults.baud_delay:
                time.sleep(len(data) * 10.0 / self.baudrate)
            self._inq.put(bytes(data))

    def emit(self, data: bytes) -> None:
        """Send ``data`` to the host (from the device thread)."""
        if not self.plugged or not data:
            return
        if self.faults.baud_delay:
            time.sleep(len(data) * 10.0 / self.baudrate)
        with self._links_lock:
            links = list(self._links)
        for link in links:
            link.deliver(data)

    def emit_line(self, text: str) -> None:
        """One ``\\r\\n`` line, with junk in front if the garbage fault fires."""
        data = text.encode("latin-1") + b"\r\n"
        if self.faults.garbage > 0 and self.rng.random() < self.faults.garbage:
            junk = bytes(self.rng.choice(GARBAGE) for _ in range(self.rng.randint(1, 6)))
            data = junk + data
        self.emit(data)

    def reply_delay(self) -> None:
        if self.faults.latency_ms > 0:
            self.wait(self.faults.latency_ms / 1000.0)

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless unplugged meanwhile (returns False then)."""
        if seconds <= 0:
            return self.plugged
        return not self._interrupt.wait(seconds)

    def count(self, what: str) -> int:
        """Count one more ``what`` (a command name) and return the new count."""
        self.counts[what] = self.counts.get(what, 0) + 1
        return self.counts[what]

    def fault_due(self, spec: str, what: str, nth: int) -> bool:
        kind, at = count_spec(spec)
        return kind == what and at == nth

    # --- unplug / replug ---

    def unplug(self, replug_after_s: Optional[float] = -1.0) -> None:
        """The USB cable is pulled: links hang up; the device comes back after
        ``replug_after_s`` (default: the fault setting; None: never)."""
        if not self.plugged:
            return
        self.plugged = False
        self._interrupt.set()
        with self._links_lock:
            links = list(self._links)
            self._links.clear()
        for link in links:
            link.hangup()
        delay = self.faults.replug_after_s if replug_after_s == -1.0 else replug_after_s
        if delay is not None:
            timer = threading.Timer(delay, self.replug)
            timer.daemon = True
            timer.start()

    def replug(self) -> None:
        """The cable is back: the device boots afresh and accepts a new connection."""
        if self.plugged or not self._running.is_set():
            return
        self._interrupt.clear()
        self.plugged = True
        self._inq.put(b"")
        self._reboot_pending = True
        for callback in list(self.on_replug):
            callback()

    _reset_request = False
    _reboot_pending = False

    def service(self) -> None:
        """Handle a pending reset (DTR) or reboot (replug) in the device thread."""
        if self._reboot_pending or self._reset_request:
            self._reboot_pending = self._reset_request = False
            self.reboot()
