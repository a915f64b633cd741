"""The store on PostgreSQL: the SQLite store's behaviour tests again on a real server (a fresh
database each), plus what only a server store has: URLs, concurrent first opens, the dialect
translation, and one-line errors when psycopg or the server is missing."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
import uuid

import pytest

from coordinator import store as store_mod
from coordinator.store import SCHEMA_VERSION, Store, StoreError
from protocol import AdaptResult, AdaptSpec, decode, make
from tests.coordinator.test_ingest_support import bench_result
from tests.coordinator.test_store import (  # noqa: F401  (collected here against PostgreSQL)
    _envelope_texts,
    results,
    test_ack_for_unknown_command_creates_a_job,
    test_blobs_in_store_and_by_path,
    test_device_status_caps_hb,
    test_energy_columns_from_the_result,
    test_failed_result_has_no_stats,
    test_jobs_follow_acks_and_never_go_back,
    test_large_batches_split_into_statements_exactly,
    test_rejects_are_counted_per_device_and_leaf,
    test_result_filters,
    test_result_row_keeps_flat_columns_and_whole_body,
    test_results_since_is_usable_for_polling,
    test_transaction_groups_writes_and_rolls_back,
)
from tests.mqtt_broker import free_port


@pytest.fixture
def store(postgres_url: str):
    with Store(postgres_url) as s:
        yield s


def test_new_postgres_store_has_every_table_and_the_schema_version(store: Store) -> None:
    assert store.dialect == "postgresql" and store.schema_version() == SCHEMA_VERSION
    tables = {r[0] for r in store.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )}  # fmt: skip
    assert {"meta", "results", "devices", "jobs", "rejects", "blobs", "campaigns",
            "campaign_jobs", "imported", "models", "adapt_results"} <= tables  # fmt: skip


def test_same_result_twice_is_one_row_across_connections(postgres_url: str) -> None:
    batch = results(50)
    with Store(postgres_url) as a, Store(postgres_url) as b:
        assert a.add_results(batch[:30]) == (30, 0)
        assert b.add_results(batch[20:]) == (20, 10)
        assert a.add_results(batch[:3] + batch[:3]) == (0, 6)
    with Store(postgres_url) as s:  # reopened: migrations are not run twice
        assert s.add_results(batch) == (0, 50)
        assert s.count_results() == 50 and s.schema_version() == SCHEMA_VERSION


def test_concurrent_first_opens_migrate_once(postgres_url: str) -> None:
    errors: list[BaseException] = []
    batch = results(5)

    def open_store() -> None:
        try:
            with Store(postgres_url) as s:
                s.add_results(batch)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with Store(postgres_url) as s:
        assert s.count_results() == 5
        assert s.query("SELECT value FROM meta WHERE key = 'schema_version'") == [
            (str(SCHEMA_VERSION),)
        ]


def test_payload_is_the_body_whatever_the_envelope_text(store: Store) -> None:
    body = bench_result(1, model_name='quote " \u00e9 \U0001f600')
    body.env_pre = {"}}": "}}", "big": -1234567890123456789, "e": 1e300}
    env = make(body, "rpi4-01")
    for how, text in _envelope_texts(env).items():
        decoded = decode(text.encode())
        store.execute("DELETE FROM results")
        store.add_result_rows([store_mod.result_row(decoded, 1.0, text.encode())])
        (payload,) = store.query("SELECT payload FROM results")[0]
        assert json.loads(payload) == decoded.body.to_dict(), how


def test_a_nul_in_a_device_string_is_stored_not_a_poison_message(store: Store) -> None:
    body = bench_result(1, status="failed")
    body.reason = "model crashed\x00here"
    env = make(body, "rpi4-01")
    assert store.add_results([env]) == (1, 0)
    (row,) = store.results()
    assert row.reason == "model crashed\ufffdhere"
    assert row.body().reason == "model crashed\x00here"  # the payload keeps what was sent


def test_adapt_results_are_idempotent_too(store: Store) -> None:
    def adapt(i: int):
        body = AdaptResult(
            result_id=uuid.uuid4().hex, job_id=f"job-{i}", cmd_id=uuid.uuid4().hex,
            status="ok", reason=None, spec=AdaptSpec(task="thyroid", steps=10, seed=i),
            document={"final_test_acc": 0.9, "energy": {"total_j": 1.5, "method": "model"}},
            started_at=1.0, finished_at=2.0,
        )  # fmt: skip
        return store_mod.adapt_result_row(make(body, "rpi4-01"), 3.0)

    rows = [adapt(i) for i in range(3)]
    assert store.add_adapt_rows(rows) == (3, 0)
    assert store.add_adapt_rows(rows[:2] + [adapt(3)]) == (1, 2)
    got = store.adapt_results(device="rpi4-01")
    assert len(got) == 4 and got[0].final_test_acc == 0.9 and got[0].energy_j == 1.5
    assert got[0].body().spec.task == "thyroid"


def test_the_dialect_translation() -> None:
    pg = store_mod._pg_sql
    assert pg("SELECT a FROM t WHERE b = ? AND c LIKE 'x%?'") == (
        "SELECT a FROM t WHERE b = %s AND c LIKE 'x%%?'"
    )
    assert pg("SELECT json_extract(payload, '$.env_pre.temps_c') FROM results") == (
        "SELECT (payload::jsonb #>> '{env_pre,temps_c}') FROM results"
    )
    assert pg("WHERE a IS NOT excluded.a OR b IS NOT NULL") == (
        "WHERE a IS DISTINCT FROM excluded.a OR b IS NOT NULL"
    )
    ddl = store_mod._pg_ddl(0, 5, "CREATE TABLE x (a INTEGER, b REAL, c BLOB, d TEXT)")
    assert ddl == (
        "CREATE TABLE x (rowid BIGINT GENERATED ALWAYS AS IDENTITY, a BIGINT, "
        "b DOUBLE PRECISION, c BYTEA, d TEXT)"
    )


def test_a_lost_connection_fails_one_write_then_reconnects(postgres_url: str) -> None:
    import psycopg

    batch = results(4)
    with Store(postgres_url) as store, psycopg.connect(postgres_url, autocommit=True) as admin:
        assert store.add_results(batch[:2]) == (2, 0)
        admin.execute(  # what a server restart does to the store's connection
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        with pytest.raises(psycopg.OperationalError):
            store.add_results(batch)  # ingest keeps such a batch un-acked and retries it
        assert store.add_results(batch) == (2, 2)
        assert store.count_results() == 4


def test_store_url_from_the_environment(monkeypatch, postgres_url: str) -> None:
    monkeypatch.setenv("HALOFARM_STORE", postgres_url)
    with Store() as s:
        assert s.dialect == "postgresql" and s.location == postgres_url


def test_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot open the store postgresql://u:\\*\\*\\*@"):
        Store(f"postgresql://u:secret@127.0.0.1:{free_port()}/halofarm")


def test_cli_reads_a_postgres_store_and_says_when_psycopg_is_missing(
    store: Store, postgres_url: str
) -> None:
    store.add_results(results(3))
    cli = [sys.executable, "-m", "coordinator", "results", "--no-sync", "--json"]
    out = subprocess.run([*cli, "--store", postgres_url], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == 3
    # Without psycopg: one line that says what to install, exit 2, no traceback.
    blocked = (
        "import sys; sys.modules['psycopg'] = None; from coordinator.cli import main; "
        f"main(['results', '--no-sync', '--store', {postgres_url!r}])"
    )
    out = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "halo-coord: error: a PostgreSQL store needs psycopg: pip install 'halofarm[postgres]'"
    ]


# The campaign layer's own SQL (scheduler, plan order, retries, schedules) on PostgreSQL: its
# tests again, with their store swapped for a fresh database.
CAMPAIGN_TESTS = [
    ("test_campaign_runner", "test_one_job_at_a_time_in_plan_order_then_done"),
    ("test_campaign_runner", "test_failed_jobs_retry_with_exponential_backoff_then_fail"),
    ("test_campaign_runner", "test_a_result_measured_while_throttling_is_measured_again"),
    (
        "test_campaign_runner",
        "test_resume_resends_only_unacknowledged_commands_and_unacked_ones_again_later",
    ),
    ("test_campaign_schedule", "test_register_counts_from_now_and_keeps_last_fire"),
    ("test_campaign_schedule", "test_server_fires_due_campaigns_once_and_skips_while_unfinished"),
    ("test_campaign_schedule", "test_a_fire_started_before_a_crash_is_not_started_again"),
]


@pytest.mark.parametrize("module, name", CAMPAIGN_TESTS)
def test_campaign_layer_on_postgres(module, name, postgres_server, tmp_path, monkeypatch) -> None:
    tests = importlib.import_module(f"tests.coordinator.{module}")
    url = postgres_server.new_database()
    monkeypatch.setattr(tests, "Store", lambda path: Store(url))
    getattr(tests, name)(tmp_path)
