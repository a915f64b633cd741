"""Ingest: MQTT messages from the devices into the store, each exactly once, acked after commit.

One paho client (MQTT 5, persistent session under a stable client id, ``manual_ack=True``)
decodes and validates every message in its network thread and queues it to a writer thread.
The writer takes a batch (up to ``batch_max`` messages, or what arrived within ``batch_ms`` of
the first), writes it in one transaction, and only after the commit hands the batch back to be
acked: by the network thread before the next message it handles, or by the writer if the
stream pauses first. A crash anywhere before the commit means no ack, so the broker redelivers
to this session when it comes back; a crash after the commit but before the ack means a
redelivery that ``result_id`` absorbs. An invalid message is counted in ``rejects`` and acked
after that count is committed, so it is not redelivered forever.

Results and acks come through the shared subscription group ``ingest``, so several ingest
workers (distinct names, same store) split the stream; status, caps and heartbeats come through
plain subscriptions, since every coordinator view wants all of them. mosquitto 2.0 does not
keep shared subscriptions across a broker restart: results published after the restart and
before this worker re-subscribes are acked to the device with reason 16 "No matching
subscribers", which the device's outbox must treat as not delivered and send again.

Test hooks, read from the environment when an Ingestor is created:
``HALOFARM_TEST_INGEST_DIE_AFTER_COMMIT=N`` makes the process ``os._exit(86)`` right after its
N-th commit, before acking that batch; ``HALOFARM_TEST_INGEST_DIE_BEFORE_COMMIT=N`` right
before its N-th commit (the crash rolls the batch back). Used by the crash tests; never set
them in production.

Run a standalone worker with ``python -m coordinator.ingest --host H --port P [--store F]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import queue
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from coordinator.store import (
    ACK_WRONG_DEVICE,
    Store,
    StoreError,
    adapt_result_row,
    result_row,
)
from protocol import INGEST_SHARED, Envelope, ProtocolError, decode, filter_all, parse_topic

log = logging.getLogger(__name__)

SHARE_GROUP = "ingest"
# Results and acks: one worker of the group gets each. Device state: every coordinator view.
SHARED_FILTERS = (
    (INGEST_SHARED, 1),
    (f"$share/{SHARE_GROUP}/{filter_all('ack')}", 1),
    (f"$share/{SHARE_GROUP}/{filter_all('adapt_result')}", 1),
)
PLAIN_FILTERS = ((filter_all("status"), 1), (filter_all("caps"), 1), (filter_all("hb"), 0))
# Never expire: the broker must keep queueing results for this session while the coordinator
# is away; the devices consider a result delivered once the broker has it.
SESSION_EXPIRY_S = 0xFFFFFFFF
KEEPALIVE_S = 30
DIE_AFTER_COMMIT_ENV = "HALOFARM_TEST_INGEST_DIE_AFTER_COMMIT"
DIE_BEFORE_COMMIT_ENV = "HALOFARM_TEST_INGEST_DIE_BEFORE_COMMIT"
TEST_DIE_EXIT_CODE = 86
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RETRY_S = (0.1, 0.5, 1.0, 5.0)  # writer back-off while the store refuses a batch
_LULL_S = 0.002  # no new message for this long ends a batch early
_HANDLED = ("result", "adapt_result", "ack", "status", "caps", "hb")
# Per-batch counters of _write, named as in IngestStats.
_COUNTERS = (
    "results_inserted",
    "results_duplicate",
    "adapt_results_inserted",
    "adapt_results_duplicate",
    "acks",
    "status",
    "caps",
    "hb",
    "rejected",
)
_STOP = object()


@dataclass
class IngestStats:
    """Counters since start(). ``messages`` were committed (and acked unless the connection
    dropped meanwhile); ``queued`` arrived but are not committed yet."""

    messages: int = 0
    results_inserted: int = 0
    results_duplicate: int = 0
    adapt_results_inserted: int = 0
    adapt_results_duplicate: int = 0
    acks: int = 0
    status: int = 0
    caps: int = 0
    hb: int = 0
    rejected: int = 0
    batches: int = 0
    acked: int = 0
    errors: int = 0
    connects: int = 0
    received: int = 0  # messages taken in (committed, waiting, or dropped while stopping)
    connected: bool = False
    subscribed: bool = False
    queued: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Item:
    """One received message, decoded and checked on arrival, waiting for commit and ack."""

    mid: int
    qos: int
    generation: int  # the connection it arrived on; its mid means nothing on another
    received_at: float
    topic: str
    device: str  # from the topic ("" if the topic is not ours)
    leaf: str
    env: Envelope | None = None  # None: rejected for `reason`
    row: tuple | None = None  # results: the row to insert
    adapt_row: tuple | None = None  # adapt results: the adapt_results row to insert
    reason: str = ""


def client_id(name: str) -> str:
    return f"halo-ingest-{name}"


class Ingestor:
    """Subscribe, store, ack. ``start()`` returns at once; ``stop()`` drains and disconnects.

    ``on_commit(results)`` (optional; set it before ``start()``) is called from the writer
    thread after each commit that stored new results, with the result envelopes of that batch
    (redelivered ones included), e.g. for a CLI waiting for its results. Without it, ingest
    does not keep decoded results once their rows are made.
    """

    def __init__(
        self,
        store: Store,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        name: str = "main",
        batch_max: int = 1000,
        batch_ms: float = 50.0,
        username: str | None = None,
        password: str | None = None,
        on_commit: Callable[[list[Envelope]], None] | None = None,
    ) -> None:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(
                f"ingest name must be 1-64 letters, digits, '_', '.', '-', got {name!r}"
            )
        if batch_max < 1 or batch_ms < 0:
            raise ValueError(f"need batch_max >= 1 and batch_ms >= 0, got {batch_max}, {batch_ms}")
        self.store = store
        self.host = host
        self.port = port
        self.name = name
        self.client_id = client_id(name)
        self.batch_max = batch_max
        self.batch_s = batch_ms / 1000.0
        self.on_commit = on_commit
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # Committed batches and their counts, waiting for their acks (_ack_committed).
        self._committed: collections.deque[tuple[list[_Item], dict[str, int]]] = collections.deque()
        self._stats = IngestStats()
        self._stats_lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._stopping = False
        self._subscribe_mids: set[int] = set()
        self._ready = threading.Event()
        # retire(): unsubscribed from everything, the session to be ended when drained
        self._leaving = False
        self._unsubscribe_mids: set[int] = set()
        self._unsubscribed = threading.Event()
        self._received = 0
        self._last_received = time.monotonic()
        self._dropped = 0  # arrived while stopping: not acked, the broker redelivers them
        self._writer: threading.Thread | None = None
        self._die_after = _env_int(DIE_AFTER_COMMIT_ENV)
        self._die_before = _env_int(DIE_BEFORE_COMMIT_ENV)
        self._commits = 0

        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_unsubscribe = self._on_unsubscribe
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (retrying while the broker is down) and start writing.
        Raises StoreError, before subscribing, if the store cannot take a write."""
        if self._writer is not None:
            raise RuntimeError("Ingestor already started")
        require_writable(self.store)
        self._stopping = False
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer", daemon=True)
        self._writer.start()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        # Un-acked messages the broker may send us (MQTT 5 Receive Maximum): enough for the
        # next batch to fill while one commits, and a bound on the messages waiting in
        # memory (the broker's max_inflight_messages may bound it lower).
        props.ReceiveMaximum = min(65535, 2 * self.batch_max)
        self._client.connect_async(
            self.host, self.port, keepalive=KEEPALIVE_S, clean_start=False, properties=props
        )
        self._client.loop_start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """True once connected and every subscription is granted (results published from
        then on are queued for this session even while it is offline)."""
        return self._ready.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Commit and ack what has arrived, then disconnect. Messages arriving meanwhile stay
        un-acked: the broker redelivers them to this session next time."""
        self._shutdown(timeout, end_session=False)

    def retire(self, quiet_s: float = 3.0, timeout: float = 600.0) -> IngestStats:
        """End this worker's session for good: unsubscribe from everything, store what the
        broker still holds for the session (its share of the stream queued while the worker
        was down), and once nothing has arrived for ``quiet_s`` and all is committed and
        acked, disconnect with session expiry 0 so the broker deletes the session and stops
        giving it a share. Call after start(). Raises TimeoutError, keeping the session (no
        message is lost: the broker redelivers the rest), if that takes longer than
        ``timeout`` or a message slipped in while stopping."""
        deadline = time.monotonic() + timeout
        self._leaving = True
        if self._connected:
            self._unsubscribe(self._client)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._shutdown(30.0, end_session=False)
                raise TimeoutError(
                    f"ingest session {self.client_id} did not drain within {timeout:.0f} s; "
                    "it is kept (nothing lost) -- run the retirement again"
                )
            if self._unsubscribed.wait(min(left, 0.1)) and self._drained(quiet_s):
                break
        self._shutdown(30.0, end_session=True)
        stats = self.stats()
        if self._dropped:
            raise TimeoutError(
                f"{self._dropped} messages reached session {self.client_id} while it was "
                "ending; it is kept (they will be redelivered) -- run the retirement again"
            )
        return stats

    def _drained(self, quiet_s: float) -> bool:
        with self._stats_lock:
            committed = self._stats.messages
        idle = time.monotonic() - self._last_received >= quiet_s
        return self._connected and idle and committed == self._received

    def _shutdown(self, timeout: float, end_session: bool) -> None:
        if self._writer is None:
            return
        self._stopping = True
        self._queue.put(_STOP)
        self._writer.join(timeout)
        if self._writer.is_alive():
            log.error(
                "ingest writer did not finish within %.0f s; un-acked messages will be redelivered",
                timeout,
            )
            end_session = False
        else:
            self._ack_committed()
        if end_session and self._dropped == 0 and self._received == self.stats().messages:
            # MQTT 5 lets a client lower its session expiry at DISCONNECT: 0 ends the session.
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
            self._client.disconnect(properties=props)
        else:
            self._client.disconnect()
        self._client.loop_stop()
        self._writer = None

    def __enter__(self) -> Ingestor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> IngestStats:
        with self._stats_lock:
            snap = IngestStats(**asdict(self._stats))
        snap.connected = self._connected
        snap.subscribed = self._ready.is_set()
        snap.queued = self._queue.qsize()
        snap.received = self._received
        return snap

    # -- paho callbacks (network thread: never block here) -----------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._note_error(
                f"broker {self.host}:{self.port} refused the connection: {reason_code}"
            )
            return
        self._generation += 1
        self._connected = True
        with self._stats_lock:
            self._stats.connects += 1
        log.info(
            "connected to %s:%s as %s (session present: %s)",
            self.host,
            self.port,
            self.client_id,
            flags.session_present,
        )
        if self._leaving:  # reconnected while retiring: take no new share
            self._unsubscribe(client)
            return
        # Always: a broker that lost its state has forgotten the subscriptions.
        self._subscribe_mids.clear()
        for filters in (SHARED_FILTERS, PLAIN_FILTERS):
            rc, mid = client.subscribe(list(filters))
            if rc == mqtt.MQTT_ERR_SUCCESS:
                self._subscribe_mids.add(mid)

    def _unsubscribe(self, client: mqtt.Client) -> None:
        self._unsubscribed.clear()
        self._unsubscribe_mids.clear()
        rc, mid = client.unsubscribe([f for f, _ in (*SHARED_FILTERS, *PLAIN_FILTERS)])
        if rc == mqtt.MQTT_ERR_SUCCESS:
            self._unsubscribe_mids.add(mid)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected = False
        self._ready.clear()
        if not self._stopping:
            log.warning(
                "disconnected from %s:%s (%s); reconnecting", self.host, self.port, reason_code
            )

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties) -> None:
        refused = [str(rc) for rc in reason_code_list if rc.is_failure]
        if refused:
            self._note_error(f"broker refused subscriptions: {', '.join(refused)}")
            return
        self._subscribe_mids.discard(mid)
        if not self._subscribe_mids:
            self._ready.set()

    def _on_unsubscribe(self, client, userdata, mid, reason_code_list, properties) -> None:
        # "No subscription existed" (17) is fine: a broker that lost its state has none.
        refused = [str(rc) for rc in reason_code_list if rc.is_failure and rc.value != 17]
        if refused:
            self._note_error(f"broker refused to unsubscribe: {', '.join(refused)}")
            return
        self._unsubscribe_mids.discard(mid)
        if not self._unsubscribe_mids:
            self._unsubscribed.set()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        self._received += 1
        self._last_received = time.monotonic()
        if self._stopping:
            self._dropped += 1
            return  # not acked: redelivered to this session after the next connect
        if self._committed:
            self._ack_committed()
        # Decode here rather than in the writer, and ack here too (above): nearly all of
        # ingest's Python work then runs in this thread, while the writer spends its time in
        # SQLite, which runs without the GIL. Split the other way, the threads hand the GIL
        # back and forth on every message and every ack, and the writer's decoding starves
        # this thread of it (benchmarks/ingest_throughput.py).
        item = _classify(msg, time.time(), self._generation)
        if item.row is not None and self.on_commit is None:
            # The row is all the writer needs. Thousands of decoded results held until their
            # batch commits cost memory and cache misses on both threads (~10% of ingest's
            # CPU time in ingest_throughput.py).
            item.env = None
        self._queue.put(item)

    # -- acks (either thread) ----------------------------------------------------------------

    def _ack_committed(self) -> bool:
        """Ack every committed batch still waiting and count it; True if there was one.

        The network thread calls this before each message it handles; the writer calls it
        whenever the stream pauses (the broker may be holding back until it gets these acks:
        its in-flight window is full) and before it commits the next batch. Each batch is
        taken off the deque once, so it is acked once, by whichever thread gets it.
        """
        found = False
        while True:
            try:
                batch, counts = self._committed.popleft()
            except IndexError:
                return found
            found = True
            acked = 0
            for item in batch:
                # A mid from an earlier connection could name a different message now.
                if item.qos and item.generation == self._generation and self._connected:
                    self._client.ack(item.mid, item.qos)
                    acked += 1
            with self._stats_lock:
                st = self._stats
                st.messages += len(batch)
                st.batches += 1
                st.acked += acked
                for key, value in counts.items():
                    setattr(st, key, getattr(st, key) + value)

    # -- writer thread -----------------------------------------------------------------------

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._collect()
            if batch:
                self._commit(batch)

    def _collect(self) -> tuple[list[_Item], bool]:
        """Wait for one message, then take more until batch_max, batch_ms or a lull."""
        first = self._next()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.batch_s
        while len(batch) < self.batch_max:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                # Sleep rather than block on the queue: a blocked get() wakes this thread
                # for every message, each time taking the GIL from the network thread.
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(left, _LULL_S))
                # A lull: the broker may be waiting for our acks (its in-flight window), so
                # send them, or, if there were none to send, stop waiting out batch_ms: it
                # would only stall the stream.
                if self._queue.empty() and not self._ack_committed():
                    break
                continue
            if item is _STOP:
                return batch, True
            batch.append(item)
        # Normally the network thread has acked the last batch by now; if it has not, no
        # message has come since, and those acks should not wait for this batch's commit.
        self._ack_committed()
        return batch, False

    def _next(self) -> object:
        """The next message (or _STOP); acks what is committed if the stream pauses first."""
        while self._committed:
            try:
                return self._queue.get(timeout=_LULL_S)
            except queue.Empty:
                self._ack_committed()
        return self._queue.get()

    def _commit(self, batch: list[_Item]) -> None:
        """Write the batch in one transaction, retrying until the store takes it, then hand
        it over to be acked (see _ack_committed)."""
        attempt = 0
        while True:
            try:
                counts = self._write(batch)
                break
            except Exception as exc:  # a dead writer would stall ingest silently
                # Locked by another process past the busy timeout, disk full, I/O error: keep
                # the batch un-acked and retry. The broker stops sending once its in-flight
                # window is full and queues the rest for this session meanwhile.
                self._note_error(f"store write failed ({type(exc).__name__}: {exc}); retrying")
                if self._stopping:
                    return  # not acked: redelivered to this session next time
                time.sleep(_RETRY_S[min(attempt, len(_RETRY_S) - 1)])
                attempt += 1
        self._commits += 1
        if self._die_after == self._commits:
            os._exit(TEST_DIE_EXIT_CODE)
        self._committed.append((batch, counts))
        if self.on_commit is not None and counts["results_inserted"]:
            try:
                self.on_commit([i.env for i in batch if i.row is not None])
            except Exception:  # the caller's bug must not stop ingest
                log.exception("on_commit callback failed")

    def _write(self, batch: list[_Item]) -> dict[str, int]:
        """One transaction for the whole batch; counts what it did."""
        counts = dict.fromkeys(_COUNTERS, 0)
        with self.store.transaction():
            inserted, duplicates = self.store.add_result_rows(
                [i.row for i in batch if i.row is not None]
            )
            counts["results_inserted"] = inserted
            counts["results_duplicate"] = duplicates
            adapt_rows = [i.adapt_row for i in batch if i.adapt_row is not None]
            if adapt_rows:
                inserted, duplicates = self.store.add_adapt_rows(adapt_rows)
                counts["adapt_results_inserted"] = inserted
                counts["adapt_results_duplicate"] = duplicates
            for item in batch:
                if item.row is not None or item.adapt_row is not None:
                    continue
                reason = item.reason
                env = item.env
                if item.leaf == "ack" and env is not None:
                    if self.store.record_ack(env.device, env.body, item.received_at) == (
                        ACK_WRONG_DEVICE
                    ):
                        reason = f"body.cmd_id: command {env.body.cmd_id} went to another device"
                elif item.leaf == "status" and env is not None:
                    self.store.record_status(env, item.received_at)
                elif item.leaf == "caps" and env is not None:
                    self.store.record_caps(env, item.received_at)
                elif item.leaf == "hb" and env is not None:
                    self.store.record_hb(env, item.received_at)
                if reason:
                    self.store.record_reject(
                        item.device, item.leaf, item.topic, reason, item.received_at
                    )
                    counts["rejected"] += 1
                else:
                    counts["acks" if item.leaf == "ack" else item.leaf] += 1
            if self._die_before is not None and self._die_before == self._commits + 1:
                os._exit(TEST_DIE_EXIT_CODE)
        return counts

    def _note_error(self, text: str) -> None:
        log.error("%s", text)
        with self._stats_lock:
            self._stats.errors += 1
            self._stats.last_error = text


def require_writable(store: Store) -> None:
    """Raise StoreError if a write cannot commit (a read-only file, directory or file system):
    ingest must not start taking messages it could never store. A store that fills up or
    turns read-only later is retried instead, with nothing acked meanwhile (see _commit)."""
    try:
        with store.transaction():
            store.execute(
                "INSERT INTO meta (key, value) VALUES ('ingest_write_check', '') "
                "ON CONFLICT (key) DO NOTHING"
            )
            store.execute("DELETE FROM meta WHERE key = 'ingest_write_check'")
    except Exception as exc:  # sqlite3 or psycopg: either way nothing could be committed
        raise StoreError(
            f"ingest cannot write to the store {store.location}: {exc}; make it writable "
            "(file, directory and file system) or give another store"
        ) from None


def _classify(msg: mqtt.MQTTMessage, received_at: float, generation: int) -> _Item:
    """Decode and check one message; a bad one becomes an item carrying its reject reason."""
    try:
        topic = msg.topic
    except UnicodeDecodeError:
        topic = repr(msg._topic)  # paho keeps the raw bytes; the broker should refuse these
    item = _Item(msg.mid, msg.qos, generation, received_at, topic, "", "")
    try:
        ref = parse_topic(topic)
        item.device, item.leaf = ref.device, ref.leaf
        if ref.leaf not in _HANDLED:
            raise ProtocolError("topic", f"the coordinator does not ingest {ref.leaf!r} messages")
        env = decode(msg.payload, expect_type=ref.leaf)
        if env.device != ref.device:
            raise ProtocolError(
                "device", f"envelope says {env.device!r} but the topic is {ref.device!r}'s"
            )
        if ref.leaf in ("result", "adapt_result"):
            if env.body.job_id != ref.job_id:
                raise ProtocolError(
                    "body.job_id",
                    f"is {env.body.job_id!r} but the topic is for job {ref.job_id!r}",
                )
            if ref.leaf == "result":
                item.row = result_row(env, received_at, msg.payload)
            else:
                item.adapt_row = adapt_result_row(env, received_at)
        item.env = env
    except ProtocolError as exc:
        item.reason = str(exc)
    except Exception as exc:  # our bug: it must not end paho's network thread (this runs there)
        log.exception("could not check a message on %.200s", topic)
        item.env = item.row = item.adapt_row = None
        item.reason = f"message: the coordinator failed to check it ({type(exc).__name__})"
    return item


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def main(argv: list[str] | None = None) -> int:
    """A standalone ingest worker: runs until SIGTERM or Ctrl-C, then drains and exits.

    Prints ``ready`` once subscribed and ``stats {json}`` when stopped, one line each.
    """
    p = argparse.ArgumentParser(
        prog="python -m coordinator.ingest", description=main.__doc__.split("\n")[0]
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--store", help="store file (default: $HALOFARM_STORE or the user data dir)")
    p.add_argument("--name", default="main", help="worker name; client id halo-ingest-NAME")
    p.add_argument("--batch-max", type=int, default=1000)
    p.add_argument("--batch-ms", type=float, default=50.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        store = Store(args.store)
    except StoreError as exc:
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 2
    with store:
        ingestor = Ingestor(
            store,
            args.host,
            args.port,
            name=args.name,
            batch_max=args.batch_max,
            batch_ms=args.batch_ms,
        )
        try:
            ingestor.start()
        except StoreError as exc:
            print(f"ingest: error: {exc}", file=sys.stderr)
            return 2
        while not ingestor.wait_ready(1.0):
            if done.is_set():
                break
            log.info("waiting for the broker at %s:%s", args.host, args.port)
        else:
            print("ready", flush=True)
        done.wait()
        ingestor.stop()
        print("stats", json.dumps(ingestor.stats().to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
