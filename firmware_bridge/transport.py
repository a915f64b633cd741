"""One serial port, opened by pyserial URL and kept usable: the layer every driver stands on.

What it does and why (serial.md §2, §7):

* **Any URL pyserial opens** (``/dev/ttyACM0``, ``/dev/serial/by-id/...``, ``rfc2217://``,
  ``socket://``, ``hwgrep://VID:PID``) and our fake schemes (:mod:`firmware_bridge.urlschemes`).
* **Exclusive lock** (``flock``) on real ports, so a second agent or a stray ``screen`` session
  cannot interleave bytes with a benchmark. Remote and fake ports have no such lock.
* **DTR/RTS set before open** (``dtr=False, rts=False`` by default): pyserial applies them right
  after ``open(2)``, which keeps Arduino-style auto-reset circuits from rebooting the board.
  The kernel itself raises DTR during ``open(2)``; HUPCL is cleared after opening so at least
  closing the port never drops DTR -- a board that still resets on open needs ``settle_s``.
* **Stale output flushed at connect**: whatever a previous session left in the buffers would
  otherwise be taken as the reply to our first command (the MLPerf runner's "did not
  acknowledge" error).
* **A reader thread** drains the port continuously (a 100 kS/s meter sends 400 kB/s) into a
  buffer that :meth:`Transport.read_line` waits on, or into a sink callback for streams.
* **Reconnect**: when a read or write fails (USB unplug), the port is closed and reopened every
  ``retry_s`` until the device is back; waiters get :class:`DeviceDisconnected` at once, and
  :attr:`Transport.generation` tells callers that the device they now talk to was restarted.
* **Transcript** of every byte sent and line received (:mod:`firmware_bridge.transcript`).
"""

from __future__ import annotations

import errno
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from firmware_bridge import urlschemes
from firmware_bridge.errors import DeviceDisconnected, PortBusy, PortOpenError
from firmware_bridge.transcript import Transcript

# sink(data, t_ns): bytes as they arrive, t_ns = time.monotonic_ns() at receipt.
Sink = Callable[[bytes, int], None]
# on_state("lost" | "reconnected", detail)
StateCallback = Callable[[str, str], None]

MAX_BUFFER = 8 * 1024 * 1024  # a text device that floods us must not eat the board's memory


@dataclass(frozen=True)
class PortSettings:
    """How to open one port. ``url`` is anything :func:`serial.serial_for_url` accepts."""

    url: str
    baudrate: int = 115200
    exclusive: bool = True  # flock on real ports; ignored for remote/fake ones
    dtr: Optional[bool] = False  # None: leave the driver's default (asserted)
    rts: Optional[bool] = False
    settle_s: float = 0.0  # wait after open before flushing (boards that reset anyway)
    quiet_s: float = 0.1  # stale flush: drain until the port was quiet this long ...
    flush_max_s: float = 1.0  # ... but at most this long (a streaming device is never quiet)
    reconnect: bool = True
    retry_s: float = 0.2  # reopen attempts while the device is gone
    poll_s: float = 0.05  # reader's read timeout: how fast close() is noticed
    write_timeout_s: float = 5.0
    tag: str = ""  # name in the transcript; default: the URL


def _open_error(url: str, exc: BaseException) -> PortOpenError:
    """Turn pyserial's open failure into an error that says what to do."""
    text = str(exc)
    code = getattr(exc, "errno", None)
    if "exclusively lock" in text or code in (errno.EAGAIN, errno.EWOULDBLOCK):
        return PortBusy(
            f"{url} is in use by another process (exclusive lock held): close the other "
            "program (screen, minicom, another halo-agent) or open it with exclusive=False"
        )
    if code == errno.EBUSY or "busy" in text.lower():
        return PortBusy(f"{url} is busy: {text}; close the program that has it open")
    if code == errno.ENOENT or "No such file" in text or "could not open port" in text:
        return PortOpenError(
            f"cannot open {url}: no such port ({text}); check the cable, "
            "`halo-agent mcu probe --list`, and /dev/serial/by-id/"
        )
    if code in (errno.EACCES, errno.EPERM) or "ermission" in text:
        return PortOpenError(
            f"cannot open {url}: permission denied; add the agent's user to the 'dialout' "
            "group (or SupplementaryGroups=dialout in the systemd unit)"
        )
    return PortOpenError(f"cannot open {url}: {text}")


def _clear_hupcl(port: Any) -> None:
    """Keep DTR asserted when the port closes (no reset of the board on our exit)."""
    try:
        import termios

        fd = port.fileno()
        attrs = termios.tcgetattr(fd)
        attrs[2] &= ~termios.HUPCL
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except Exception:  # not a tty (remote/fake) or not POSIX: nothing to clear
        pass


