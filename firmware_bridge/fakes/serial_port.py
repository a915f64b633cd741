"""The in-process host side of a fake: a pyserial port class for our URL schemes.

One device lives per URL (the full string, parameters included) in a registry, so closing and
reopening the URL -- what :class:`~firmware_bridge.transport.Transport` does after an unplug --
reaches the same device, booted afresh. Unplugged, it fails to open with the same ``ENOENT``
error a vanished ``/dev/ttyACM0`` gives; while open, reads and writes fail as pyserial's own
do when a USB device disappears. Give each test its own URL (``?id=...``) for its own device.
"""

from __future__ import annotations

import errno
import threading
import time
from typing import Dict

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from firmware_bridge.fakes.core import FakeDevice, parse_url
from firmware_bridge.urlschemes import SCHEMES

MAX_BUFFER = 16 * 1024 * 1024

_registry: Dict[str, FakeDevice] = {}
_registry_lock = threading.Lock()


def _key(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return scheme.lower().replace("_", "-") + "://" + rest


def device_for_url(url: str) -> FakeDevice:
    """The (started) device behind ``url``, created on first use."""
    from firmware_bridge.fakes.registry import make_device

    key = _key(url)
    with _registry_lock:
        device = _registry.get(key)
        if device is None or not device.running:
            device = make_device(key)
            device.start()
            _registry[key] = device
        return device


def forget(url: str) -> None:
    """Stop and drop the device behind ``url`` (tests call this when done)."""
    with _registry_lock:
        device = _registry.pop(_key(url), None)
    if device is not None:
        device.stop()


def forget_all() -> None:
    with _registry_lock:
        devices = list(_registry.values())
        _registry.clear()
    for device in devices:
        device.stop()


class FakeSerial(SerialBase):
    """A pyserial port connected to a fake device in this process."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._device = None
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._hung = False
        self._cancel = False
        self.overrun_bytes = 0
        super().__init__(*args, **kwargs)

    def open(self) -> None:
        if self.is_open:
            raise SerialException("Port is already open.")
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        scheme, _, _ = parse_url(self._port)
        if scheme not in SCHEMES:
            raise SerialException(f"unknown fake scheme {scheme!r}")
        try:
            device = device_for_url(self._port)
        except ValueError as exc:
            raise SerialException(f"could not open port {self._port}: {exc}") from None
        if not device.plugged:
            raise SerialException(
                errno.ENOENT,
                f"could not open port {self._port}: [Errno 2] No such file or directory",
            )
        self._device = device
        self._buf.clear()
        self._hung = False
        self.is_open = True
        device.attach(self)
        self._reconfigure_port()
        if not self._dsrdtr:
            self._update_dtr_state()
        if not self._rtscts:
            self._update_rts_state()

    def close(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            device.detach(self)
        self.is_open = False
        with self._cond:
            self._cond.notify_all()

    def _reconfigure_port(self) -> None:
        if getattr(self._device, "set_baudrate", None) is not None:
            self._device.set_baudrate(self._baudrate)

    def _update_dtr_state(self) -> None:
        if self._device is not None:
            self._device.on_dtr(bool(self._dtr_state))

    def _update_rts_state(self) -> None:
        pass

    def _update_break_state(self) -> None:
        pass

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True

    # --- link side (called by the device) ---

    def deliver(self, data: bytes) -> None:
        with self._cond:
            room = MAX_BUFFER - len(self._buf)
            if room < len(data):
                self.overrun_bytes += len(data) - max(room, 0)
                data = data[: max(room, 0)]
            self._buf += data
            self._cond.notify_all()

    def hangup(self) -> None:
        with self._cond:
            self._hung = True
            self._cond.notify_all()

    # --- host side ---

    @property
    def in_waiting(self) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        return len(self._buf)

    def read(self, size: int = 1) -> bytes:
        if not self.is_open:
            raise PortNotOpenError()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        with self._cond:
            while len(self._buf) < size:
                if self._hung and not self._buf:
                    raise SerialException(
                        "device reports readiness to read but returned no data "
                        "(device disconnected or multiple access on port?)"
                    )
                if self._cancel or not self.is_open:
                    break
                if deadline is None:
                    self._cond.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._cancel = False
            data = bytes(self._buf[:size])
            del self._buf[:size]
            return data

    def write(self, data: bytes) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        if self._hung or self._device is None:
            raise SerialException(errno.EIO, "write failed: [Errno 5] Input/output error")
        data = bytes(data)
        self._device.receive(data)
        return len(data)

    def flush(self) -> None:
        pass

    def reset_input_buffer(self) -> None:
        with self._cond:
            self._buf.clear()

    def reset_output_buffer(self) -> None:
        pass

    def cancel_read(self) -> None:
        with self._cond:
            self._cancel = True
            self._cond.notify_all()

    def cancel_write(self) -> None:
        pass
