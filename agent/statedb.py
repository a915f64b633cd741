"""The agent's one SQLite file: outbox and job queue share it so that one transaction can
change a job's state and commit the messages that report it.

WAL with ``synchronous=FULL``: a COMMIT returns only after the WAL is fsynced, so whatever a
transaction committed survives SIGKILL and power loss. One connection, serialised by a
re-entrant lock; the lock is held only for the SQL, never while publishing (the outbox never
calls paho).

Python 3.8 compatible.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from typing import Any, Iterator, List, Sequence


class StateDBError(Exception):
    """The state database cannot be opened; the message says which file and why."""


class StateDB:
    def __init__(self, path: os.PathLike) -> None:
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (the sqlite3 module's
            # implicit transactions differ between Python versions).
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as e:
            raise StateDBError(
                f"cannot open the agent state database {self.path}: {e}; "
                "move it away to start with an empty outbox and job queue"
            ) from None
        if mode.lower() != "wal":
            raise StateDBError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; nested use joins the outer transaction through a
        savepoint, so a caller can wrap several methods that each open one."""
        with self._lock:
            name = f"sp{self._depth}"
            self._conn.execute("BEGIN IMMEDIATE" if self._depth == 0 else f"SAVEPOINT {name}")
            self._depth += 1
            try:
                yield self._conn
            except BaseException:
                self._depth -= 1
                self._conn.execute("ROLLBACK" if self._depth == 0 else f"ROLLBACK TO {name}")
                if self._depth:
                    self._conn.execute(f"RELEASE {name}")
                raise
            self._depth -= 1
            try:
                self._conn.execute("COMMIT" if self._depth == 0 else f"RELEASE {name}")
            except BaseException:
                if self._depth == 0 and self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def ensure_schema(self, script: str) -> None:
        """Run idempotent DDL (CREATE ... IF NOT EXISTS); executescript commits on its own,
        so it must not run inside :meth:`transaction`."""
        with self._lock:
            if self._depth:
                raise RuntimeError("ensure_schema() inside a transaction would commit it")
            self._conn.executescript(script)

    def query(self, sql: str, args: Sequence[Any] = ()) -> List[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
