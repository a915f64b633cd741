"""Store-and-forward outbox for messages that must reach the broker (mqtt.md §4).

``put`` commits the message before it returns; only then may anyone count on it. A single
sender (the daemon's main loop) ``claim``s the oldest un-acked rows within a bounded window,
publishes each, ``bind``s the returned mid, and feeds PUBACKs to ``on_puback``, which gives the
msg_id to ``mark_sent``. paho fires ``on_publish`` on its own thread, possibly before
``publish()`` has returned (paho #226): the daemon's callback only queues the mid for the
sender, so every PUBACK is handled after its ``bind`` and no lock is held around ``publish()``.

Rows handed to paho stay there across reconnects: paho resends its un-acked QoS 1 messages
itself after every reconnect. A new process starts with nothing in flight, so everything
un-acked is sent again after a restart. Duplicates are expected (at-least-once); receivers
dedupe by the payload's ids.

Rows of a droppable kind (heartbeats, progress) are capped; results and acks are never dropped.

Python 3.8 compatible.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional, Set

from .statedb import StateDB

DROPPABLE_KINDS = frozenset({"hb", "progress"})
MAX_DROPPABLE = 1000  # per droppable kind: the newest are kept
KEEP_ACKED_S = 24 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_try REAL,
    acked_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_unacked ON outbox (acked_at, seq);
"""


@dataclass(frozen=True)
class OutboxRow:
    msg_id: str
    topic: str
    payload: bytes
    qos: int
    retain: bool
    kind: str
    attempts: int  # publishes before this one, counting earlier processes


class Outbox:
    def __init__(self, db: StateDB, window: int = 100, max_droppable: int = MAX_DROPPABLE) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.db = db
        self.window = window
        self.max_droppable = max_droppable
        db.ensure_schema(_SCHEMA)
        self._lock = threading.Lock()  # guards the in-memory maps below; never held in SQL
        self._inflight: Dict[str, Optional[int]] = {}  # msg_id -> mid (None until bound)
        self._by_mid: Dict[int, str] = {}
        self._parked: Set[str] = set()  # refused or unsubscribed; retried by ``unpark``

    def put(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        kind: str = "result",
        retain: bool = False,
        msg_id: Optional[str] = None,
    ) -> str:
        """Commit one message for delivery and return its msg_id. A msg_id already in the
        outbox is not stored again (so a repeated put of the same envelope is harmless)."""
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        msg_id = uuid.uuid4().hex if msg_id is None else msg_id
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO outbox (msg_id, topic, payload, qos, retain, kind,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (msg_id, topic, bytes(payload), qos, int(retain), kind, time.time()),
            )
            if kind in DROPPABLE_KINDS:
                conn.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE kind = ?"
                    " AND acked_at IS NULL ORDER BY seq DESC LIMIT -1 OFFSET ?)",
                    (kind, self.max_droppable),
                )
        return msg_id

    def claim(self) -> List[OutboxRow]:
        """The oldest un-acked rows not yet handed to paho, as many as the window allows;
        they count as in flight from now on. Publish them in order."""
        with self._lock:
            room = self.window - len(self._inflight)
            skip = set(self._inflight) | self._parked
        if room <= 0:
            return []
        # Ids first: rows in flight are skipped without reading their payloads (up to 256 KiB
        # each). One sender claims, so nothing else can claim them before the update.
        ids = [
            r[0]
            for r in self.db.query(
                "SELECT msg_id FROM outbox WHERE acked_at IS NULL ORDER BY seq LIMIT ?",
                (room + len(skip),),
            )
            if r[0] not in skip
        ][:room]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT msg_id, topic, payload, qos, retain, kind, attempts FROM outbox"
                f" WHERE msg_id IN ({marks}) ORDER BY seq",
                ids,
            ).fetchall()
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_try = ?"
                f" WHERE msg_id IN ({marks})",
                (time.time(), *ids),
            )
        with self._lock:
            for r in rows:
                self._inflight[r["msg_id"]] = None
        return [
            OutboxRow(
                r["msg_id"],
                r["topic"],
                bytes(r["payload"]),
                r["qos"],
                bool(r["retain"]),
                r["kind"],
                r["attempts"],
            )
            for r in rows
        ]

    def bind(self, msg_id: str, mid: int) -> None:
        """paho accepted the claimed row ``msg_id`` as message ``mid`` (queued or sent)."""
        with self._lock:
            if msg_id in self._inflight:
                self._inflight[msg_id] = mid
                self._by_mid[mid] = msg_id

    def release(self, msg_id: str) -> None:
        """paho did not take the claimed row (publish failed): claim it again later."""
        with self._lock:
            mid = self._inflight.pop(msg_id, None)
            if mid is not None:
                self._by_mid.pop(mid, None)

    def on_puback(self, mid: int, ok: bool = True) -> Optional[str]:
        """The broker answered message ``mid``. Returns the msg_id to ``mark_sent`` (None if
        ``mid`` was not an outbox row, or the broker refused it: then the row is parked until
        the next ``unpark`` -- the next connection or the daemon's periodic retry -- instead of
        being resent in a tight loop)."""
        with self._lock:
            msg_id = self._by_mid.pop(mid, None)
            if msg_id is None:
                return None
            self._inflight.pop(msg_id, None)
            if not ok:
                self._parked.add(msg_id)
                return None
            return msg_id

    def unpark(self) -> None:
        with self._lock:
            self._parked.clear()

    def mark_sent(self, *msg_ids: str) -> None:
        """The broker acknowledged these rows: they are never sent again."""
        if not msg_ids:
            return
        with self.db.transaction() as conn:
            conn.executemany(
                "UPDATE outbox SET acked_at = ? WHERE msg_id = ? AND acked_at IS NULL",
                [(time.time(), m) for m in msg_ids],
            )
        with self._lock:
            for m in msg_ids:
                self._inflight.pop(m, None)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def depth(self) -> int:
        """Messages committed but not yet acknowledged by the broker."""
        return self.db.query("SELECT COUNT(*) FROM outbox WHERE acked_at IS NULL")[0][0]

    def pending_bytes(self) -> int:
        """Payload bytes of the messages not yet acknowledged (the outbox's disk budget)."""
        return self.db.query(
            "SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox WHERE acked_at IS NULL"
        )[0][0]

    def resend(self, *topics: str) -> int:
        """Send the acknowledged results on these topics once more (the broker acked them but
        the receiver says it never got them); returns how many. Pruned rows are gone."""
        if not topics:
            return 0
        marks = ",".join("?" * len(topics))
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE outbox SET acked_at = NULL WHERE kind = 'result' AND acked_at IS NOT NULL"
                f" AND topic IN ({marks})",
                topics,
            )
            return cur.rowcount

    def prune(self, keep_acked_s: float = KEEP_ACKED_S) -> int:
        """Forget rows acknowledged more than ``keep_acked_s`` ago; returns how many."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM outbox WHERE acked_at IS NOT NULL AND acked_at < ?",
                (time.time() - keep_acked_s,),
            )
            return cur.rowcount
