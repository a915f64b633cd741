"""The coordinator's store: results, devices, dispatched jobs, rejects and model blobs.

Durability: WAL with ``synchronous=FULL``, so a committed transaction survives a crash or power
cut; throughput comes from batching many rows into one transaction (see ``transaction()``), not
from weaker syncing. Every write is idempotent: results are keyed by ``result_id`` and written
with ``INSERT ... ON CONFLICT DO NOTHING``, so a redelivered message is absorbed, and several
ingest processes may share one store file (``BEGIN IMMEDIATE`` + a busy timeout serialise them).

The schema is versioned in ``meta.schema_version``; ``MIGRATIONS[n]`` takes a store from version
n to n + 1, each in its own transaction. A store written by a newer halofarm is refused.

All ``*_at`` columns are the coordinator's clock (``time.time()`` when the message arrived),
except ``results.sent_at`` (the device's ``created_at``) and the device's own times in payloads.

The store is a SQLite file, or a PostgreSQL database given as ``postgresql://...`` (the
``postgres`` extra: psycopg 3) for ingest workers on several hosts. Both have the same tables,
migrations and idempotent keys; all SQL, here and in the layers that own their tables, is
written once in SQLite's dialect and translated for PostgreSQL by :class:`_Postgres` (the
SQLite path runs it untouched).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import platformdirs

from coordinator.errors import UserError
from protocol import Ack, AdaptResult, BenchResult, Caps, Command, Envelope, Heartbeat, Status

STORE_ENV = "HALOFARM_STORE"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
STORE_NAME = "store.sqlite"
BUSY_TIMEOUT_S = 30.0

# Ack states ordered by how far a command got. A redelivered or reordered ack never moves a
# job backwards, and the first final word (done, failed, ...) stays.
_DISPATCHED = "dispatched"
_STATE_RANK = {
    _DISPATCHED: 0,
    "accepted": 1,
    "running": 2,
    "rejected": 3,
    "done": 3,
    "failed": 3,
    "cancelled": 3,
    "pong": 3,
}
FINAL_STATES = frozenset(s for s, rank in _STATE_RANK.items() if rank == 3)
# What record_ack did with an ack.
ACK_APPLIED = "applied"
ACK_NEW = "new"
ACK_STALE = "stale"
ACK_WRONG_DEVICE = "wrong_device"

# Flat columns of a result's energy object (see energy_columns()).
ENERGY_COLUMNS = (
    "energy_method",
    "energy_source",
    "e_per_inference_mj",
    "e_dyn_per_inference_mj",
    "p_mean_mw",
    "p_idle_mw",
)
# Flat result columns, in insert order; the whole BenchResult body is in `payload` as JSON.
RESULT_COLUMNS = (
    "result_id",
    "msg_id",
    "device",
    "job_id",
    "cmd_id",
    "status",
    "reason",
    "model_sha256",
    "model_name",
    "model_bytes",
    "runtime",
    "runtime_version",
    "threads",
    "xnnpack",
    "delegated",
    "count",
    "min_ns",
    "p5_ns",
    "p50_ns",
    "p90_ns",
    "p95_ns",
    "p99_ns",
    "max_ns",
    "mean_ns",
    "std_ns",
    "cv",
    "init_ns",
    "first_ns",
    "peak_rss_bytes",
    "started_at",
    "finished_at",
    "sent_at",
    "received_at",
    *ENERGY_COLUMNS,
    "payload",
)

MIGRATIONS: dict[int, tuple[str, ...]] = {
    0: (
        """CREATE TABLE results (
            result_id TEXT PRIMARY KEY,
            msg_id TEXT NOT NULL,
            device TEXT NOT NULL,
            job_id TEXT NOT NULL,
            cmd_id TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT,
            model_sha256 TEXT NOT NULL,
            model_name TEXT NOT NULL,
            model_bytes INTEGER,
            runtime TEXT NOT NULL,
            runtime_version TEXT NOT NULL,
            threads INTEGER NOT NULL,
            xnnpack INTEGER NOT NULL,
            delegated INTEGER NOT NULL,
            count INTEGER,
            min_ns REAL, p5_ns REAL, p50_ns REAL, p90_ns REAL, p95_ns REAL, p99_ns REAL,
            max_ns REAL, mean_ns REAL, std_ns REAL, cv REAL,
            init_ns INTEGER,
            first_ns INTEGER,
            peak_rss_bytes INTEGER,
            started_at REAL NOT NULL,
            finished_at REAL NOT NULL,
            sent_at REAL NOT NULL,
            received_at REAL NOT NULL,
            payload TEXT NOT NULL
        )""",
        "CREATE INDEX results_device ON results (device, received_at)",
        "CREATE INDEX results_model ON results (model_sha256)",
        "CREATE INDEX results_job ON results (job_id)",
        "CREATE INDEX results_received ON results (received_at)",
        """CREATE TABLE devices (
            device TEXT PRIMARY KEY,
            status TEXT,
            status_at REAL,
            status_msg_id TEXT,
            agent_version TEXT,
            caps TEXT,
            caps_at REAL,
            last_hb TEXT,
            hb_at REAL
        )""",
        """CREATE TABLE jobs (
            cmd_id TEXT PRIMARY KEY,
            job_id TEXT,
            device TEXT NOT NULL,
            kind TEXT,
            model_sha256 TEXT,
            spec TEXT,
            state TEXT NOT NULL,
            reason TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX jobs_device ON jobs (device, state)",
        "CREATE INDEX jobs_job ON jobs (job_id)",
        """CREATE TABLE rejects (
            device TEXT NOT NULL,
            leaf TEXT NOT NULL,
            count INTEGER NOT NULL,
            last_topic TEXT NOT NULL,
            last_reason TEXT NOT NULL,
            first_at REAL NOT NULL,
            last_at REAL NOT NULL,
            PRIMARY KEY (device, leaf)
        )""",
        """CREATE TABLE blobs (
            sha256 TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            size INTEGER NOT NULL,
            path TEXT,
            data BLOB,
            added_at REAL NOT NULL,
            CHECK ((path IS NULL) != (data IS NULL))
        )""",
    ),
    # Energy: flat columns of BenchResult.energy when its status is "ok" (method always).
    1: (
        "ALTER TABLE results ADD COLUMN energy_method TEXT",
        "ALTER TABLE results ADD COLUMN energy_source TEXT",
        "ALTER TABLE results ADD COLUMN e_per_inference_mj REAL",
        "ALTER TABLE results ADD COLUMN e_dyn_per_inference_mj REAL",
        "ALTER TABLE results ADD COLUMN p_mean_mw REAL",
        "ALTER TABLE results ADD COLUMN p_idle_mw REAL",
        """UPDATE results SET
            energy_method = json_extract(payload, '$.energy.method'),
            energy_source = json_extract(payload, '$.energy.source.name'),
            e_per_inference_mj = json_extract(payload, '$.energy.e_per_inference_mj'),
            e_dyn_per_inference_mj = json_extract(payload, '$.energy.e_dyn_per_inference_mj'),
            p_mean_mw = json_extract(payload, '$.energy.p_mean_mw'),
            p_idle_mw = json_extract(payload, '$.energy.idle.p_mean_mw')
        WHERE json_extract(payload, '$.energy') IS NOT NULL""",
    ),
    # Campaigns, the models they measure, and latencies imported from other sources.
    2: (
        "CREATE INDEX results_cmd ON results (cmd_id)",
        # What the store knows about a model beyond its bytes: its search space and
        # architecture (from the zoo's manifest), so results can be grouped into datasets.
        """CREATE TABLE models (
            sha256 TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            space TEXT,
            arch TEXT,
            arch_index INTEGER,
            dtype TEXT,
            dataset TEXT,
            resolution INTEGER,
            macs INTEGER,
            params INTEGER,
            info TEXT NOT NULL,
            added_at REAL NOT NULL
        )""",
        "CREATE INDEX models_arch ON models (space, arch)",
        # One row per run of a campaign file; `spec_text` is the file as it was started.
        """CREATE TABLE campaigns (
            campaign_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            source TEXT NOT NULL,
            spec_text TEXT NOT NULL,
            spec_sha256 TEXT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT,
            scheduled_for REAL,
            driver TEXT,
            driver_seen_at REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            finished_at REAL
        )""",
        "CREATE INDEX campaigns_name ON campaigns (name, created_at)",
        # The campaign's plan, written whole when it starts, and how far each job got.
        """CREATE TABLE campaign_jobs (
            campaign_id TEXT NOT NULL,
            key TEXT NOT NULL,
            device TEXT NOT NULL,
            position INTEGER NOT NULL,
            kind TEXT NOT NULL,
            model_sha256 TEXT NOT NULL,
            threads INTEGER NOT NULL,
            xnnpack INTEGER NOT NULL,
            repetition INTEGER NOT NULL,
            state TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            cmd_id TEXT,
            not_before REAL,
            result_id TEXT,
            reason TEXT,
            sent_at REAL,
            finished_at REAL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (campaign_id, key)
        )""",
        "CREATE INDEX campaign_jobs_order ON campaign_jobs (campaign_id, device, position)",
        "CREATE INDEX campaign_jobs_cmd ON campaign_jobs (cmd_id)",
        # Every command a campaign sent (one per attempt), so a superseded attempt's late
        # result is recognised and kept out of datasets.
        """CREATE TABLE campaign_attempts (
            cmd_id TEXT PRIMARY KEY,
            campaign_id TEXT NOT NULL,
            key TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            sent_at REAL NOT NULL
        )""",
        # Cron schedules: when each last fired, so downtime yields one catch-up run, not N.
        """CREATE TABLE schedules (
            name TEXT PRIMARY KEY,
            cron TEXT NOT NULL,
            source TEXT NOT NULL,
            last_fire REAL
        )""",
        # Latencies measured elsewhere (public datasets, other tools), one row per arch and
        # device configuration; a re-import of the same row replaces it.
        """CREATE TABLE imported (
            device TEXT NOT NULL,
            space TEXT NOT NULL,
            arch TEXT NOT NULL,
            arch_index INTEGER,
            dataset TEXT NOT NULL,
            runtime TEXT NOT NULL,
            runtime_version TEXT NOT NULL,
            threads INTEGER NOT NULL,
            dtype TEXT NOT NULL,
            delegate TEXT NOT NULL,
            latency_ms REAL NOT NULL,
            latency_p90_ms REAL,
            latency_mean_ms REAL,
            latency_std_ms REAL,
            n_runs INTEGER,
            n_results INTEGER,
            energy_mj REAL,
            energy_dyn_mj REAL,
            power_mw REAL,
            latency_rep_cv REAL,
            energy_method TEXT,
            macs INTEGER,
            params INTEGER,
            drift_flagged INTEGER,
            source TEXT NOT NULL,
            line INTEGER,
            imported_at REAL NOT NULL,
            PRIMARY KEY (device, space, arch, dataset, runtime, runtime_version, threads, dtype,
                         delegate)
        )""",
    ),
    # Adaptation results (adapt jobs, topic job/{job}/adapt_result): apart from the latency
    # results, keyed by result_id like them. The summary columns come from the document; the
    # payload is the whole AdaptResult body.
    3: (
        """CREATE TABLE adapt_results (
            result_id TEXT PRIMARY KEY,
            msg_id TEXT NOT NULL,
            device TEXT NOT NULL,
            job_id TEXT NOT NULL,
            cmd_id TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT,
            task TEXT,
            optimizer TEXT NOT NULL,
            model TEXT,
            steps INTEGER NOT NULL,
            seed INTEGER NOT NULL,
            final_test_acc REAL,
            final_test_balanced_acc REAL,
            energy_j REAL,
            energy_method TEXT,
            measured_energy_j REAL,
            started_at REAL NOT NULL,
            finished_at REAL NOT NULL,
            sent_at REAL NOT NULL,
            received_at REAL NOT NULL,
            payload TEXT NOT NULL
        )""",
        "CREATE INDEX adapt_results_device ON adapt_results (device, received_at)",
        "CREATE INDEX adapt_results_cmd ON adapt_results (cmd_id)",
    ),
    # Why an online device turns jobs away (its retained status says, e.g. "outbox full");
    # NULL while it takes them. How far the device's clock is ahead of the coordinator's, from
    # its last heartbeat (sent time minus received time; heartbeats are never queued).
    4: (
        "ALTER TABLE devices ADD COLUMN refusing_jobs TEXT",
        "ALTER TABLE devices ADD COLUMN clock_offset_s REAL",
    ),
}
SCHEMA_VERSION = len(MIGRATIONS)

