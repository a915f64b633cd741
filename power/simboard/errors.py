"""The simulated boards' base error."""

from __future__ import annotations

from power.errors import PowerError


class SimBoardError(PowerError):
    """The simulated tree cannot do what was asked (wrong root, unknown or removed rail)."""
