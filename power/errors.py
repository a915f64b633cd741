"""Errors of the power package; each message says what to do about it."""

from __future__ import annotations


class PowerError(Exception):
    """Base class for power-measurement errors."""


class SourceNotFound(PowerError):
    """A named power source does not exist on this board."""


class ReadError(PowerError):
    """One rail could not be read this time (file gone, unreadable, garbage content)."""


class RailPolicyError(PowerError):
    """The configured total-power rails do not exist on this board."""