ADAPT_COLUMNS = (
    "result_id",
    "msg_id",
    "device",
    "job_id",
    "cmd_id",
    "status",
    "reason",
    "task",
    "optimizer",
    "model",
    "steps",
    "seed",
    "final_test_acc",
    "final_test_balanced_acc",
    "energy_j",
    "energy_method",
    "measured_energy_j",
    "started_at",
    "finished_at",
    "sent_at",
    "received_at",
    "payload",
)

_HEX_PREFIX = re.compile(r"[0-9a-f]{1,64}")

# Rows per INSERT statement, largest first: one statement for many rows because every
# sqlite3 step releases and re-takes the GIL, and a step per row made the writer thread convoy
# with paho's network thread (ingest_throughput.py: ~10% more results/s). A few fixed sizes
# keep the statement cache small.
_CHUNK_ROWS = (256, 64, 16, 4, 1)


@functools.lru_cache(maxsize=len(_CHUNK_ROWS))
def _insert_results_sql(rows: int) -> str:
    # The payload is the body's JSON text. Two parameters give it: the text itself when
    # _body_text could cut it out of the envelope, else NULL and the whole envelope's text,
    # for SQLite to cut the body out in C (coalesce() evaluates the second only if needed).
    one = "({}, coalesce(?, json_extract(?, '$.body')))".format(
        ", ".join("?" * (len(RESULT_COLUMNS) - 1))
    )
    return "INSERT INTO results ({}) VALUES {} ON CONFLICT (result_id) DO NOTHING".format(
        ", ".join(RESULT_COLUMNS), ", ".join([one] * rows)
    )


