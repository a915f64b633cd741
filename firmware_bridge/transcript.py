"""The transcript log (``--trace FILE``): every byte the host sent and every line (or, for
binary streams, byte count) it received, with a timestamp, so a failed session can be read
afterwards without a logic analyser.

Format, one event per line::

    <seconds since open, 6 decimals> <port tag> <direction> <payload>

direction is ``tx`` (host -> device, Python ``repr`` of the bytes), ``rx`` (one received line,
``repr`` of its text), ``rxn`` (a byte count of a binary stream, summed per second) or ``ev``
(open, close, disconnect, reconnect, flush). Several ports may share one transcript; each writes
under its own tag.
"""

from __future__ import annotations

import threading
import time
from typing import IO, Optional, Union


class Transcript:
    """A thread-safe, line-buffered transcript file."""

    def __init__(self, target: Union[str, IO[str]]) -> None:
        if isinstance(target, str):
            self._file: IO[str] = open(target, "a", encoding="utf-8", buffering=1)
            self._owned = True
        else:
            self._file = target
            self._owned = False
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self.path = target if isinstance(target, str) else None
        self._write(f"# halofarm firmware_bridge transcript, opened {time.strftime('%FT%T%z')}")

    def _write(self, text: str) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(text + "\n")

    def event(self, tag: str, direction: str, payload: str) -> None:
        self._write(f"{time.monotonic() - self._t0:12.6f} {tag} {direction} {payload}")

    def tx(self, tag: str, data: bytes) -> None:
        self.event(tag, "tx", repr(data))

    def rx_line(self, tag: str, line: str) -> None:
        self.event(tag, "rx", repr(line))

    def rx_count(self, tag: str, count: int) -> None:
        self.event(tag, "rxn", str(count))

    def note(self, tag: str, text: str) -> None:
        self.event(tag, "ev", text)

    def close(self) -> None:
        with self._lock:
            if self._owned and not self._file.closed:
                self._file.close()


def open_transcript(path: Optional[str]) -> Optional[Transcript]:
    """A transcript writing to ``path``, or None when no path is given."""
    return Transcript(path) if path else None
