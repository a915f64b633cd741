"""The one exception every protocol failure raises."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A message, topic or field broke the protocol.

    ``field`` is the dotted path of the offending part (``body.bench.threads``, ``schema``,
    ``topic``); ``reason`` says what was expected and what arrived. ``str()`` is
    ``"field: reason"`` so the text can go straight back to the sender in a rejection.
    """

    def __init__(self, field: str, reason: str) -> None:
        # Both go to ValueError so the exception pickles across process boundaries.
        super().__init__(field, reason)
        self.field = field
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason
