"""Errors of the halo package; each message says what to do about it."""

from __future__ import annotations


class HaloError(Exception):
    """Base class for halo errors."""


class Stopped(Exception):
    """The caller asked a running adaptation to stop (a cancelled job, a shutdown); not an
    error of the input, so deliberately not a :class:`HaloError`."""


class ConfigError(HaloError, ValueError):
    """A setting (schedule string, option name, size) is not valid."""


class ShapeError(HaloError, ValueError):
    """Parameters, gradients, masks or optimizer state do not line up."""


class CheckpointError(HaloError):
    """A learned-optimizer checkpoint cannot be read."""


class CheckpointArchitectureError(CheckpointError):
    """A checkpoint was saved for a different learned-optimizer architecture."""


class TaskDataError(HaloError, ValueError):
    """Task data (a CSV file, arrays) is unusable."""


class MissingLabelError(TaskDataError):
    """A task CSV has no label column."""


class NonFiniteValueError(TaskDataError):
    """A task CSV has an empty, non-numeric or non-finite cell."""


class FeatureMismatchError(TaskDataError):
    """The two domains of a task do not have the same features."""


class TaskDependencyError(HaloError, ImportError):
    """A task needs an optional package that is not installed."""
