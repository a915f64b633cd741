"""Content-addressed model cache: ``<root>/<sha256>`` for verified blobs, ``<sha256>.part``
for a download in progress.

A blob becomes visible only after its sha256 matched: the ``.part`` file is verified, fsynced
and renamed atomically. A ``.part`` that survived a crash resumes at its size; if its content
was torn, the final hash check fails and the download starts over. Names are checked against
the sha256 pattern before any path is built from them, so a message can never choose a path.

Size cap with LRU eviction by last use (file mtime, touched on every :meth:`get`); blobs that
a queued or running job needs are never evicted.

Python 3.8 compatible.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Iterable, List, Optional, Set, Tuple

SHA256_RE = re.compile(r"[0-9a-f]{64}")
PART_SUFFIX = ".part"
_READ_CHUNK = 1024 * 1024


class BlobError(Exception):
    """A blob cannot be stored; the message says why."""


class BlobMismatch(BlobError):
    """The downloaded bytes do not hash to the requested sha256 (the partial file is gone)."""


def _check(sha256: str) -> str:
    if not isinstance(sha256, str) or not SHA256_RE.fullmatch(sha256):
        raise BlobError(f"not a sha256 (64 lowercase hex digits): {sha256!r}")
    return sha256


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_READ_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobCache:
    def __init__(self, root: os.PathLike, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _blob(self, sha256: str) -> Path:
        return self.root / _check(sha256)

    def _part(self, sha256: str) -> Path:
        return self.root / (_check(sha256) + PART_SUFFIX)

    def get(self, sha256: str) -> Optional[Path]:
        """The verified blob's path, or None; marks it as just used."""
        path = self._blob(sha256)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def partial_size(self, sha256: str) -> int:
        """Bytes of an unfinished download already on disk: resume from here."""
        try:
            return self._part(sha256).stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, sha256: str, offset: int, data: bytes) -> int:
        """Write a chunk at ``offset``, which must be the current partial size (chunks
        arrive in order; a stale or repeated chunk raises). Returns the new size."""
        part = self._part(sha256)
        with self._lock:
            size = self.partial_size(sha256)
            if offset != size:
                raise BlobError(f"chunk at offset {offset} for {sha256}, expected {size}")
            with open(part, "ab") as f:
                f.write(data)
            return size + len(data)

    def discard(self, sha256: str) -> None:
        """Drop an unfinished download."""
        try:
            self._part(sha256).unlink()
        except FileNotFoundError:
            pass

    def finish(self, sha256: str, total: int, keep: Iterable[str] = ()) -> Path:
        """Verify the complete ``.part`` (size ``total``, sha256) and publish it atomically;
        then evict least recently used blobs not in ``keep`` until under the cap. Raises
        :class:`BlobMismatch` (and deletes the partial file) if the bytes are wrong."""
        part = self._part(sha256)
        blob = self._blob(sha256)
        with self._lock:
            size = part.stat().st_size
            actual = file_sha256(part) if size == total else None
            if actual != sha256:
                part.unlink()
                got = f"sha256 {actual}" if actual else f"{size} bytes, expected {total}"
                raise BlobMismatch(f"downloaded blob {sha256} is corrupt ({got}); fetch it again")
            with open(part, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(str(part), str(blob))
            _fsync_dir(self.root)
        self.evict(set(keep) | {sha256})
        return blob

    def check_fits(self, total: int) -> None:
        if total > self.max_bytes:
            raise BlobError(
                f"blob of {total} bytes exceeds the cache size limit of {self.max_bytes} "
                "bytes (raise cache_max_bytes in the agent config)"
            )

    def _entries(self) -> List[Tuple[float, int, Path]]:
        out = []
        for path in self.root.iterdir():
            if SHA256_RE.fullmatch(path.name):
                st = path.stat()
                out.append((st.st_mtime, st.st_size, path))
        return sorted(out)

    def used_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def evict(self, keep: Set[str]) -> List[str]:
        """Delete least recently used blobs not in ``keep`` while over the cap; returns the
        evicted sha256s. A needed blob is never deleted, even if that leaves the cache over."""
        with self._lock:
            entries = self._entries()
            used = sum(size for _, size, _ in entries)
            evicted = []
            for _, size, path in entries:
                if used <= self.max_bytes:
                    break
                if path.name in keep:
                    continue
                path.unlink()
                used -= size
                evicted.append(path.name)
            return evicted
