"""The SQLite outbox with a real database file: commit, claim window, PUBACKs, restart, kill."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from agent.outbox import Outbox
from agent.statedb import StateDB

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "state" / "agent.db"


@pytest.fixture
def box(db_path):
    db = StateDB(db_path)
    yield Outbox(db, window=3)
    db.close()


def other_connection_rows(db_path):
    """What a different connection (another process, after a crash) would read."""
    conn = sqlite3.connect(str(db_path))
    try:
        return conn.execute(
            "SELECT msg_id, topic, payload, acked_at FROM outbox ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()


def test_database_is_wal_with_full_sync(db_path, box):
    conn = sqlite3.connect(str(db_path))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert box.db.query("PRAGMA synchronous")[0][0] == 2  # FULL


def test_put_is_committed_before_it_returns(db_path, box):
    msg_id = box.put("t/a", b"payload", qos=1, kind="result")
    assert other_connection_rows(db_path) == [(msg_id, "t/a", b"payload", None)]
    assert box.depth() == 1


def test_same_msg_id_is_stored_once(box):
    box.put("t/a", b"one", msg_id="m1")
    box.put("t/a", b"two", msg_id="m1")
    assert box.depth() == 1
    assert [r.payload for r in box.claim()] == [b"one"]


def test_claim_oldest_first_within_window(box):
    ids = [box.put("t", str(i).encode()) for i in range(5)]
    first = box.claim()
    assert [r.msg_id for r in first] == ids[:3]
    assert box.claim() == []  # window full
    for mid, row in enumerate(first, start=10):
        box.bind(row.msg_id, mid)
    assert box.on_puback(10) == ids[0]
    box.mark_sent(ids[0])
    assert [r.msg_id for r in box.claim()] == [ids[3]]
    assert box.depth() == 4


def test_puback_for_unknown_mid_is_ignored(box):
    box.put("t", b"x")
    (row,) = box.claim()
    box.bind(row.msg_id, 7)
    assert box.on_puback(8) is None  # e.g. a status or heartbeat publish
    assert box.in_flight() == 1
    assert box.on_puback(7) == row.msg_id
    assert box.in_flight() == 0


def test_refused_message_is_parked_until_reconnect(box):
    msg_id = box.put("t", b"x")
    box.bind(box.claim()[0].msg_id, 1)
    assert box.on_puback(1, ok=False) is None
    assert box.claim() == []  # not resent in a loop
    box.unpark()
    assert [r.msg_id for r in box.claim()] == [msg_id]


def test_released_row_is_claimed_again(box):
    msg_id = box.put("t", b"x")
    assert box.claim()[0].msg_id == msg_id
    box.release(msg_id)
    again = box.claim()
    assert [r.msg_id for r in again] == [msg_id]
    assert again[0].attempts == 1


def test_acked_rows_are_never_resent(db_path, box):
    a = box.put("t", b"a")
    b = box.put("t", b"b")
    for mid, row in enumerate(box.claim()):
        box.bind(row.msg_id, mid)
    box.mark_sent(box.on_puback(0))
    assert box.depth() == 1
    box.db.close()
    reopened = Outbox(StateDB(db_path))
    assert [r.msg_id for r in reopened.claim()] == [b]
    assert a not in [r[0] for r in other_connection_rows(db_path) if r[3] is None]
    reopened.db.close()


def test_restart_resends_everything_unacked(db_path, box):
    ids = [box.put("t", bytes([i]), qos=1, kind="ack") for i in range(3)]
    for mid, row in enumerate(box.claim()):
        box.bind(row.msg_id, mid)  # handed to paho, never acknowledged
    box.db.close()

    reopened = Outbox(StateDB(db_path), window=10)
    rows = reopened.claim()
    assert [r.msg_id for r in rows] == ids
    assert [r.payload for r in rows] == [b"\x00", b"\x01", b"\x02"]
    assert all(r.attempts == 1 and r.kind == "ack" and r.qos == 1 for r in rows)
    reopened.db.close()


def test_rolled_back_transaction_leaves_nothing(box):
    with pytest.raises(RuntimeError):
        with box.db.transaction():
            box.put("t", b"x")
            raise RuntimeError("crash before commit")
    assert box.depth() == 0


def test_heartbeats_are_bounded_results_never(db_path):
    db = StateDB(db_path)
    box = Outbox(db, window=100, max_droppable=5)
    for i in range(12):
        box.put("hb", str(i).encode(), qos=0, kind="hb")
        box.put("res", str(i).encode(), qos=1, kind="result")
    rows = box.claim()
    assert [r.payload for r in rows if r.kind == "hb"] == [str(i).encode() for i in range(7, 12)]
    assert len([r for r in rows if r.kind == "result"]) == 12
    db.close()


def test_prune_forgets_old_acked_rows_only(box):
    a = box.put("t", b"a")
    box.put("t", b"b")
    box.mark_sent(a)
    assert box.prune(keep_acked_s=3600) == 0
    assert box.prune(keep_acked_s=-1) == 1
    assert box.depth() == 1


def test_sigkill_right_after_put_loses_nothing(db_path):
    """A writer process is SIGKILLed right after put() returned; the row is on disk."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from agent.outbox import Outbox
        from agent.statedb import StateDB
        box = Outbox(StateDB({str(db_path)!r}))
        for i in range(50):
            box.put("t/res", b"result %d" % i, qos=1, kind="result")
        print("committed", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "committed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    reopened = Outbox(StateDB(db_path), window=100)
    assert [r.payload for r in reopened.claim()] == [b"result %d" % i for i in range(50)]
    reopened.db.close()


def test_resend_puts_acked_results_back_in_line_and_nothing_else(box):
    box.put("dev/job/a/result", b"r", kind="result", msg_id="r1")
    box.put("dev/job/a/ack", b"a", kind="ack", msg_id="a1")
    for row in box.claim():
        box.bind(row.msg_id, {"r1": 1, "a1": 2}[row.msg_id])
    box.mark_sent(box.on_puback(1), box.on_puback(2))
    assert box.claim() == [] and box.depth() == 0
    assert box.resend("dev/job/a/result", "dev/job/a/ack", "dev/job/b/result") == 1
    [again] = box.claim()
    assert (again.msg_id, again.payload, again.attempts) == ("r1", b"r", 1)
    assert box.resend() == 0
