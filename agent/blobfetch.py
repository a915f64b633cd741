"""Model download over MQTT: ``blob/req`` requests, ``blob/data`` chunks, into the blob cache.

One chunk at a time, in order: request the chunk at the current offset, wait for the answer
(stale or duplicated chunks are skipped), append, repeat; a partial file left by a crash is
resumed at its size. The cache verifies the sha256 before the model becomes visible.

Chunks are taken only for the blob being fetched -- one a queued job needs, so one named in a
command the agent accepted (and authenticated, with a command key); anything else that arrives
on the blob topic is dropped unread.

Python 3.8 compatible.
"""

from __future__ import annotations

import logging
import queue
import time
from pathlib import Path
from typing import Callable, Optional, Set

from protocol import CHUNK_MAX, BlobChunk, BlobRequest, encode, make

from .blobcache import BlobCache, BlobError

log = logging.getLogger(__name__)

# send(topic, payload, qos): publish without the outbox.
Send = Callable[[str, bytes, int], None]
# progress(phase, done, total)
Progress = Callable[[str, int, Optional[int]], None]

REQUEST_TIMEOUT_S = 20.0  # wait for one chunk
TRIES = 6  # requests for one chunk before the download fails
POLL_S = 1.0  # how often an interrupt is noticed while waiting
PROGRESS_INTERVAL_S = 1.0
QUEUE_SIZE = 16


class FetchError(Exception):
    """The model could not be fetched; the message is the job's failure reason."""


class Interrupted(Exception):
    """``interrupted()`` turned true while downloading."""


class BlobFetcher:
    def __init__(
        self,
        device: str,
        cache: BlobCache,
        request_topic: str,
        send: Send,
    ) -> None:
        self.device = device
        self.cache = cache
        self.request_topic = request_topic
        self.send = send
        # Bounded: chunks nobody asked for (stale, duplicated, hostile) must not pile up.
        self._chunks: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self._wanted: Optional[str] = None  # sha256 being fetched (set by the worker thread)

    def deliver(self, chunk: BlobChunk) -> None:
        """A chunk arrived (from the daemon's main loop; never blocks: extras are dropped)."""
        if chunk.sha256 != self._wanted:
            log.warning("blob chunk %s@%d dropped: not being fetched", chunk.sha256, chunk.offset)
            return
        try:
            self._chunks.put_nowait(chunk)
        except queue.Full:
            log.warning("blob chunk %s@%d dropped: none is expected", chunk.sha256, chunk.offset)

    def fetch(
        self,
        sha256: str,
        progress: Progress,
        keep: Callable[[], Set[str]],
        interrupted: Callable[[], bool],
    ) -> Path:
        """The verified model, from the cache or downloaded. ``keep()`` names blobs the cache
        must not evict to make room. Raises FetchError, or Interrupted as soon as
        ``interrupted()`` is true."""
        cached = self.cache.get(sha256)
        if cached is not None:
            return cached
        self._wanted = sha256
        try:
            return self._download(sha256, progress, keep, interrupted)
        finally:
            self._wanted = None

    def _download(
        self,
        sha256: str,
        progress: Progress,
        keep: Callable[[], Set[str]],
        interrupted: Callable[[], bool],
    ) -> Path:
        offset = self.cache.partial_size(sha256)
        resumed = offset > 0
        total: Optional[int] = None
        last_report = 0.0
        while total is None or offset < total:
            chunk = self._request(sha256, offset, total, interrupted)
            if chunk.error is not None:
                if resumed:  # e.g. the partial file is as long as the blob: start over
                    self.cache.discard(sha256)
                    offset, resumed = 0, False
                    continue
                raise FetchError(f"the coordinator cannot serve model {sha256}: {chunk.error}")
            if total is None:
                total = chunk.total
                try:
                    self.cache.check_fits(total)
                except BlobError as e:
                    raise FetchError(str(e)) from None
            elif chunk.total != total:
                self.cache.discard(sha256)
                raise FetchError(f"model {sha256} changed size during the download")
            data = chunk.payload()
            if not data and offset < total:
                raise FetchError(f"empty chunk at offset {offset} of model {sha256}")
            offset = self.cache.append(sha256, offset, data)
            now = time.monotonic()
            if now - last_report >= PROGRESS_INTERVAL_S or offset >= total:
                progress("fetch", offset, total)
                last_report = now
        try:
            return self.cache.finish(sha256, total, keep=keep())
        except BlobError as e:
            raise FetchError(str(e)) from None

    def _drain(self) -> None:
        while True:
            try:
                self._chunks.get_nowait()
            except queue.Empty:
                return

    def _request(
        self, sha256: str, offset: int, total: Optional[int], interrupted: Callable[[], bool]
    ) -> BlobChunk:
        """Request the chunk at ``offset`` until it arrives."""
        length = CHUNK_MAX if total is None else max(1, min(CHUNK_MAX, total - offset))
        body = BlobRequest(sha256=sha256, offset=offset, length=length)
        request = encode(make(body, self.device))
        for _ in range(TRIES):
            if interrupted():
                raise Interrupted()
            self._drain()
            self.send(self.request_topic, request, 1)
            deadline = time.monotonic() + REQUEST_TIMEOUT_S
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    chunk = self._chunks.get(timeout=min(remaining, POLL_S))
                except queue.Empty:
                    chunk = None
                if chunk is not None and chunk.sha256 == sha256 and chunk.offset == offset:
                    return chunk
                if interrupted():
                    raise Interrupted()
        raise FetchError(
            f"no answer from the coordinator for model {sha256} at offset {offset} "
            f"after {TRIES} requests"
        )
