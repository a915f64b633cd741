"""The coordinator's user-facing error: something the user can fix (input, path, option)."""

from __future__ import annotations


class UserError(Exception):
    """Printed as one line by the CLI, exit code 2."""