def _reset_input(port: Any) -> None:
    """Drop what the OS buffered before we opened (only before the reader thread reads)."""
    try:
        port.reset_input_buffer()
    except Exception:
        pass


def open_serial(settings: PortSettings) -> Any:
    """An open pyserial port per ``settings``; raises :class:`PortOpenError`."""
    import serial

    urlschemes.register()
    try:
        port = serial.serial_for_url(settings.url, do_not_open=True)
        port.baudrate = settings.baudrate
        port.timeout = settings.poll_s
        port.write_timeout = settings.write_timeout_s
        native = isinstance(port, serial.Serial)
        if native and settings.exclusive:
            port.exclusive = True
        if settings.dtr is not None:
            port.dtr = settings.dtr
        if settings.rts is not None:
            port.rts = settings.rts
        port.open()
    except (serial.SerialException, OSError, ValueError) as exc:
        raise _open_error(settings.url, exc) from exc
    if native:
        _clear_hupcl(port)
    return port


class Transport:
    """A port with a reader thread, stale-output flush, reconnect and transcript."""

    def __init__(
        self,
        settings: PortSettings,
        trace: Optional[Transcript] = None,
        rx_trace: str = "lines",
        on_state: Optional[StateCallback] = None,
    ) -> None:
        if rx_trace not in ("lines", "count"):
            raise ValueError("rx_trace must be 'lines' (text devices) or 'count' (streams)")
        self.settings = settings
        self.tag = settings.tag or settings.url
        self._trace = trace
        self._rx_trace = rx_trace
        self._on_state = on_state
        self._port: Any = None
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._buffer = bytearray()
        self._sink: Optional[Sink] = None
        self._closing = threading.Event()
        self._connected = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.generation = 0  # +1 on every (re)connect
        self.lost_reason = ""
        self.disconnects = 0
        self.rx_bytes = 0
        self.dropped_bytes = 0
        self._trace_partial = bytearray()
        self._trace_count = 0
        self._trace_count_t = 0.0

    # --- lifecycle ---

    def open(self) -> Transport:
        self._port = open_serial(self.settings)
        _reset_input(self._port)
        self.generation = 1
        self._note(f"open {self.settings.url} {self.settings.baudrate} baud")
        self._connected.set()
        self._thread = threading.Thread(target=self._run, name=f"serial-{self.tag}", daemon=True)
        self._thread.start()
        if self.settings.settle_s > 0:
            time.sleep(self.settings.settle_s)
        self.flush_stale()
        return self

    def close(self) -> None:
        self._closing.set()
        port = self._port
        if port is not None:
            try:
                port.cancel_read()
            except Exception:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        with self._cond:
            port, self._port = self._port, None
            self._connected.clear()
            self._cond.notify_all()
        if port is not None:
            try:
                port.close()
            except Exception:
                pass
        self._flush_trace_count(force=True)
        self._note("close")

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    @property
    def port(self) -> Any:
        """The pyserial object (None while the device is gone)."""
        return self._port

    # --- the reader thread ---

    def _run(self) -> None:
        while not self._closing.is_set():
            port = self._port
            if port is None:
                if not self.settings.reconnect:
                    return
                if not self._reopen():
                    self._closing.wait(self.settings.retry_s)
                continue
            try:
                waiting = port.in_waiting
                data = port.read(waiting if waiting > 0 else 1)
            except Exception as exc:  # SerialException, OSError, or a port closed under us
                if self._closing.is_set():
                    return
                self._lost(f"{type(exc).__name__}: {exc}")
                continue
            if data:
                self._deliver(bytes(data), time.monotonic_ns())

    def _lost(self, reason: str) -> None:
        with self._cond:
            port, self._port = self._port, None
            self._connected.clear()
            self.lost_reason = reason
            self.disconnects += 1
            self._cond.notify_all()
        if port is not None:
            try:
                port.close()
            except Exception:
                pass
        self._note(f"lost: {reason}")
        if self._on_state is not None:
            self._on_state("lost", reason)

    def _reopen(self) -> bool:
        try:
            port = open_serial(self.settings)
        except PortOpenError:
            return False
        _reset_input(port)
        with self._cond:
            if self._closing.is_set():
                port.close()
                return False
            self._port = port
            self._buffer.clear()
            self.generation += 1
            self._connected.set()
            self._cond.notify_all()
        self._note(f"reconnected (generation {self.generation})")
        if self._on_state is not None:
            self._on_state("reconnected", self.settings.url)
        return True

    def _deliver(self, data: bytes, t_ns: int) -> None:
        self.rx_bytes += len(data)
        self._trace_rx(data)
        sink = self._sink
        if sink is not None:
            sink(data, t_ns)
            return
        with self._cond:
            room = MAX_BUFFER - len(self._buffer)
            if room < len(data):
                self.dropped_bytes += len(data) - max(room, 0)
                data = data[: max(room, 0)]
            self._buffer += data
            self._cond.notify_all()

    # --- transcript ---

    def _note(self, text: str) -> None:
        if self._trace is not None:
            self._trace.note(self.tag, text)

    def _trace_rx(self, data: bytes) -> None:
        if self._trace is None:
            return
        if self._rx_trace == "count":
            self._trace_count += len(data)
            self._flush_trace_count()
            return
        self._trace_partial += data
        while True:
            end = self._trace_partial.find(b"\n")
            if end < 0:
                break
            line = bytes(self._trace_partial[:end])
            del self._trace_partial[: end + 1]
            self._trace.rx_line(self.tag, line.decode("latin-1").rstrip("\r"))

    def _flush_trace_count(self, force: bool = False) -> None:
        if self._trace is None or self._rx_trace != "count" or not self._trace_count:
            return
        now = time.monotonic()
        if force or now - self._trace_count_t >= 1.0:
            self._trace.rx_count(self.tag, self._trace_count)
            self._trace_count = 0
            self._trace_count_t = now

    # --- host -> device ---

    def write(self, data: bytes) -> None:
        """Send ``data``; raises :class:`DeviceDisconnected` while the device is gone."""
        with self._write_lock:
            port = self._port
            if port is None:
                raise DeviceDisconnected(self._gone_message())
            if self._trace is not None:
                self._trace.tx(self.tag, data)
            try:
                port.write(data)
                port.flush()
            except Exception as exc:
                raise DeviceDisconnected(
                    f"{self.settings.url}: write failed ({exc}); the device was unplugged or "
                    "reset -- it is reopened automatically when it comes back"
                ) from exc

    def _gone_message(self) -> str:
        why = f" ({self.lost_reason})" if self.lost_reason else ""
        return (
            f"{self.settings.url} is disconnected{why}; waiting for it to come back "
            "(check the USB cable and power)"
        )

    # --- device -> host ---

    def set_sink(self, sink: Optional[Sink]) -> None:
        """Send received bytes to ``sink`` (streams) instead of the line buffer (None)."""
        with self._cond:
            if sink is not None and self._buffer:
                pending = bytes(self._buffer)
                self._buffer.clear()
                sink(pending, time.monotonic_ns())
            self._sink = sink

    def read_line(self, timeout_s: float, generation: Optional[int] = None) -> Optional[str]:
        """The next line without its ``\\r\\n`` and NUL bytes, decoded as Latin-1 (never fails
        on garbage), or None after ``timeout_s``. Raises :class:`DeviceDisconnected` when the
        device is gone, or was replaced since ``generation``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                self._check(generation)
                end = self._buffer.find(b"\n")
                if end >= 0:
                    raw = bytes(self._buffer[:end])
                    del self._buffer[: end + 1]
                    return raw.replace(b"\r", b"").replace(b"\x00", b"").decode("latin-1")
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def read_until(
        self, marker: bytes, timeout_s: float, generation: Optional[int] = None
    ) -> Optional[bytes]:
        """Bytes up to and including ``marker``, or None after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                self._check(generation)
                end = self._buffer.find(marker)
                if end >= 0:
                    raw = bytes(self._buffer[: end + len(marker)])
                    del self._buffer[: end + len(marker)]
                    return raw
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def _check(self, generation: Optional[int]) -> None:
        if not self._connected.is_set():
            raise DeviceDisconnected(self._gone_message())
        if generation is not None and generation != self.generation:
            raise DeviceDisconnected(
                f"{self.settings.url} was disconnected and came back (reset) during the command"
            )

    def pending(self) -> bytes:
        with self._cond:
            return bytes(self._buffer)

    def clear(self) -> bytes:
        """Discard (and return) everything received and not read yet."""
        with self._cond:
            data = bytes(self._buffer)
            self._buffer.clear()
            return data

    def flush_stale(self, quiet_s: Optional[float] = None, max_s: Optional[float] = None) -> int:
        """Discard output until the port was quiet for ``quiet_s`` (at most ``max_s``): the
        leftovers of a previous session. Returns how many bytes were thrown away."""
        # The OS buffer is the reader thread's to drain: a tcflush() between its select() and
        # read() would make pyserial report a disconnect. Only our buffer is discarded here.
        quiet_s = self.settings.quiet_s if quiet_s is None else quiet_s
        max_s = self.settings.flush_max_s if max_s is None else max_s
        deadline = time.monotonic() + max_s
        dropped = 0
        with self._cond:
            while True:
                dropped += len(self._buffer)
                self._buffer.clear()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                before = self.rx_bytes
                self._cond.wait(min(quiet_s, left))
                if self.rx_bytes == before:
                    break
        if dropped:
            self._note(f"flushed {dropped} stale bytes")
        return dropped
