"""Errors of the serial bridge; each message says what happened and what to do about it."""

from __future__ import annotations

from typing import List, Optional, Sequence


class BridgeError(Exception):
    """Base class of every firmware_bridge error."""


class PortOpenError(BridgeError):
    """The port could not be opened (missing, busy, no permission, bad URL)."""


class PortBusy(PortOpenError):
    """Another process holds the exclusive lock on the port."""


class NotFound(BridgeError):
    """No attached serial device matches the search (VID/PID/serial number)."""


class DeviceDisconnected(BridgeError):
    """The device went away (USB unplug, reset, cable) while we were talking to it."""


class CommandTimeout(BridgeError):
    """The device did not finish its reply in time; ``lines`` holds what did arrive."""

    def __init__(self, message: str, lines: Optional[Sequence[str]] = None) -> None:
        super().__init__(message)
        self.lines: List[str] = list(lines or [])


class DeviceError(BridgeError):
    """The device answered with an error (``e-[...]``); ``text`` is the device's own words."""

    def __init__(self, message: str, text: str, lines: Optional[Sequence[str]] = None) -> None:
        super().__init__(message)
        self.text = text
        self.lines: List[str] = list(lines or [])


class ProtocolError(BridgeError):
    """A reply did not follow the documented protocol (missing or malformed lines)."""


class CommandTooLong(BridgeError, ValueError):
    """A command would overflow the device's command buffer and be silently truncated."""


class MeterError(BridgeError):
    """A power meter refused a command, sent no data, or lost too many samples."""
