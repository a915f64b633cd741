"""One live ingest session per name and broker on this host.

An ingest session is an MQTT client id with a persistent session: two live clients under one id
take it from each other at every reconnect (mosquitto 2.0.11 closes the other connection
without a reason code), so both stall. Every halo-coord process that ingests therefore holds a
lock file for (broker, session name) while it does. What a second process does when the lock
is taken depends on what it is:

* a long-running ingester (``serve``, ``campaign run``, an ``--ingest-only`` worker) is refused
  with a message naming the holder;
* a one-shot command (``devices``, ``results``, ``bench --wait``, ...) *follows*: the holder
  already stores everything the broker delivers, so the command reads the store instead of
  ingesting itself -- provided the holder writes the same store (else it is refused: it would
  wait for results that go elsewhere).

The lock file holds the holder's pid and store, so the messages can name them. Processes on
other hosts are not seen: there, session names must differ by configuration.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coordinator.connect import BrokerTarget
from coordinator.errors import UserError

MAIN = "main"  # the session of serve, campaign run and the one-shot commands


def lock_path(broker: BrokerTarget, name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in f"{broker.host}-{broker.port}")
    return Path(tempfile.gettempdir()) / f"halofarm-ingest-{os.getuid()}-{safe}-{name}.lock"


def _holder(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict) -> str:
    pid, cmd = holder.get("pid"), holder.get("command")
    return f"{cmd or 'halo-coord'} (pid {pid})" if pid else "another halo-coord process"


@contextmanager
def ingest_session(
    broker: BrokerTarget, name: str, store: str, *, follow: bool = False
) -> Iterator[bool]:
    """Yields True while this process holds the session (it must ingest), False when it may
    follow another holder that writes the same ``store`` (``follow=True`` only). Raises
    :class:`UserError` otherwise."""
    path = lock_path(broker, name)
    try:
        fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held while ingesting
    except OSError as exc:
        raise UserError(f"cannot create the ingest lock {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            who = _describe(holder)
            if not follow:
                hint = (
                    "give each worker its own --worker NAME"
                    if name != MAIN
                    else "stop it first (`serve --campaign FILE` runs campaigns beside its ingest)"
                )
                raise UserError(
                    f"{who} already ingests as {name!r} from {broker.url} on this host; {hint}"
                ) from None
            if holder.get("store") != store:
                raise UserError(
                    f"{who} ingests from {broker.url} into {holder.get('store') or '?'}, not "
                    f"{store}; use the same --store, or stop it first"
                ) from None
            yield False
            return
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "store": store, "command": _command()}))
        fh.flush()
        try:
            yield True
        finally:
            fh.seek(0)
            fh.truncate()
    finally:
        fh.close()


def _command() -> str:
    """How the holder was started, for the refusal message (``halo-coord serve``)."""
    return " ".join(["halo-coord", *(a for a in sys.argv[1:3] if not a.startswith("-"))])