# One row per statement, sent as a batch by psycopg's pipelined executemany: a statement of
# many rows would be parsed by psycopg on every call (it caches only short queries), at ~5 ms
# for 256 rows. The payload is the body's text, cut out in Python (Store._add_result_rows_pg).
_INSERT_RESULT_PG = (
    "INSERT INTO results ({}) VALUES ({}) ON CONFLICT (result_id) DO NOTHING".format(
        ", ".join(RESULT_COLUMNS), ", ".join(["%s"] * len(RESULT_COLUMNS))
    )
)


# The start of a result envelope as encode() writes it: compact, keys in this order, the body
# last. Only the body's opening brace is matched, not the body itself.
_ENCODED_RESULT_HEAD = re.compile(
    r'\{"schema":1,"type":"result","msg_id":"[0-9a-f]{32}","device":"[A-Za-z0-9_.-]{1,64}",'
    r'"created_at":[0-9.eE+-]+,"body":\{'
)
_JSON_SPACE = (" ", "\n", "\r", "\t")


def _body_text(envelope: str) -> str | None:
    """The body's JSON text cut out of a (valid) result envelope's text, or None unless that
    is what json_extract(envelope, '$.body') gives, which is compact JSON with the original
    tokens. It is when the envelope is compact with encode()'s key order, as every agent sends
    it: the body is then the last member, between the head and the envelope's closing brace.
    Anything else, or a body with a space in a string (it might be outside one), goes to
    json_extract. Saves SQLite a parse of the whole envelope per row (~15 us)."""
    head = _ENCODED_RESULT_HEAD.match(envelope)
    if head is None or not envelope.endswith("}}"):
        return None
    body = envelope[head.end() - 1 : -1]
    for space in _JSON_SPACE:
        if space in body:
            return None
    return body


class StoreError(UserError):
    """The store cannot be opened or used; the message says what to do."""


def default_path() -> Path:
    """``$HALOFARM_STORE`` if set, else ``<user data dir>/halofarm/store.sqlite``."""
    explicit = os.environ.get(STORE_ENV)
    if explicit:
        return Path(explicit)
    return Path(platformdirs.user_data_dir("halofarm")) / STORE_NAME


def is_postgres(target: object) -> bool:
    """Whether a --store value names a PostgreSQL database rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(POSTGRES_SCHEMES)


def default_target() -> str | Path:
    """``$HALOFARM_STORE`` as given if it is a postgresql:// URL, else :func:`default_path`."""
    explicit = os.environ.get(STORE_ENV, "")
    return explicit if is_postgres(explicit) else default_path()


