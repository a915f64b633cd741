"""Reading sysfs attributes the way a sampler must: open once, ``pread`` at offset 0 each time
(sysfs regenerates the content on every read from offset 0), never block the caller on a
missing file.

Every path is taken relative to a ``sysfs_root`` (default ``/``) so the same readers run on a
board and on a tree written by :mod:`power.simboard`.
"""

from __future__ import annotations

import errno
import glob
import os
import time
from typing import List, Optional

from power.errors import ReadError

READ_SIZE = 64
# Written at the root of a tree made by power.simboard: what is read there is "simulated".
SIM_MARKER = ".halofarm-simboard.json"
# A file that went away is looked for again at most this often, not on every sample.
REOPEN_INTERVAL_NS = 1_000_000_000


def under(root: str, path: str) -> str:
    """``path`` (absolute, as on a board) inside ``root``."""
    return os.path.join(root, path.lstrip("/"))


def find(root: str, pattern: str) -> List[str]:
    """Sorted matches of a board-absolute glob ``pattern`` inside ``root``."""
    return sorted(glob.glob(under(root, pattern)))


def read_text(path: str) -> Optional[str]:
    """The stripped content of a small file, or None if it is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode("utf-8", "replace").strip()
    except OSError:
        return None


def first_token(data: bytes) -> str:
    """``b"1200 mw\\n"`` -> ``"1200"``: the value without the unit some attributes append."""
    line = data.split(b"\n", 1)[0].strip()
    return line.split(b" ", 1)[0].decode("ascii", "replace") if line else ""


def parse_int(data: bytes, path: str) -> int:
    token = first_token(data)
    try:
        return int(token)
    except ValueError:
        shown = data[:24].decode("ascii", "replace").strip()
        raise ReadError(f"{path}: not a number: {shown!r}") from None


class Attr:
    """One attribute, kept open. :meth:`read_int` raises :class:`ReadError` (never OSError)
    when the file is gone, unreadable or holds garbage; the next call tries again."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: Optional[int] = None
        self._retry_at = 0

    def _open(self) -> int:
        now = time.monotonic_ns()
        if now < self._retry_at:
            raise ReadError(f"{self.path}: gone")
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            self._retry_at = now + REOPEN_INTERVAL_NS
            raise ReadError(f"{self.path}: {e.strerror or e}") from None
        return self.fd

    def read_bytes(self) -> bytes:
        fd = self.fd if self.fd is not None else self._open()
        try:
            data = os.pread(fd, READ_SIZE, 0)
            # A removed device reads ENODEV on a board; a simulated tree's deleted file still
            # reads its old bytes, so look at the link count to get the same outcome.
            if os.fstat(fd).st_nlink == 0:
                raise OSError(errno.ENODEV, "device removed")
        except OSError as e:
            self.close()
            self._retry_at = time.monotonic_ns() + REOPEN_INTERVAL_NS
            raise ReadError(f"{self.path}: {e.strerror or e}") from None
        return data

    def read_int(self) -> int:
        return parse_int(self.read_bytes(), self.path)

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
