"""The content-addressed model cache (verify before visible, resume, LRU eviction) and the
chunked download that fills it."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from agent import blobfetch
from agent.blobcache import BlobCache, BlobError, BlobMismatch
from agent.blobfetch import BlobFetcher, FetchError, Interrupted
from protocol import BlobChunk, decode


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store(cache: BlobCache, data: bytes, chunk: int = 7) -> str:
    digest = sha(data)
    for offset in range(0, len(data), chunk):
        cache.append(digest, offset, data[offset : offset + chunk])
    cache.finish(digest, len(data))
    return digest


def test_blob_is_visible_only_after_verification(tmp_path):
    cache = BlobCache(tmp_path / "blobs", max_bytes=1 << 20)
    data = os.urandom(100)
    digest = sha(data)
    cache.append(digest, 0, data[:60])
    cache.append(digest, 60, data[60:])
    assert cache.get(digest) is None
    assert not (tmp_path / "blobs" / digest).exists()
    path = cache.finish(digest, len(data))
    assert path == tmp_path / "blobs" / digest
    assert path.read_bytes() == data
    assert cache.get(digest) == path
    assert not (tmp_path / "blobs" / (digest + ".part")).exists()
    assert cache.partial_size(digest) == 0


def test_corrupt_download_is_deleted_not_published(tmp_path):
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    data = b"the real model"
    digest = sha(data)
    cache.append(digest, 0, b"the fake model")
    with pytest.raises(BlobMismatch, match="corrupt"):
        cache.finish(digest, len(data))
    assert cache.get(digest) is None
    assert cache.partial_size(digest) == 0


def test_short_download_is_rejected(tmp_path):
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    data = b"0123456789"
    digest = sha(data)
    cache.append(digest, 0, data[:4])
    with pytest.raises(BlobMismatch, match="4 bytes, expected 10"):
        cache.finish(digest, len(data))


def test_partial_download_resumes_in_a_new_process(tmp_path):
    data = os.urandom(1000)
    digest = sha(data)
    BlobCache(tmp_path, max_bytes=1 << 20).append(digest, 0, data[:300])

    cache = BlobCache(tmp_path, max_bytes=1 << 20)  # after a restart
    offset = cache.partial_size(digest)
    assert offset == 300
    cache.append(digest, offset, data[offset:])
    assert cache.finish(digest, len(data)).read_bytes() == data


def test_chunk_at_the_wrong_offset_is_refused(tmp_path):
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    digest = sha(b"abcdef")
    cache.append(digest, 0, b"abc")
    with pytest.raises(BlobError, match="expected 3"):
        cache.append(digest, 0, b"abc")  # a redelivered chunk
    with pytest.raises(BlobError, match="expected 3"):
        cache.append(digest, 5, b"f")
    assert cache.partial_size(digest) == 3


@pytest.mark.parametrize("name", ["../../etc/passwd", "A" * 64, "ab" * 31, "", "/tmp/x"])
def test_names_that_are_not_sha256_never_become_paths(tmp_path, name):
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    with pytest.raises(BlobError, match="not a sha256"):
        cache.get(name)
    with pytest.raises(BlobError, match="not a sha256"):
        cache.append(name, 0, b"x")


def test_lru_eviction_drops_the_least_recently_used(tmp_path):
    cache = BlobCache(tmp_path, max_bytes=350)
    a, b, c = (store(cache, bytes([i]) * 100) for i in range(3))
    for stamp, digest in ((1000.0, a), (2000.0, b), (3000.0, c)):
        os.utime(cache.root / digest, (stamp, stamp))
    assert cache.get(a) is not None  # used just now: the most recent
    d = store(cache, b"\xff" * 100)  # 400 bytes > 350: one must go
    assert cache.get(b) is None
    assert all(cache.get(x) is not None for x in (a, c, d))
    assert cache.used_bytes() == 300


def test_eviction_never_deletes_a_blob_a_job_needs(tmp_path):
    cache = BlobCache(tmp_path, max_bytes=150)
    a = store(cache, b"a" * 100)
    os.utime(cache.root / a, (1.0, 1.0))  # the oldest by far
    digest = sha(b"b" * 100)
    cache.append(digest, 0, b"b" * 100)
    cache.finish(digest, 100, keep={a})
    assert cache.get(a) is not None  # over the cap, but queued work needs it
    assert cache.get(digest) is not None
    assert cache.evict(keep=set()) == [a]  # once no job needs it, it goes first


def test_blob_larger_than_the_cache_is_refused_up_front(tmp_path):
    cache = BlobCache(tmp_path, max_bytes=1024 * 1024)
    cache.check_fits(1024 * 1024)
    with pytest.raises(BlobError, match="cache_max_bytes"):
        cache.check_fits(1024 * 1024 + 1)


# --- BlobFetcher: the chunked download, with the coordinator played by a test thread ---


class Server:
    """Answers blob requests the way the coordinator does, from another thread."""

    def __init__(self, blobs, chunk=5, before=None):
        self.blobs = blobs
        self.chunk = chunk
        self.before = before or (lambda req: [])  # extra (stale) chunks sent first
        self.requests = []
        self.fetcher = None

    def send(self, topic, payload, qos):
        req = decode(payload, expect_type="blob_req").body
        self.requests.append((topic, req.offset, req.length))
        threading.Thread(target=self._answer, args=(req,)).start()

    def _answer(self, req):
        for extra in self.before(req):
            self.fetcher.deliver(extra)
        data = self.blobs.get(req.sha256)
        if data is None:
            self.fetcher.deliver(BlobChunk(req.sha256, req.offset, 0, "", error="unknown blob"))
            return
        piece = data[req.offset : req.offset + min(req.length, self.chunk)]
        self.fetcher.deliver(BlobChunk.of(req.sha256, req.offset, len(data), piece))


def fetcher_for(tmp_path, server, max_bytes=1 << 20):
    cache = BlobCache(tmp_path / "blobs", max_bytes=max_bytes)
    server.fetcher = BlobFetcher("dev1", cache, "halo/v1/dev/dev1/blob/req", server.send)
    return server.fetcher


def no_interrupt():
    return False


def test_fetch_downloads_in_chunks_verifies_and_caches(tmp_path):
    data = os.urandom(23)
    server = Server({sha(data): data})
    fetcher = fetcher_for(tmp_path, server)
    seen = []
    path = fetcher.fetch(sha(data), lambda *p: seen.append(p), set, no_interrupt)
    assert path.read_bytes() == data
    assert [r[1] for r in server.requests] == [0, 5, 10, 15, 20]
    assert server.requests[-1] == ("halo/v1/dev/dev1/blob/req", 20, 3)  # only what is left
    assert seen[-1] == ("fetch", 23, 23)
    server.requests.clear()
    assert fetcher.fetch(sha(data), lambda *p: None, set, no_interrupt) == path
    assert server.requests == []  # cached


def test_fetch_resumes_a_partial_download(tmp_path):
    data = os.urandom(40)
    server = Server({sha(data): data}, chunk=10)
    fetcher = fetcher_for(tmp_path, server)
    fetcher.cache.append(sha(data), 0, data[:17])  # left by a crash
    assert fetcher.fetch(sha(data), lambda *p: None, set, no_interrupt).read_bytes() == data
    assert [r[1] for r in server.requests] == [17, 27, 37]


def test_fetch_skips_stale_and_foreign_chunks(tmp_path):
    data = os.urandom(12)
    other = sha(b"other")

    def stale(req):
        return [
            BlobChunk.of(req.sha256, 0 if req.offset else 6, 12, b"x"),
            BlobChunk.of(other, req.offset, 100, b"y" * 5),
        ]

    server = Server({sha(data): data}, chunk=6, before=stale)
    fetcher = fetcher_for(tmp_path, server)
    assert fetcher.fetch(sha(data), lambda *p: None, set, no_interrupt).read_bytes() == data


def test_fetch_of_an_unknown_blob_fails_with_the_coordinators_reason(tmp_path):
    fetcher = fetcher_for(tmp_path, Server({}))
    with pytest.raises(FetchError, match="cannot serve model .*: unknown blob"):
        fetcher.fetch("c" * 64, lambda *p: None, set, no_interrupt)


def test_fetch_refuses_a_blob_larger_than_the_cache(tmp_path):
    data = b"z" * 2000
    fetcher = fetcher_for(tmp_path, Server({sha(data): data}), max_bytes=1000)
    with pytest.raises(FetchError, match="exceeds the cache size limit"):
        fetcher.fetch(sha(data), lambda *p: None, set, no_interrupt)


def test_fetch_of_corrupt_bytes_fails_and_leaves_nothing(tmp_path):
    data = b"genuine model bytes"
    claimed = sha(b"what the coordinator should have had")
    fetcher = fetcher_for(tmp_path, Server({claimed: data}))
    with pytest.raises(FetchError, match="corrupt"):
        fetcher.fetch(claimed, lambda *p: None, set, no_interrupt)
    assert fetcher.cache.get(claimed) is None and fetcher.cache.partial_size(claimed) == 0


def test_fetch_without_answers_gives_up(tmp_path, monkeypatch):
    monkeypatch.setattr(blobfetch, "REQUEST_TIMEOUT_S", 0.05)
    monkeypatch.setattr(blobfetch, "TRIES", 3)
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    sent = []
    fetcher = BlobFetcher("dev1", cache, "req", lambda *m: sent.append(m))
    with pytest.raises(FetchError, match="no answer .* after 3 requests"):
        fetcher.fetch("d" * 64, lambda *p: None, set, no_interrupt)
    assert len(sent) == 3


def test_fetch_stops_when_interrupted(tmp_path):
    cache = BlobCache(tmp_path, max_bytes=1 << 20)
    stop = threading.Event()
    fetcher = BlobFetcher("dev1", cache, "req", lambda *m: stop.set())
    with pytest.raises(Interrupted):
        fetcher.fetch("e" * 64, lambda *p: None, set, stop.is_set)


def test_deliver_never_blocks(tmp_path):
    fetcher = BlobFetcher("dev1", BlobCache(tmp_path, 1 << 20), "req", lambda *m: None)
    for i in range(blobfetch.QUEUE_SIZE + 10):
        fetcher.deliver(BlobChunk.of("f" * 64, i, 1000, b"q"))