@dataclass
class ResultRow:
    """One stored result: the flat query columns plus the whole body as JSON text."""

    result_id: str
    msg_id: str
    device: str
    job_id: str
    cmd_id: str
    status: str
    reason: str | None
    model_sha256: str
    model_name: str
    model_bytes: int | None
    runtime: str
    runtime_version: str
    threads: int
    xnnpack: bool
    delegated: bool
    count: int | None
    min_ns: float | None
    p5_ns: float | None
    p50_ns: float | None
    p90_ns: float | None
    p95_ns: float | None
    p99_ns: float | None
    max_ns: float | None
    mean_ns: float | None
    std_ns: float | None
    cv: float | None
    init_ns: int | None
    first_ns: int | None
    peak_rss_bytes: int | None
    started_at: float
    finished_at: float
    sent_at: float
    received_at: float
    energy_method: str | None
    energy_source: str | None
    e_per_inference_mj: float | None
    e_dyn_per_inference_mj: float | None
    p_mean_mw: float | None
    p_idle_mw: float | None
    payload: str

    def body(self) -> BenchResult:
        """The BenchResult as the device sent it (raw_ns, env, ops ...)."""
        return BenchResult.from_dict(json.loads(self.payload))

    def to_dict(self, with_payload: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if with_payload:
            out["payload"] = json.loads(self.payload)
        else:
            del out["payload"]
        return out


@dataclass
class DeviceRecord:
    device: str
    status: str | None
    status_at: float | None
    agent_version: str | None
    caps: dict[str, Any] | None
    caps_at: float | None
    last_hb: dict[str, Any] | None
    hb_at: float | None
    refusing_jobs: str | None = None
    clock_offset_s: float | None = None  # device clock minus coordinator clock, last heartbeat


@dataclass
class JobRecord:
    """The coordinator's view of one dispatched command, moved along by the device's acks."""

    cmd_id: str
    job_id: str | None
    device: str
    kind: str | None  # None: an ack arrived for a command this store never dispatched
    model_sha256: str | None
    spec: dict[str, Any] | None
    state: str
    reason: str | None
    created_at: float
    updated_at: float

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass
class RejectRecord:
    device: str  # "" when the topic did not even name a valid device
    leaf: str  # the topic's message kind ("result", "ack" ...), "" if unparseable
    count: int
    last_topic: str
    last_reason: str
    first_at: float
    last_at: float


@dataclass
class BlobInfo:
    sha256: str
    name: str
    size: int
    path: str | None  # None: the bytes are in the store itself
    added_at: float


def _job_columns(env: Envelope) -> tuple:
    """The leading columns of results and adapt_results: which job, from where, how it ended."""
    r = env.body
    return (r.result_id, env.msg_id, env.device, r.job_id, r.cmd_id, r.status, r.reason)


def result_row(env: Envelope, received_at: float, raw: bytes | str | None = None) -> tuple:
    """The row to insert for a decoded result envelope: RESULT_COLUMNS in order, the last
    (payload) given as the envelope's JSON text -- ``raw``, the bytes it was decoded from, if
    the caller has them."""
    r = env.body
    if not isinstance(r, BenchResult):
        raise TypeError(f"expected a result envelope, got type {env.type!r}")
    s = r.stats
    stats = (
        (None,) * 11
        if s is None
        else (s.count, s.min, s.p5, s.p50, s.p90, s.p95, s.p99, s.max, s.mean, s.std, s.cv)
    )
    spec = r.spec
    return (
        *_job_columns(env),
        spec.model_sha256,
        spec.model_name,
        r.model_bytes,
        r.runtime,
        r.runtime_version,
        spec.threads,
        spec.xnnpack,
        r.delegated,
        *stats,
        r.init_ns,
        r.first_ns,
        r.peak_rss_bytes,
        r.started_at,
        r.finished_at,
        env.created_at,
        received_at,
        *energy_columns(r.energy),
        _json(env.to_dict()) if raw is None else raw if isinstance(raw, str) else raw.decode(),
    )


def adapt_result_row(env: Envelope, received_at: float) -> tuple:
    """The adapt_results row (ADAPT_COLUMNS in order) of a decoded adapt_result envelope."""
    r = env.body
    if not isinstance(r, AdaptResult):
        raise TypeError(f"expected an adapt_result envelope, got type {env.type!r}")
    doc = r.document or {}
    energy = doc.get("energy") or {}
    measured = doc.get("energy_measured") or {}
    spec = r.spec
    return (
        *_job_columns(env),
        spec.task or "csv",
        spec.optimizer,
        spec.model,
        spec.steps,
        spec.seed,
        doc.get("final_test_acc"),
        doc.get("final_test_balanced_acc"),
        energy.get("total_j"),
        energy.get("method"),
        measured.get("total_j"),
        r.started_at,
        r.finished_at,
        env.created_at,
        received_at,
        _json(r.to_dict()),
    )


@dataclass
class AdaptRow:
    """One stored adaptation result; ``body()`` is the whole AdaptResult."""

    result_id: str
    msg_id: str
    device: str
    job_id: str
    cmd_id: str
    status: str
    reason: str | None
    task: str | None
    optimizer: str
    model: str | None
    steps: int
    seed: int
    final_test_acc: float | None
    final_test_balanced_acc: float | None
    energy_j: float | None
    energy_method: str | None
    measured_energy_j: float | None
    started_at: float
    finished_at: float
    sent_at: float
    received_at: float
    payload: str

    def body(self) -> AdaptResult:
        return AdaptResult.from_dict(json.loads(self.payload))

    def to_dict(self, with_payload: bool = True) -> dict[str, Any]:
        out = asdict(self)
        del out["payload"]
        if with_payload:
            out["document"] = json.loads(self.payload).get("document")
        return out


def energy_columns(energy: dict[str, Any] | None) -> tuple:
    """(method, source, mJ/inference, dynamic mJ/inference, mean mW, idle mW) of a result's
    energy object; the figures only when its status is "ok"."""
    if not energy:
        return (None,) * 6
    source = energy.get("source")
    name = source.get("name") if isinstance(source, dict) else None
    if energy.get("status") != "ok":
        return (energy.get("method"), name, None, None, None, None)
    idle = energy.get("idle")
    return (
        energy.get("method"),
        name,
        energy.get("e_per_inference_mj"),
        energy.get("e_dyn_per_inference_mj"),
        energy.get("p_mean_mw"),
        idle.get("p_mean_mw") if isinstance(idle, dict) else None,
    )


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# -- PostgreSQL ------------------------------------------------------------------------------

# Advisory lock that serialises the PostgreSQL transactions that read before they write (what
# BEGIN IMMEDIATE does for every SQLite transaction). Transactions made only of single-statement
# inserts and upserts, which PostgreSQL makes atomic by itself (a batch of results, heartbeats),
# run side by side: that is where several ingest workers gain.
_PG_WRITE_LOCK = 0x68616C6F  # "halo"
_JSON_EXTRACT = re.compile(r"json_extract\(([\w.]+), '\$\.([\w.]+)'\)")
_IS_NOT = re.compile(r"\bIS NOT (?!NULL\b|TRUE\b|FALSE\b|DISTINCT\b)")
_DDL_TYPES = re.compile(r"\b(REAL|INTEGER|BLOB)\b")
_PG_TYPES = {"REAL": "DOUBLE PRECISION", "INTEGER": "BIGINT", "BLOB": "BYTEA"}
_CREATE_TABLE = re.compile(r"^(\s*CREATE TABLE \w+ \()")
# Statements of MIGRATIONS that need more than _pg_ddl, by (version, index). Migration 1's
# backfill: PostgreSQL wants json's text cast to the columns' types.
_PG_MIGRATION_SQL = {
    (1, 6): """UPDATE results SET
            energy_method = payload::jsonb #>> '{energy,method}',
            energy_source = payload::jsonb #>> '{energy,source,name}',
            e_per_inference_mj = (payload::jsonb #>> '{energy,e_per_inference_mj}')::float8,
            e_dyn_per_inference_mj = (payload::jsonb #>> '{energy,e_dyn_per_inference_mj}')::float8,
            p_mean_mw = (payload::jsonb #>> '{energy,p_mean_mw}')::float8,
            p_idle_mw = (payload::jsonb #>> '{energy,idle,p_mean_mw}')::float8
        WHERE payload::jsonb -> 'energy' IS NOT NULL""",
}


@functools.lru_cache(maxsize=1024)
def _pg_sql(sql: str) -> str:
    """A statement in the store's SQLite dialect as PostgreSQL takes it from psycopg."""
    sql = _JSON_EXTRACT.sub(
        lambda m: "({}::jsonb #>> '{{{}}}')".format(m[1], m[2].replace(".", ",")), sql
    )
    sql = _IS_NOT.sub("IS DISTINCT FROM ", sql)
    out, quoted = [], False
    for ch in sql:
        if ch == "'":
            quoted = not quoted
        # psycopg reads every % as the start of a placeholder, quoted or not.
        out.append("%%" if ch == "%" else "%s" if ch == "?" and not quoted else ch)
    return "".join(out)


def _pg_ddl(version: int, index: int, statement: str) -> str:
    """A migration statement for PostgreSQL: its types, and every table gets the ``rowid``
    SQLite gives it implicitly (queries order by insertion with it)."""
    explicit = _PG_MIGRATION_SQL.get((version, index))
    if explicit is not None:
        return explicit
    statement = _DDL_TYPES.sub(lambda m: _PG_TYPES[m[1]], statement)
    return _CREATE_TABLE.sub(r"\1rowid BIGINT GENERATED ALWAYS AS IDENTITY, ", statement)


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


class _Postgres:
    """A psycopg connection that takes the store's SQLite-dialect SQL, like sqlite3's
    ``execute``/``executemany``/``in_transaction``. Autocommit; transactions are explicit."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise StoreError(
                "a PostgreSQL store needs psycopg: pip install 'halofarm[postgres]'"
            ) from None
        self._psycopg = psycopg
        self._url = url
        self._locked = False
        self._in_tx = False
        self._conn = self._connect()

    def _connect(self):
        psycopg = self._psycopg

        # The SQLite schema keeps booleans in INTEGER columns; PostgreSQL will not put a
        # boolean there, so they travel as 0/1 as sqlite3 sends them.
        class BoolAsInt(psycopg.adapt.Dumper):
            oid = psycopg.postgres.types["int2"].oid

            def dump(self, obj: bool) -> bytes:
                return b"1" if obj else b"0"

        try:
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot open the store {_redact(self._url)}: {' '.join(str(exc).split())}"
            ) from None

        # PostgreSQL's text cannot hold NUL, which a device's JSON strings may: the flat
        # columns get U+FFFD instead (the payload keeps the JSON escape), not a write that
        # fails and is retried forever. Otherwise as psycopg's own str dumper: text of unknown
        # type for the server to infer, in the connection's encoding (UTF-8, set below).
        class TextWithoutNul(psycopg.adapt.Dumper):
            def dump(self, obj: str) -> bytes:
                return (obj.replace("\x00", "\ufffd") if "\x00" in obj else obj).encode()

        conn.execute("SET client_encoding TO 'UTF8'")
        conn.adapters.register_dumper(bool, BoolAsInt)
        conn.adapters.register_dumper(str, TextWithoutNul)
        return conn

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    def lock(self) -> None:
        """Take the store's write lock for the rest of this transaction."""
        if not self._locked:
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_WRITE_LOCK,))
            self._locked = True

    def execute(self, sql: str, args: Iterable[Any] = ()):
        if sql == "BEGIN IMMEDIATE":
            self._reconnect_if_broken()
            self._locked = False
            cursor = self._conn.execute("BEGIN")
            self._in_tx = True
            return cursor
        if sql in ("COMMIT", "ROLLBACK"):
            self._in_tx = False
            if sql == "ROLLBACK" and self._conn.broken:
                return None  # the transaction ended with the connection
            return self._conn.execute(sql)
        if not self._in_tx:
            self._reconnect_if_broken()
        elif sql.lstrip()[:6].upper() == "SELECT":
            self.lock()  # a read whose answer the transaction's writes may depend on
        return self._conn.execute(_pg_sql(sql), args)

    def _reconnect_if_broken(self) -> None:
        # Only between transactions: mid-transaction, a new connection would commit the rest
        # of it statement by statement.
        if self._conn.broken:
            self._conn = self._connect()

    def executemany_atomic(self, sql: str, rows: list[tuple]) -> int:
        """A statement in psycopg's syntax, atomic by itself (INSERT ... ON CONFLICT), so run
        without the write lock, once per row; how many rows it changed in all."""
        cursor = self._conn.cursor()
        cursor.executemany(sql, rows)
        return cursor.rowcount

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        if self._in_tx:
            self.lock()
        self._conn.cursor().executemany(_pg_sql(sql), rows)

    def close(self) -> None:
        self._conn.close()


