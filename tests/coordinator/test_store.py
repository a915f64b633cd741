"""The SQLite store: schema and migrations, idempotent results, queries, jobs from acks,
device state, rejects and blobs -- on real files in tmp_path."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from coordinator import store as store_mod
from coordinator.store import (
    ACK_APPLIED,
    ACK_NEW,
    ACK_STALE,
    ACK_WRONG_DEVICE,
    SCHEMA_VERSION,
    Store,
    StoreError,
    default_path,
)
from protocol import Ack, BenchSpec, Command, decode, encode, make
from tests.coordinator.test_ingest_support import (
    bench_result,
    caps_message,
    hb_message,
    status_message,
)


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "store.sqlite") as s:
        yield s


def results(n: int, device: str = "rpi4-01", **kw):
    return [make(bench_result(i, **kw), device) for i in range(n)]


def test_new_store_has_schema_wal_and_full_sync(store: Store) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "results", "devices", "jobs", "rejects", "blobs"} <= tables
    # synchronous is per connection: check the store's own.
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_default_path_from_env_or_platformdirs(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HALOFARM_STORE", str(tmp_path / "x.sqlite"))
    assert default_path() == tmp_path / "x.sqlite"
    monkeypatch.delenv("HALOFARM_STORE")
    monkeypatch.setattr(store_mod.platformdirs, "user_data_dir", lambda app: f"/data/{app}")
    assert default_path() == Path("/data/halofarm/store.sqlite")


def test_add_results_is_idempotent_across_batches_and_reopen(tmp_path: Path) -> None:
    batch = results(50)
    with Store(tmp_path / "s.sqlite") as s:
        assert s.add_results(batch) == (50, 0)
        assert s.add_results(batch[:10] + results(5, device="jetson-nano")) == (5, 10)
    with Store(tmp_path / "s.sqlite") as s:
        assert s.add_results(batch) == (0, 50)
        assert s.count_results() == 55
    # Duplicates inside one batch count once too.
    with Store(tmp_path / "t.sqlite") as s:
        assert s.add_results(batch[:3] + batch[:3]) == (3, 3)


def test_large_batches_split_into_statements_exactly(store: Store) -> None:
    big = results(601)
    assert store.add_results(big[:300]) == (300, 0)
    assert store.add_results(big) == (301, 300)
    assert store.count_results() == 601
    assert {r.result_id for r in store.results()} == {e.body.result_id for e in big}


def test_result_row_keeps_flat_columns_and_whole_body(store: Store) -> None:
    env = results(1)[0]
    store.add_results([env], received_at=1000.0)
    (row,) = store.results()
    body = env.body
    assert row.result_id == body.result_id and row.msg_id == env.msg_id
    assert row.device == "rpi4-01" and row.job_id == body.job_id and row.cmd_id == body.cmd_id
    assert row.model_sha256 == body.spec.model_sha256 and row.model_name == "nb201-00000"
    assert row.threads == 4 and row.xnnpack is True and row.delegated is True
    assert row.count == 80 and row.p50_ns == body.stats.p50 and row.cv == body.stats.cv
    assert row.sent_at == env.created_at and row.received_at == 1000.0
    assert row.body() == body
    assert row.body().raw() == body.raw()
    assert "payload" not in row.to_dict()
    assert row.to_dict(with_payload=True)["payload"]["raw_ns"] == body.raw_ns


def test_failed_result_has_no_stats(store: Store) -> None:
    env = results(1, status="failed")[0]
    store.add_results([env])
    (row,) = store.results(status="failed")
    assert row.status == "failed" and row.reason.startswith("model crashed")
    assert row.count is None and row.p50_ns is None and row.init_ns is None


def test_result_filters(store: Store) -> None:
    other_sha = "cd" * 32
    job = uuid.uuid4().hex
    store.add_results(results(3), received_at=100.0)
    store.add_results(results(2, device="jetson-nano", job_id=job), received_at=200.0)
    store.add_results(
        [make(bench_result(9, model_sha256=other_sha, model_name="mbv2-x"), "rpi4-01")],
        received_at=300.0,
    )
    assert store.count_results() == 6
    assert store.count_results(device="jetson-nano") == 2
    assert store.count_results(job=job) == 2
    cmd = store.results(job=job)[0].cmd_id
    assert [r.cmd_id for r in store.results(job=cmd)] == [cmd]
    assert store.count_results(model="cd") == 1
    assert store.count_results(model=other_sha) == 1
    assert store.count_results(model="mbv2-x") == 1
    assert store.count_results(model="ab") == 5
    assert store.count_results(model="nb201-00001") == 2
    assert store.count_results(since=200.0) == 3
    assert store.count_results(device="rpi4-01", since=150.0) == 1
    received = [r.received_at for r in store.results()]
    assert received == sorted(received)
    assert len(store.results(limit=2)) == 2
    with pytest.raises(ValueError):
        store.results(model="")


def test_transaction_groups_writes_and_rolls_back(store: Store) -> None:
    batch = results(4)
    with pytest.raises(RuntimeError), store.transaction():
        store.add_results(batch[:2])
        store.record_reject("rpi4-01", "result", "t", "r")
        raise RuntimeError("boom")
    assert store.count_results() == 0 and store.rejects() == []
    with store.transaction():
        assert store.add_results(batch) == (4, 0)
        store.record_reject("rpi4-01", "result", "t", "r")
    assert store.count_results() == 4 and len(store.rejects()) == 1


def test_two_connections_write_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    batch = results(20)
    with Store(path) as a, Store(path) as b:
        assert a.add_results(batch[:15]) == (15, 0)
        assert b.add_results(batch[5:]) == (5, 10)
        assert a.count_results() == b.count_results() == 20


def bench_command(sha: str = "ab" * 32) -> Command:
    spec = BenchSpec(model_sha256=sha, model_name="nb201-00001")
    return Command(cmd_id=uuid.uuid4().hex, kind="bench", bench=spec)


def test_jobs_follow_acks_and_never_go_back(store: Store) -> None:
    cmd = bench_command()
    store.record_dispatch("rpi4-01", cmd, at=10.0)
    (job,) = store.jobs()
    assert (job.state, job.kind, job.model_sha256, job.final) == ("dispatched", "bench",
                                                                  "ab" * 32, False)  # fmt: skip
    assert job.spec["bench"]["model_name"] == "nb201-00001"

    def ack(state: str, job_id: str | None = None, device: str = "rpi4-01") -> str:
        return store.record_ack(device, Ack(cmd.cmd_id, state, job_id=job_id), at=20.0)

    assert ack("accepted", job_id="job-1") == ACK_APPLIED
    assert ack("running") == ACK_APPLIED
    assert store.jobs()[0].job_id == "job-1"  # kept when a later ack omits it
    assert ack("done") == ACK_APPLIED
    assert ack("running") == ACK_STALE  # reordered or redelivered
    assert ack("failed") == ACK_STALE  # the first final word stays
    assert ack("done") == ACK_STALE
    assert ack("cancelled", device="jetson-nano") == ACK_WRONG_DEVICE
    (job,) = store.jobs(device="rpi4-01")
    assert (job.state, job.final, job.updated_at) == ("done", True, 20.0)
    # Dispatching the same cmd_id again (a retry) keeps the job's progress.
    store.record_dispatch("rpi4-01", cmd)
    assert store.jobs(state="done")[0].cmd_id == cmd.cmd_id


def test_ack_for_unknown_command_creates_a_job(store: Store) -> None:
    cmd_id = uuid.uuid4().hex
    assert store.record_ack("rpi4-01", Ack(cmd_id, "pong"), at=5.0) == ACK_NEW
    (job,) = store.jobs(cmd_ids=[cmd_id])
    assert (job.device, job.kind, job.state) == ("rpi4-01", None, "pong")
    assert store.jobs(cmd_ids=[]) == []


def test_device_status_caps_hb(store: Store) -> None:
    topic, payload, online = status_message("rpi4-01")
    store.record_status(online, at=100.0)
    store.record_status(online, at=160.0)  # the retained status redelivered: not news
    (dev,) = store.devices()
    assert (dev.status, dev.status_at, dev.agent_version) == ("online", 100.0, "0.1.0")
    assert dev.caps is None and dev.last_hb is None
    store.record_caps(caps_message("rpi4-01")[2], at=101.0)
    store.record_hb(hb_message("rpi4-01")[2], at=130.0)
    store.record_status(status_message("rpi4-01", "offline")[2], at=170.0)
    (dev,) = store.devices()
    assert (dev.status, dev.status_at) == ("offline", 170.0)
    assert dev.caps["board"].startswith("Raspberry Pi 4") and dev.caps_at == 101.0
    assert dev.last_hb["queue_depth"] == 2 and dev.hb_at == 130.0
    store.record_hb(hb_message("jetson-nano")[2], at=200.0)
    assert [d.device for d in store.devices()] == ["jetson-nano", "rpi4-01"]


def test_rejects_are_counted_per_device_and_leaf(store: Store) -> None:
    store.record_reject("rpi4-01", "result", "halo/v1/dev/rpi4-01/job/j/result", "a: x", at=1.0)
    store.record_reject("rpi4-01", "result", "halo/v1/dev/rpi4-01/job/k/result", "b: y", at=2.0)
    store.record_reject("", "", "junk/topic", "topic: bad", at=3.0)
    by_key = {(r.device, r.leaf): r for r in store.rejects()}
    r = by_key[("rpi4-01", "result")]
    assert (r.count, r.last_reason, r.first_at, r.last_at) == (2, "b: y", 1.0, 2.0)
    assert r.last_topic.endswith("/k/result")
    assert by_key[("", "")].count == 1


def test_blobs_in_store_and_by_path(store: Store, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    sha = store.put_blob(data, "model.tflite")
    assert store.put_blob(data, "again.tflite") == sha
    info = store.blob(sha)
    assert (info.name, info.size, info.path) == ("model.tflite", len(data), None)
    assert store.read_blob(sha, 0, 100) == data[:100]
    assert store.read_blob(sha, 255_990, 100) == data[255_990:]
    assert store.read_blob(sha, len(data), 10) == b""

    path = tmp_path / "m.tflite"
    path.write_bytes(data[::-1])
    sha2 = store.put_blob_file(path)
    assert store.blob(sha2).path == str(path.resolve()) and store.blob(sha2).name == "m.tflite"
    chunks = [store.read_blob(sha2, off, 4096) for off in range(0, len(data), 4096)]
    assert b"".join(chunks) == data[::-1]
    path.write_bytes(data[::-1] + b"x")
    with pytest.raises(StoreError, match="changed size"):
        store.read_blob(sha2, 0, 10)
    with pytest.raises(KeyError):
        store.read_blob("00" * 32, 0, 10)
    with pytest.raises(StoreError, match="cannot read"):
        store.put_blob_file(tmp_path / "missing.tflite")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer than this halofarm"):
        Store(path)


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable halofarm store"):
        Store(path)


def test_migrations_apply_in_order_and_once(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "s.sqlite"
    Store(path).close()
    added = "CREATE TABLE extra (x INTEGER)"
    monkeypatch.setitem(store_mod.MIGRATIONS, SCHEMA_VERSION, (added,))
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with Store(path) as s:
        assert s.schema_version() == SCHEMA_VERSION + 1
    with Store(path) as s:  # already migrated: nothing runs twice
        assert s.schema_version() == SCHEMA_VERSION + 1
        assert s._db.execute("SELECT count(*) FROM extra").fetchone() == (0,)


def test_store_in_unwritable_place_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the store"):
        Store(blocker / "sub" / "store.sqlite")


def test_results_since_is_usable_for_polling(store: Store) -> None:
    start = time.time()
    store.add_results(results(3))
    assert store.count_results(since=start) == 3


ENERGY = {
    "status": "ok",
    "method": "measured",
    "source": {"name": "ina3221x", "kind": "ina3221-iio", "method": "measured"},
    "e_total_mj": 51234.5,
    "e_per_inference_mj": 12.5,
    "e_dyn_per_inference_mj": 4.25,
    "p_mean_mw": 5123.4,
    "idle": {"seconds": 10.0, "n_samples": 1000, "p_mean_mw": 3210.0, "p_std_mw": 12.0},
}


def test_energy_columns_from_the_result(store: Store) -> None:
    with_energy = bench_result(1)
    with_energy.energy = ENERGY
    unavailable = bench_result(2)
    unavailable.energy = {"status": "unavailable", "reason": "no power source found"}
    store.add_results([make(with_energy, "tx2-01"), make(unavailable, "tx2-01"), results(1)[0]])
    rows = {r.result_id: r for r in store.results()}
    row = rows[with_energy.result_id]
    assert (row.energy_method, row.energy_source) == ("measured", "ina3221x")
    assert (row.e_per_inference_mj, row.e_dyn_per_inference_mj) == (12.5, 4.25)
    assert (row.p_mean_mw, row.p_idle_mw) == (5123.4, 3210.0)
    assert row.body().energy == ENERGY
    none = rows[unavailable.result_id]
    assert none.energy_method is None and none.e_per_inference_mj is None


def test_a_store_from_before_energy_is_migrated(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "old.sqlite"
    old = make(bench_result(3), "pi-01")
    with monkeypatch.context() as m:  # a store as the previous schema made it
        m.setattr(store_mod, "MIGRATIONS", {0: store_mod.MIGRATIONS[0]})
        m.setattr(store_mod, "SCHEMA_VERSION", 1)
        Store(path).close()
    columns = [c for c in store_mod.RESULT_COLUMNS if c not in store_mod.ENERGY_COLUMNS]
    values = dict(zip(store_mod.RESULT_COLUMNS, store_mod.result_row(old, 1.0), strict=True))
    db = sqlite3.connect(path)
    with db:
        db.execute(
            f"INSERT INTO results ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [values[c] for c in columns],
        )
    db.close()
    with Store(path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        (row,) = s.results()
        assert row.result_id == old.body.result_id and row.energy_method is None
        new = bench_result(4)
        new.energy = ENERGY
        s.add_results([make(new, "pi-01")])
        assert [r.e_per_inference_mj for r in s.results()] == [None, 12.5]


def _envelope_texts(env) -> dict[str, str]:
    """One result envelope written several ways, all valid: as encode() writes it (the form
    the insert cuts the body out of itself), and forms it must leave to json_extract."""
    data = env.to_dict()
    canonical = encode(env).decode()
    reordered = {"body": data["body"], **{k: v for k, v in data.items() if k != "body"}}
    return {
        "canonical": canonical,
        "ascii escapes": json.dumps(data, separators=(",", ":")),
        "spaced": json.dumps(data),
        "body first": json.dumps(reordered, separators=(",", ":")),
        "trailing space": canonical + " ",
        "space before the last brace": canonical[:-1] + " }",
    }


@pytest.mark.parametrize(
    "model_name, env_pre",
    [
        ("nb201-00001", {"governor": "performance"}),
        ("with space", {"k": "v"}),
        ('quote " and \\ back\\slash', {"nested": {"body": {"x": [1, 2.5e-07, -0.0]}}}),
        ("\u00e9t\u00e9 \u2603 \U0001f600", {"\u00e9": "\n\t"}),
        ("x", {"}}": "}}", "big": -1234567890123456789, "e": 1e300}),
    ],
)
def test_stored_payload_is_what_json_extract_gives(store, model_name, env_pre) -> None:
    body = bench_result(1, model_name=model_name)
    body.env_pre = env_pre
    env = make(body, "rpi4-01")
    extract = sqlite3.connect(":memory:")
    for how, text in _envelope_texts(env).items():
        expected = extract.execute("SELECT json_extract(?, '$.body')", (text,)).fetchone()[0]
        cut = store_mod._body_text(text)
        assert cut is None or cut == expected, how
        if how == "canonical" and " " not in text:
            assert cut is not None  # the fast way is taken for what agents send
        decoded = decode(text.encode())
        store.execute("DELETE FROM results")
        store.add_result_rows([store_mod.result_row(decoded, 1.0, text.encode())])
        (payload,) = store.query("SELECT payload FROM results")[0]
        assert payload == expected, how
        assert json.loads(payload) == decoded.body.to_dict()