class Store:
    """One connection to the store; safe to share between threads (calls are serialised).

    Writes from several threads or processes are fine; a transaction spanning several calls
    is ``with store.transaction(): ...`` and commits once, at the end.

    ``path`` is a SQLite file or a ``postgresql://`` URL (default: :func:`default_target`).
    ``location`` names the store in messages. For PostgreSQL, ``path`` is where a SQLite store
    would be, in the user data directory: files kept beside the store go next to it.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        target = path if path is not None else default_target()
        self._lock = threading.RLock()
        self._depth = 0
        if is_postgres(target):
            self._open_postgres(str(target))
        else:
            self._open_sqlite(Path(target))

    def _open_postgres(self, url: str) -> None:
        self.dialect = "postgresql"
        self.path = Path(platformdirs.user_data_dir("halofarm")) / STORE_NAME
        self.location = _redact(url)
        self._db = _Postgres(url)
        try:
            self._migrate()
        except StoreError:
            self._db.close()
            raise
        except Exception as exc:  # psycopg.Error: the server went away, permissions ...
            self._db.close()
            raise StoreError(
                f"cannot use the store {self.location}: {' '.join(str(exc).split())}"
            ) from None

    def _open_sqlite(self, path: Path) -> None:
        self.dialect = "sqlite"
        self.path = path
        self.location = str(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT), so a
            # writer takes the write lock up front instead of failing to upgrade a read lock.
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}") from None
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(
                    f"the store {self.path} cannot use WAL mode (got {mode!r}); put it on a "
                    "local file system"
                )
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.OperationalError as exc:  # locked past the busy timeout, disk full ...
            self._db.close()
            raise StoreError(f"cannot use the store {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(
                f"{self.path} is not a usable halofarm store ({exc}); move it away or pass "
                "another path"
            ) from None
        except BaseException:
            self._db.close()
            raise

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction for everything inside; nested uses join the outer one."""
        with self._lock:
            if self._depth == 0:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if self._depth == 0:
                try:
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise

    def schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        postgres = self.dialect == "postgresql"
        with self.transaction():
            if postgres:  # concurrent CREATE TABLE IF NOT EXISTS can fail there
                self._db.lock()
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store {self.location} has schema version {version}, newer than this "
                f"halofarm understands ({SCHEMA_VERSION}); upgrade halofarm"
            )
        for step in range(version, SCHEMA_VERSION):
            with self.transaction():
                # Another process may have migrated while we waited for the write lock.
                row = self._db.execute(
                    "SELECT value FROM meta WHERE key = 'schema_version'"
                ).fetchone()
                if row is not None and int(row[0]) > step:
                    continue
                for index, statement in enumerate(MIGRATIONS[step]):
                    self._db.execute(_pg_ddl(step, index, statement) if postgres else statement)
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(step + 1),),
                )

    # -- writes ----------------------------------------------------------------------------

    def add_results(
        self, batch: Iterable[Envelope], received_at: float | None = None
    ) -> tuple[int, int]:
        """Insert result envelopes in one transaction; returns (inserted, duplicates)."""
        at = time.time() if received_at is None else received_at
        return self.add_result_rows([result_row(env, at) for env in batch])

    def add_result_rows(self, rows: list[tuple]) -> tuple[int, int]:
        """Like add_results, for rows made by :func:`result_row` (each with its own time)."""
        if self.dialect == "postgresql":
            return self._add_result_rows_pg(rows)
        inserted = start = 0
        with self.transaction():
            for size in _CHUNK_ROWS:
                while len(rows) - start >= size:
                    args = []
                    for row in rows[start : start + size]:
                        args += row[:-1]
                        body = _body_text(row[-1])
                        args += (body, None) if body is not None else (None, row[-1])
                    start += size
                    inserted += self._db.execute(_insert_results_sql(size), args).rowcount
        return inserted, len(rows) - inserted

    def _add_result_rows_pg(self, rows: list[tuple]) -> tuple[int, int]:
        args = []
        for row in rows:
            body = _body_text(row[-1])
            args.append((*row[:-1], _json(json.loads(row[-1])["body"]) if body is None else body))
        with self.transaction():
            inserted = self._db.executemany_atomic(_INSERT_RESULT_PG, args) if args else 0
        return inserted, len(rows) - inserted

    def add_adapt_rows(self, rows: list[tuple]) -> tuple[int, int]:
        """Insert adapt_results rows (from :func:`adapt_result_row`); (inserted, duplicates)."""
        sql = (
            "INSERT INTO adapt_results ({}) VALUES ({}) ON CONFLICT (result_id) DO NOTHING".format(
                ", ".join(ADAPT_COLUMNS), ", ".join("?" * len(ADAPT_COLUMNS))
            )
        )
        inserted = 0
        with self.transaction():
            if self.dialect == "postgresql":
                inserted = self._db.executemany_atomic(_pg_sql(sql), rows) if rows else 0
            else:
                for row in rows:
                    inserted += self._db.execute(sql, row).rowcount
        return inserted, len(rows) - inserted

    def adapt_results(self, *, device: str | None = None, job: str | None = None) -> list[AdaptRow]:
        """Stored adaptation results, oldest received first; job: a job_id or cmd_id."""
        where, args = _result_filters(device, None, job, None, None)
        columns = ", ".join(ADAPT_COLUMNS)
        sql = f"SELECT {columns} FROM adapt_results{where} ORDER BY received_at, rowid"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [AdaptRow(*r) for r in rows]

    def record_dispatch(self, device: str, command: Command, at: float | None = None) -> None:
        """A command sent to device; acks for its cmd_id move the job along."""
        at = time.time() if at is None else at
        spec = command.bench
        with self.transaction():
            self._db.execute(
                "INSERT INTO jobs (cmd_id, job_id, device, kind, model_sha256, spec, state, "
                "reason, created_at, updated_at) VALUES (?, NULL, ?, ?, ?, ?, ?, NULL, ?, ?) "
                "ON CONFLICT (cmd_id) DO NOTHING",
                (
                    command.cmd_id,
                    device,
                    command.kind,
                    None if spec is None else spec.model_sha256,
                    _json(command.to_dict()),
                    _DISPATCHED,
                    at,
                    at,
                ),
            )

    def record_ack(self, device: str, ack: Ack, at: float | None = None) -> str:
        """Apply an ack from device; returns what happened, one of the ACK_* outcomes.

        An ack for a command this store never dispatched (e.g. sent by another tool) still
        gets a job row (ACK_NEW), so nothing a device says is dropped. A stale or repeated
        ack changes nothing (ACK_STALE); an ack from a device the command was not sent to
        changes nothing either (ACK_WRONG_DEVICE) and is the caller's to report.
        """
        at = time.time() if at is None else at
        with self.transaction():
            row = self._db.execute(
                "SELECT device, state FROM jobs WHERE cmd_id = ?", (ack.cmd_id,)
            ).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO jobs (cmd_id, job_id, device, state, reason, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (ack.cmd_id, ack.job_id, device, ack.state, ack.reason, at, at),
                )
                return ACK_NEW
            if row[0] != device:
                return ACK_WRONG_DEVICE
            if _STATE_RANK[ack.state] <= _STATE_RANK[row[1]]:
                return ACK_STALE
            self._db.execute(
                "UPDATE jobs SET state = ?, reason = ?, job_id = coalesce(?, job_id), "
                "updated_at = ? WHERE cmd_id = ?",
                (ack.state, ack.reason, ack.job_id, at, ack.cmd_id),
            )
            return ACK_APPLIED

    def record_status(self, env: Envelope, at: float | None = None) -> None:
        """Latest status of env.device. A retained status is redelivered on every reconnect;
        the same msg_id again keeps the original time, so it does not look fresh."""
        body = env.body
        if not isinstance(body, Status):
            raise TypeError(f"expected a status envelope, got type {env.type!r}")
        at = time.time() if at is None else at
        with self.transaction():
            self._db.execute(
                "INSERT INTO devices (device, status, status_at, status_msg_id, agent_version, "
                "refusing_jobs) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET "
                "status = excluded.status, status_at = excluded.status_at, "
                "status_msg_id = excluded.status_msg_id, agent_version = excluded.agent_version, "
                "refusing_jobs = excluded.refusing_jobs "
                "WHERE devices.status_msg_id IS NOT excluded.status_msg_id",
                (env.device, body.state, at, env.msg_id, body.agent_version, body.refusing_jobs),
            )

    def record_caps(self, env: Envelope, at: float | None = None) -> None:
        if not isinstance(env.body, Caps):
            raise TypeError(f"expected a caps envelope, got type {env.type!r}")
        self._upsert_device(env.device, "caps", "caps_at", env.body.to_dict(), at)

    def record_hb(self, env: Envelope, at: float | None = None) -> None:
        if not isinstance(env.body, Heartbeat):
            raise TypeError(f"expected a hb envelope, got type {env.type!r}")
        at = time.time() if at is None else at
        with self.transaction():
            self._db.execute(
                "INSERT INTO devices (device, last_hb, hb_at, clock_offset_s) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (device) DO UPDATE SET last_hb = excluded.last_hb, "
                "hb_at = excluded.hb_at, clock_offset_s = excluded.clock_offset_s",
                (env.device, _json(env.body.to_dict()), at, env.created_at - at),
            )

    def _upsert_device(
        self, device: str, column: str, at_column: str, data: dict, at: float | None
    ) -> None:
        at = time.time() if at is None else at
        with self.transaction():
            self._db.execute(
                f"INSERT INTO devices (device, {column}, {at_column}) VALUES (?, ?, ?) "
                f"ON CONFLICT (device) DO UPDATE SET {column} = excluded.{column}, "
                f"{at_column} = excluded.{at_column}",
                (device, _json(data), at),
            )

    def record_reject(
        self, device: str, leaf: str, topic: str, reason: str, at: float | None = None
    ) -> None:
        """Count one rejected message from device on a leaf topic, keeping the last reason."""
        at = time.time() if at is None else at
        with self.transaction():
            self._db.execute(
                "INSERT INTO rejects (device, leaf, count, last_topic, last_reason, first_at, "
                "last_at) VALUES (?, ?, 1, ?, ?, ?, ?) ON CONFLICT (device, leaf) DO UPDATE SET "
                "count = rejects.count + 1, last_topic = excluded.last_topic, "
                "last_reason = excluded.last_reason, last_at = excluded.last_at",
                (device, leaf, topic[:512], reason[:2048], at, at),
            )

    def put_blob(self, data: bytes, name: str) -> str:
        """Keep a model's bytes in the store (to serve it to devices); returns its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        with self.transaction():
            self._db.execute(
                "INSERT INTO blobs (sha256, name, size, path, data, added_at) "
                "VALUES (?, ?, ?, NULL, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                (sha, name, len(data), sqlite3.Binary(data), time.time()),
            )
        return sha

    def put_blob_file(self, path: str | os.PathLike, name: str | None = None) -> str:
        """Serve a model from its file instead of copying it in; returns its sha256.

        The file must then stay unchanged: reads check its size, and devices verify sha256.
        """
        file = Path(path).resolve()
        digest = hashlib.sha256()
        try:
            with open(file, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            size = file.stat().st_size
        except OSError as exc:
            raise StoreError(f"cannot read model file {file}: {exc}") from None
        sha = digest.hexdigest()
        with self.transaction():
            self._db.execute(
                "INSERT INTO blobs (sha256, name, size, path, data, added_at) "
                "VALUES (?, ?, ?, ?, NULL, ?) ON CONFLICT (sha256) DO UPDATE SET "
                "path = excluded.path, size = excluded.size WHERE blobs.path IS NOT NULL",
                (sha, name or file.name, size, str(file), time.time()),
            )
        return sha

    def put_model(self, sha256: str, name: str, info: dict[str, Any]) -> None:
        """What a model is (a zoo manifest row: space, arch, index, dtype, dataset, MACs ...),
        keyed by its sha256; the first description of a model stays."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO models (sha256, name, space, arch, arch_index, dtype, dataset, "
                "resolution, macs, params, info, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                (
                    sha256,
                    name,
                    info.get("space"),
                    info.get("arch"),
                    info.get("index"),
                    info.get("dtype"),
                    info.get("dataset"),
                    info.get("resolution"),
                    info.get("macs"),
                    info.get("params"),
                    _json(info),
                    time.time(),
                ),
            )

    # -- for the campaign and dataset layers, which own their tables' SQL ------------------

    def execute(self, sql: str, args: Iterable[Any] = ()) -> int:
        """One write statement in its own transaction (or the caller's); returns rowcount."""
        with self.transaction():
            return self._db.execute(sql, tuple(args)).rowcount

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        with self.transaction():
            self._db.executemany(sql, rows)

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # -- reads -----------------------------------------------------------------------------

    def blob(self, sha256: str) -> BlobInfo | None:
        with self._lock:
            row = self._db.execute(
                "SELECT sha256, name, size, path, added_at FROM blobs WHERE sha256 = ?", (sha256,)
            ).fetchone()
        return None if row is None else BlobInfo(*row)

    def read_blob(self, sha256: str, offset: int, length: int) -> bytes:
        """Up to length bytes of a blob from offset (short at the end); KeyError if unknown."""
        if offset < 0 or length < 0:
            raise ValueError(f"offset and length must be >= 0, got {offset}, {length}")
        info = self.blob(sha256)
        if info is None:
            raise KeyError(sha256)
        if info.path is None:
            with self._lock:
                row = self._db.execute(
                    "SELECT substr(data, ?, ?) FROM blobs WHERE sha256 = ?",
                    (offset + 1, length, sha256),
                ).fetchone()
            return bytes(row[0]) if row and row[0] is not None else b""
        try:
            with open(info.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size != info.size:
                    raise StoreError(
                        f"model file {info.path} changed size since it was added "
                        f"({info.size} -> {size} bytes); add it again"
                    )
                fh.seek(offset)
                return fh.read(length)
        except OSError as exc:
            raise StoreError(f"cannot read model file {info.path}: {exc}") from None

    def results(
        self,
        *,
        device: str | None = None,
        model: str | None = None,
        job: str | None = None,
        since: float | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[ResultRow]:
        """Stored results, oldest received first.

        model: a model_sha256 prefix or an exact model_name; job: a job_id or cmd_id;
        since: received_at >= since (coordinator clock, so polling with it never misses one).
        """
        where, args = _result_filters(device, model, job, since, status)
        sql = f"SELECT {', '.join(RESULT_COLUMNS)} FROM results{where} ORDER BY received_at, rowid"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_result_from_row(r) for r in rows]

    def count_results(
        self,
        *,
        device: str | None = None,
        model: str | None = None,
        job: str | None = None,
        since: float | None = None,
        status: str | None = None,
    ) -> int:
        where, args = _result_filters(device, model, job, since, status)
        with self._lock:
            return self._db.execute(f"SELECT count(*) FROM results{where}", args).fetchone()[0]

    def clock_offset(self, device: str) -> float | None:
        """The device's clock minus this coordinator's at its last heartbeat (None: unknown)."""
        with self._lock:
            row = self._db.execute(
                "SELECT clock_offset_s FROM devices WHERE device = ?", (device,)
            ).fetchone()
        return None if row is None else row[0]

    def devices(self) -> list[DeviceRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT device, status, status_at, agent_version, caps, caps_at, last_hb, hb_at, "
                "refusing_jobs, clock_offset_s FROM devices ORDER BY device"
            ).fetchall()
        return [
            DeviceRecord(d, st, st_at, ver, _loads(caps), caps_at, _loads(hb), *rest)
            for d, st, st_at, ver, caps, caps_at, hb, *rest in rows
        ]

    def jobs(
        self,
        *,
        device: str | None = None,
        state: str | None = None,
        cmd_ids: Iterable[str] | None = None,
    ) -> list[JobRecord]:
        clauses, args = [], []
        if device is not None:
            clauses.append("device = ?")
            args.append(device)
        if state is not None:
            clauses.append("state = ?")
            args.append(state)
        if cmd_ids is not None:
            ids = list(cmd_ids)
            if not ids:  # `IN ()` is SQLite's alone
                return []
            clauses.append(f"cmd_id IN ({', '.join('?' * len(ids))})")
            args.extend(ids)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                "SELECT cmd_id, job_id, device, kind, model_sha256, spec, state, reason, "
                f"created_at, updated_at FROM jobs{where} ORDER BY created_at, cmd_id",
                args,
            ).fetchall()
        return [
            JobRecord(cmd, job, dev, kind, sha, _loads(spec), st, reason, created, updated)
            for cmd, job, dev, kind, sha, spec, st, reason, created, updated in rows
        ]

    def rejects(self) -> list[RejectRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT device, leaf, count, last_topic, last_reason, first_at, last_at "
                "FROM rejects ORDER BY device, leaf"
            ).fetchall()
        return [RejectRecord(*r) for r in rows]


def _result_filters(
    device: str | None,
    model: str | None,
    job: str | None,
    since: float | None,
    status: str | None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if device is not None:
        clauses.append("device = ?")
        args.append(device)
    if model is not None:
        if not model:
            raise ValueError("the model filter must not be empty")
        if _HEX_PREFIX.fullmatch(model):
            # A range, not LIKE, so the index serves it: hex digits all sort below "g".
            clauses.append("((model_sha256 >= ? AND model_sha256 < ?) OR model_name = ?)")
            args += [model, model + "g", model]
        else:
            clauses.append("model_name = ?")
            args.append(model)
    if job is not None:
        clauses.append("(job_id = ? OR cmd_id = ?)")
        args += [job, job]
    if since is not None:
        clauses.append("received_at >= ?")
        args.append(since)
    if status is not None:
        clauses.append("status = ?")
        args.append(status)
    return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), args


def _result_from_row(row: tuple) -> ResultRow:
    values = dict(zip(RESULT_COLUMNS, row, strict=True))
    values["xnnpack"] = bool(values["xnnpack"])
    values["delegated"] = bool(values["delegated"])
    return ResultRow(**values)
