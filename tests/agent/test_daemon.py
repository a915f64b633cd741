"""The agent daemon as a real process against a real mosquitto, with the coordinator's side
played by a plain paho client in the test (tests/agent must not import coordinator: it runs on
Python 3.8 too).

Run with ``-p tests.mqtt_broker`` (the ``mosquitto`` fixture).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol import (
    AdaptResult,
    AdaptSpec,
    BenchResult,
    BenchSpec,
    BlobChunk,
    Command,
    decode,
    encode,
    make,
    parse_topic,
)

REPO = Path(__file__).resolve().parents[2]
DEVICE = "bench-board-1"
HANG_ENV = "HALOFARM_TEST_CHILD_HANG"  # the benchmark child hangs after loading the runtime
WAIT_S = 90.0  # generous upper bound for anything to happen; never a timing assertion
PEER_CHUNK = 512  # the test peer serves small chunks so a download takes several


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


class Peer:
    """The coordinator's side: sends commands, serves model chunks, collects what arrives."""

    def __init__(self, broker, blobs: Optional[Dict[str, bytes]] = None) -> None:
        self.blobs = dict(blobs or {})
        self.withheld: Set[str] = set()  # blob requests for these go unanswered
        self.lock = threading.Lock()
        self.acks: List = []
        self.results: Dict[str, BenchResult] = {}  # by result_id: one logical result each
        self.adapt_results: Dict[str, AdaptResult] = {}
        self.result_deliveries = 0
        self.statuses: List[str] = []
        self.caps: List = []
        self.heartbeats: List = []
        self.progress: List = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="test-coordinator", protocol=mqtt.MQTTv5
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # results published while we are away are kept
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        wait_for(self.subscribed.is_set, "the test peer's subscription")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe(f"halo/v1/dev/{DEVICE}/#", qos=1)

    def _on_message(self, client, userdata, msg) -> None:
        ref = parse_topic(msg.topic)
        if ref.leaf == "cmd":
            return
        env = decode(msg.payload)
        with self.lock:
            if env.type == "ack":
                self.acks.append(env.body)
            elif env.type == "result":
                self.results[env.body.result_id] = env.body
                self.result_deliveries += 1
            elif env.type == "adapt_result":
                assert ref.leaf == "adapt_result"  # never on the latency results' topic
                self.adapt_results[env.body.result_id] = env.body
            elif env.type == "status":
                self.statuses.append(env.body.state)
            elif env.type == "caps":
                self.caps.append(env.body)
            elif env.type == "hb":
                self.heartbeats.append(env.body)
            elif env.type == "progress":
                self.progress.append(env.body)
        if env.type == "blob_req":
            self._serve(env.body)

    def _serve(self, req) -> None:
        if req.sha256 in self.withheld:
            return
        data = self.blobs.get(req.sha256)
        if data is None:
            chunk = BlobChunk(req.sha256, req.offset, 0, "", error="unknown blob")
        else:
            piece = data[req.offset : req.offset + min(req.length, PEER_CHUNK)]
            chunk = BlobChunk.of(req.sha256, req.offset, len(data), piece)
        topic = f"halo/v1/dev/{DEVICE}/blob/data"
        self.client.publish(topic, encode(make(chunk, "coordinator")), qos=1)

    def send(self, payload: bytes) -> None:
        self.client.publish(f"halo/v1/dev/{DEVICE}/cmd", payload, qos=1)

    def command(self, kind: str, cmd_id: Optional[str] = None, **fields) -> str:
        cmd_id = cmd_id or uuid.uuid4().hex
        self.send(encode(make(Command(cmd_id=cmd_id, kind=kind, **fields), "coordinator")))
        return cmd_id

    def states(self, cmd_id: str) -> List[str]:
        with self.lock:
            return [a.state for a in self.acks if a.cmd_id == cmd_id]

    def ack(self, cmd_id: str, state: str):
        with self.lock:
            return next(a for a in self.acks if a.cmd_id == cmd_id and a.state == state)

    def wait_ack(self, cmd_id: str, state: str):
        wait_for(lambda: state in self.states(cmd_id), f"ack {state!r} for {cmd_id}")
        return self.ack(cmd_id, state)


class Agent:
    """``python -m agent.daemon`` with its own config file and state directory."""

    def __init__(self, tmp_path: Path, broker) -> None:
        self.state_dir = tmp_path / "agent-state"
        self.config = tmp_path / "agent.toml"
        self.configure(broker)
        self.log = tmp_path / "agent.log"
        self.proc: Optional[subprocess.Popen] = None

    def configure(self, broker, inflight_window: int = 100, extra: str = "") -> None:
        self.config.write_text(
            f'device_id = "{DEVICE}"\n'
            f'state_dir = "{self.state_dir}"\n'
            "heartbeat_s = 1\n"
            "[broker]\n"
            f'url = "{broker.url}"\n'
            f"inflight_window = {inflight_window}\n" + extra,
            encoding="utf-8",
        )

    def start(self, peer: Optional[Peer] = None, **env_extra: str) -> None:
        """Start the process in its own process group; with ``peer``, wait until it is online
        (subscribed: the broker handles its SUBSCRIBE before the status PUBLISH after it)."""
        online = 0 if peer is None else peer.statuses.count("online")
        env = {k: v for k, v in os.environ.items() if k != HANG_ENV}
        env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **env_extra)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.daemon", "--config", str(self.config)],
                cwd=str(REPO),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if peer is not None:
            wait_for(lambda: peer.statuses.count("online") > online, "the agent online")

    def terminate(self) -> int:
        """SIGTERM to the agent alone, as systemd does with KillMode=mixed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def kill(self) -> None:
        """SIGKILL to the agent and its benchmark child at once: a crash (systemd then kills
        the rest of the cgroup) or a power cut."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def group_alive(self) -> bool:
        """Is any process of the agent's process group (the agent, its children) left?"""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def query(self, sql: str) -> list:
        """Read the agent's state database as another process would (read-only)."""
        db = self.state_dir / "agent.db"
        if not db.exists():
            return []
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


@pytest.fixture
def peer(mosquitto, tiny_model):
    p = Peer(mosquitto, {hashlib.sha256(tiny_model).hexdigest(): tiny_model})
    yield p
    p.close()


@pytest.fixture
def agent(tmp_path, mosquitto):
    a = Agent(tmp_path, mosquitto)
    yield a
    a.stop()
    print(a.log_text())  # shown by pytest when the test failed


def bench_spec(model: bytes, **overrides) -> BenchSpec:
    fields = dict(
        model_sha256=hashlib.sha256(model).hexdigest(),
        model_name="tiny",
        warmup_runs=1,
        warmup_seconds=0.0,
        min_runs=5,
        min_seconds=0.0,
        max_seconds=20.0,
    )
    fields.update(overrides)
    return BenchSpec(**fields)


def test_status_caps_heartbeat_ping_and_clean_stop(peer, agent):
    agent.start(peer)
    wait_for(lambda: peer.caps, "retained caps")
    assert peer.caps[-1].python.startswith("{}.{}".format(*sys.version_info[:2]))
    wait_for(lambda: peer.heartbeats, "a heartbeat")
    assert peer.heartbeats[-1].outbox_depth >= 0 and peer.heartbeats[-1].running_job is None

    cmd_id = peer.command("ping")
    assert peer.wait_ack(cmd_id, "pong").reason is None

    assert agent.terminate() == 0
    wait_for(lambda: peer.statuses[-1] == "offline", "retained status offline")
    assert "stopped" in agent.log_text()


def test_bad_commands_are_rejected_with_reasons_and_the_agent_lives_on(peer, agent):
    agent.start(peer)
    unknown = "0" * 32

    peer.send(b"\xff\xfe not json")
    wait_for(lambda: peer.states(unknown), "rejection of garbage")
    assert "UTF-8" in peer.ack(unknown, "rejected").reason

    peer.send(b"x" * (16 * 1024 + 1))
    wait_for(lambda: len(peer.states(unknown)) == 2, "rejection of an oversized payload")
    assert "16384" in peer.acks[-1].reason

    # Oversized but readable: the rejection still goes to the command's own cmd_id.
    big = make(Command(cmd_id=uuid.uuid4().hex, kind="ping"), "coordinator").to_dict()
    big["body"]["padding"] = "p" * 20000
    peer.send(__import__("json").dumps(big).encode())
    assert "at most 16384" in peer.wait_ack(big["body"]["cmd_id"], "rejected").reason

    bad = make(Command(cmd_id=uuid.uuid4().hex, kind="ping"), "coordinator").to_dict()
    bad["body"]["kind"] = "explode"
    peer.send(__import__("json").dumps(bad).encode())
    assert "body.kind" in peer.wait_ack(bad["body"]["cmd_id"], "rejected").reason

    adapt = make(Command(cmd_id=uuid.uuid4().hex, kind="ping"), "coordinator").to_dict()
    adapt["body"]["kind"] = "adapt"  # without its spec
    peer.send(__import__("json").dumps(adapt).encode())
    reason = peer.wait_ack(adapt["body"]["cmd_id"], "rejected").reason
    assert "body.adapt: is required" in reason

    expired = peer.command("bench", bench=bench_spec(b"m"), expires_at=time.time() - 5)
    assert peer.wait_ack(expired, "rejected").reason == "expired"

    missing = peer.command("cancel", target_cmd_id=uuid.uuid4().hex)
    assert "no command" in peer.wait_ack(missing, "rejected").reason

    nopower = peer.command("bench", bench=bench_spec(b"m", power="ina3221x"))
    assert "no power source 'ina3221x'" in peer.wait_ack(nopower, "rejected").reason

    ping = peer.command("ping")
    peer.wait_ack(ping, "pong")
    assert agent.proc.poll() is None


def test_bench_job_end_to_end(peer, agent, tiny_model):
    agent.start(peer)
    spec = bench_spec(tiny_model)
    cmd_id = peer.command("bench", bench=spec)
    accepted = peer.wait_ack(cmd_id, "accepted")
    done = peer.wait_ack(cmd_id, "done")
    assert peer.states(cmd_id) == ["accepted", "running", "done"]
    assert accepted.job_id == done.job_id

    wait_for(lambda: peer.results, "the result")
    (result,) = peer.results.values()
    assert (result.status, result.cmd_id, result.job_id) == ("ok", cmd_id, done.job_id)
    assert result.spec == spec
    assert result.model_bytes == len(tiny_model)
    assert result.stats is not None and result.stats.count >= 5 and result.stats.p50 > 0
    assert len(result.raw()) == result.stats.count
    assert any(p.phase == "fetch" and p.done == len(tiny_model) for p in peer.progress)

    # The coordinator retries the same command: same answer, no second run.
    peer.command("bench", cmd_id=cmd_id, bench=spec)
    wait_for(lambda: peer.states(cmd_id).count("done") == 2, "the repeated done ack")
    assert [a.job_id for a in peer.acks if a.cmd_id == cmd_id][-1] == done.job_id

    # A second job with the same model uses the cache; an unknown model fails with a reason.
    again = peer.command("bench", bench=spec)
    peer.wait_ack(again, "done")
    unknown = peer.command("bench", bench=bench_spec(b"no such model"))
    assert "unknown blob" in peer.wait_ack(unknown, "failed").reason
    assert len(peer.results) == 2
    # The broker may hand the last ack to us before its PUBACK reaches the agent: eventually.
    wait_for(
        lambda: agent.query("SELECT COUNT(*) FROM outbox WHERE acked_at IS NULL") == [(0,)],
        "every outbox row acknowledged by the broker",
    )
    # Benchmark children come from a fork server; run as `python -m agent.daemon`, nothing of
    # multiprocessing's re-run of the main module in each child may reach the log.
    assert "Warning" not in agent.log.read_text(errors="replace")


def test_energy_on_a_simulated_board_end_to_end(peer, agent, mosquitto, tiny_model, tmp_path):
    from power.simboard import SimBoard

    sim = SimBoard(str(tmp_path / "xnx"), "xavier-nx-jp5", shuffle_seed=2).create()
    sim.close()  # values stay in the files; this test only reads them
    agent.configure(mosquitto, extra=f'[power]\nsysfs_root = "{sim.root}"\nidle_seconds = 0.3\n')
    agent.start(peer)
    wait_for(lambda: peer.caps, "retained caps")
    assert peer.caps[-1].power_sources == ["ina3221"]
    cmd_id = peer.command("bench", bench=bench_spec(tiny_model, power="auto", energy_seconds=0.5))
    peer.wait_ack(cmd_id, "done")
    wait_for(lambda: peer.results, "the result")
    (result,) = peer.results.values()
    energy = result.energy
    assert energy["status"] == "ok" and energy["method"] == "simulated"
    assert energy["total"]["rails"] == ["VDD_IN"]
    assert energy["p_mean_mw"] == pytest.approx(sim.actual("VDD_IN"))
    assert energy["idle"]["n_samples"] >= 10


def test_cancel_queued_and_running_jobs(peer, agent, tiny_model):
    agent.start(peer)
    stuck = bench_spec(b"a model the peer withholds")
    peer.withheld.add(stuck.model_sha256)
    peer.blobs[stuck.model_sha256] = b"a model the peer withholds"
    first = peer.command("bench", bench=stuck)
    peer.wait_ack(first, "running")  # fetching, never answered
    second = peer.command("bench", bench=bench_spec(tiny_model))
    peer.wait_ack(second, "accepted")

    cancel_queued = peer.command("cancel", target_cmd_id=second)
    peer.wait_ack(cancel_queued, "done")
    assert peer.wait_ack(second, "cancelled").reason.startswith("cancelled by command")

    # Queued behind the stuck job until after it expires: rejected when its turn comes.
    expires_at = time.time() + 3.0
    late = peer.command("bench", bench=bench_spec(tiny_model), expires_at=expires_at)
    peer.wait_ack(late, "accepted")
    while time.time() <= expires_at:
        time.sleep(0.1)

    cancel_running = peer.command("cancel", target_cmd_id=first)
    peer.wait_ack(cancel_running, "accepted")
    peer.wait_ack(first, "cancelled")
    assert peer.wait_ack(late, "rejected").reason == "expired"

    again = peer.command("cancel", target_cmd_id=first)
    assert "cancelled already" in peer.wait_ack(again, "rejected").reason
    peer.wait_ack(peer.command("ping"), "pong")
    assert peer.results == {}


def _blob_cached(agent: Agent, model: bytes) -> bool:
    return (agent.state_dir / "blobs" / hashlib.sha256(model).hexdigest()).is_file()


def test_sigkill_after_the_result_was_committed_resends_it(peer, agent, mosquitto, tiny_model):
    agent.start(peer)
    # Warmup is time-bound (3 s) whatever the model's speed: the broker is down before the
    # result can be committed.
    cmd_id = peer.command("bench", bench=bench_spec(tiny_model, warmup_seconds=3.0))
    peer.wait_ack(cmd_id, "running")
    wait_for(lambda: _blob_cached(agent, tiny_model), "the model in the agent's cache")
    mosquitto.stop()

    wait_for(
        lambda: agent.query("SELECT state FROM jobs") == [("done",)], "the job done in the agent"
    )
    pending = agent.query(
        "SELECT COUNT(*) FROM outbox WHERE topic LIKE '%/result' AND acked_at IS NULL"
    )
    assert pending == [(1,)], "the result must be committed and not yet delivered"
    agent.kill()

    mosquitto.start()
    wait_for(peer.client.is_connected, "the peer reconnected")
    agent.start(peer)
    wait_for(lambda: peer.results, "the result after the restart")
    wait_for(lambda: "done" in peer.states(cmd_id), "the done ack after the restart")
    wait_for(
        lambda: agent.query("SELECT COUNT(*) FROM outbox WHERE acked_at IS NULL") == [(0,)],
        "the outbox drained",
    )
    (result,) = peer.results.values()
    assert result.cmd_id == cmd_id and result.status == "ok"
    assert agent.query("SELECT state, attempts FROM jobs") == [("done", 1)]  # never re-run


def test_broker_restart_mid_job_delivers_the_result_after_reconnecting(
    peer, agent, mosquitto, tiny_model
):
    agent.start(peer)
    cmd_id = peer.command("bench", bench=bench_spec(tiny_model, warmup_seconds=3.0))
    peer.wait_ack(cmd_id, "running")
    wait_for(lambda: _blob_cached(agent, tiny_model), "the model in the agent's cache")
    mosquitto.stop()
    wait_for(lambda: agent.query("SELECT state FROM jobs") == [("done",)], "the job done")

    mosquitto.start()
    wait_for(lambda: peer.results, "the result after the broker came back")
    peer.wait_ack(cmd_id, "done")
    peer.wait_ack(peer.command("ping"), "pong")
    assert agent.proc.poll() is None


def test_many_commands_through_a_small_outbox_window(peer, agent, mosquitto):
    agent.configure(mosquitto, inflight_window=3)
    agent.start(peer)
    ids = [peer.command("ping") for _ in range(200)]
    wait_for(lambda: all(peer.states(i) for i in ids), "200 pongs")
    assert all(peer.states(i) == ["pong"] for i in ids)
    wait_for(
        lambda: agent.query("SELECT COUNT(*) FROM outbox WHERE acked_at IS NULL") == [(0,)],
        "every ack confirmed by the broker",
    )


def test_systemd_notify_ready_watchdog_stopping(peer, agent):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"halofarm-test-{uuid.uuid4().hex}"
    sock.bind("\0" + name)
    sock.settimeout(WAIT_S)
    try:
        agent.start(peer, NOTIFY_SOCKET="@" + name, WATCHDOG_USEC="1000000")
        seen: List[str] = []

        def receive_until(line: str) -> None:
            while line not in seen:
                seen.extend(sock.recv(4096).decode().split("\n"))

        receive_until("READY=1")
        assert any(x.startswith("STATUS=connected to mqtt://") for x in seen)
        receive_until("WATCHDOG=1")
        assert agent.terminate() == 0
        receive_until("STOPPING=1")
    finally:
        sock.close()


def _hung_job(peer: Peer, agent: Agent, model: bytes) -> str:
    """A bench job whose child hangs: it stays running until the agent goes away."""
    agent.start(peer, **{HANG_ENV: "1"})
    cmd_id = peer.command("bench", bench=bench_spec(model, timeout_s=600.0))
    peer.wait_ack(cmd_id, "running")
    wait_for(lambda: _blob_cached(agent, model), "the model in the agent's cache")
    assert agent.query("SELECT state, attempts FROM jobs") == [("running", 1)]
    job_id = peer.ack(cmd_id, "running").job_id
    wait_for(
        lambda: any(hb.running_job == job_id for hb in peer.heartbeats), "a heartbeat naming it"
    )
    return cmd_id


def test_sigkill_while_running_reruns_the_job_once(peer, agent, tiny_model):
    cmd_id = _hung_job(peer, agent, tiny_model)
    agent.kill()

    agent.start(peer)
    peer.wait_ack(cmd_id, "done")
    assert peer.states(cmd_id) == ["accepted", "running", "running", "done"]
    wait_for(lambda: peer.results, "the result of the re-run")
    (result,) = peer.results.values()
    assert result.status == "ok" and result.cmd_id == cmd_id
    assert agent.query("SELECT state, attempts FROM jobs") == [("done", 2)]
    assert "runs again" in agent.log_text()


def test_sigterm_while_running_leaves_the_job_for_a_rerun(peer, agent, tiny_model):
    cmd_id = _hung_job(peer, agent, tiny_model)
    assert agent.terminate() == 0
    wait_for(lambda: not agent.group_alive(), "the benchmark child gone with the agent")
    wait_for(lambda: peer.statuses[-1] == "offline", "status offline")
    assert agent.query("SELECT state FROM jobs") == [("running",)]  # not failed by the stop

    agent.start(peer)
    peer.wait_ack(cmd_id, "done")
    wait_for(lambda: peer.results, "the result of the re-run")
    assert [r.status for r in peer.results.values()] == ["ok"]


def test_mcu_job_end_to_end_with_a_meter(peer, agent, mosquitto):
    """A DUT and a meter on one fake board (in-process pyserial URL schemes): the mcu job runs
    by the benchmark's rules (shortened windows) and reports like a TFLite benchmark."""
    from protocol import McuSpec

    board = f"b{uuid.uuid4().hex[:8]}"
    agent.configure(mosquitto, extra=(
        "[[power.meters]]\n"
        f'name = "ppk"\nkind = "ppk2"\nurl = "fake-ppk2://?board={board}"\n'
        "[[mcu.duts]]\n"
        f'name = "kws"\nurl = "fake-dut://kws01?board={board}&infer_us=2000"\nmeter = "ppk"\n'
    ))  # fmt: skip
    agent.start(peer)
    wait_for(lambda: peer.caps, "caps")
    assert peer.caps[-1].mcu_duts == ["kws"] and "ppk" in peer.caps[-1].power_sources

    missing = peer.command("mcu", mcu=McuSpec(dut="nosuch"))
    assert "no DUT 'nosuch' on this board (configured: kws)" in (
        peer.wait_ack(missing, "rejected").reason
    )
    cmd_id = peer.command("mcu", mcu=McuSpec(dut="kws", windows=2, min_window_s=0.3))
    peer.wait_ack(cmd_id, "done")
    wait_for(lambda: peer.results, "the result")
    (result,) = peer.results.values()
    assert result.status == "ok" and result.runtime == "mlperf-tiny-dut"
    assert result.stats.count == 2 and 1.9e6 < result.stats.p50 < 2.2e6  # 2000 us per inference
    assert result.spec.power == "ppk" and result.energy["status"] == "ok"
    assert result.energy["e_per_inference_mj"] > 0
    assert [w["status"] for w in result.env_pre["mcu"]["windows"]] == ["ok", "ok"]


def test_cancel_stops_a_running_adaptation_within_a_step(peer, agent):
    """A million-step adaptation (minutes of work) cancelled while it runs: the job ends
    cancelled at once, no result is sent, and the agent takes the next command."""
    agent.start(peer)
    spec = AdaptSpec(task="drift", optimizer="adam", steps=1000000, eval_every=0,
                     pretrain_steps=20, batch=16)  # fmt: skip
    cmd_id = peer.command("adapt", adapt=spec)
    peer.wait_ack(cmd_id, "running")
    time.sleep(1.0)  # into the adaptation loop (pretraining 20 steps takes milliseconds)
    asked = time.monotonic()
    cancel = peer.command("cancel", target_cmd_id=cmd_id)
    peer.wait_ack(cancel, "accepted")
    peer.wait_ack(cmd_id, "cancelled")
    assert time.monotonic() - asked < 10.0
    peer.wait_ack(peer.command("ping"), "pong")
    assert peer.adapt_results == {}
    assert agent.query("SELECT state FROM jobs") == [("cancelled",)]


def _csv(rows: int, shift: float, seed: int) -> bytes:
    """A two-class table: class 1 sits 2 units off class 0 on every feature, plus ``shift``."""
    import random

    rng = random.Random(seed)
    lines = ["f0,f1,f2,label"]
    for i in range(rows):
        label = i % 2
        feats = [rng.gauss(2.0 * label + shift, 1.0) for _ in range(3)]
        lines.append(",".join(f"{v:.4f}" for v in feats) + f",{label}")
    return ("\n".join(lines) + "\n").encode()


def test_adapt_job_end_to_end(peer, agent):
    """A built-in task and a CSV task (three blobs fetched like models), each 20 steps; bad
    settings are rejected with reasons; a missing blob fails the job saying which."""
    agent.start(peer)
    bad = peer.command("adapt", adapt=AdaptSpec(task="drift", sparsity="0.5,7"))
    assert "adapt.sparsity" in peer.wait_ack(bad, "rejected").reason

    spec = AdaptSpec(task="drift", steps=20, eval_every=10, pretrain_steps=20, batch=16)
    cmd_id = peer.command("adapt", adapt=spec)
    done = peer.wait_ack(cmd_id, "done")
    assert peer.states(cmd_id) == ["accepted", "running", "done"]

    blobs = {
        "source": _csv(80, 0.0, 1),
        "target": _csv(60, 1.0, 2),
        "target_test": _csv(40, 1.0, 3),
    }
    shas = {role: hashlib.sha256(data).hexdigest() for role, data in blobs.items()}
    peer.blobs.update({shas[r]: blobs[r] for r in blobs})
    csv_spec = AdaptSpec(
        source_sha256=shas["source"],
        target_sha256=shas["target"],
        target_test_sha256=shas["target_test"],
        model="mlp:8",
        optimizer="adam",
        lr=0.01,
        steps=20,
        eval_every=5,
        pretrain_steps=20,
        batch=16,
    )
    csv_cmd = peer.command("adapt", adapt=csv_spec)
    peer.wait_ack(csv_cmd, "done")
    missing = peer.command("adapt", adapt=AdaptSpec(
        source_sha256="0" * 64, target_sha256=shas["target"], target_test_sha256=shas["target"]
    ))  # fmt: skip
    assert "source blob" in peer.wait_ack(missing, "failed").reason

    wait_for(lambda: len(peer.adapt_results) == 2, "the adapt results")
    assert not peer.results  # nothing on the latency results' topic
    by_cmd = {r.cmd_id: r for r in peer.adapt_results.values()}
    first = by_cmd[cmd_id]
    assert (first.status, first.job_id, first.spec) == ("ok", done.job_id, spec)
    doc = first.document
    assert [p["step"] for p in doc["curve"]] == [0, 10, 20]
    assert doc["optimizer"] == "halo" and doc["settings"]["task"] == "drift"
    assert doc["energy"]["method"] == "model" and doc["energy"]["total_j"] > 0
    csv_doc = by_cmd[csv_cmd].document
    assert [p["step"] for p in csv_doc["curve"]] == [0, 5, 10, 15, 20]
    assert csv_doc["settings"]["source"] == "blob:" + shas["source"]  # no cache paths
    assert csv_doc["settings"]["lr"] == 0.01 and csv_doc["task"]["n_test"] == 40
    assert 0.0 <= csv_doc["final_test_acc"] <= 1.0
    wait_for(
        lambda: agent.query("SELECT COUNT(*) FROM outbox WHERE acked_at IS NULL") == [(0,)],
        "the outbox drained",
    )


def test_a_job_that_takes_the_board_down_three_times_fails_with_a_reason(peer, agent, tiny_model):
    """A board that reboots (SIGKILL to the agent and its child) whenever it runs a job: the
    job re-runs after each restart, and after the third it is failed with the reason, not run
    a fourth time; no result is ever published for it."""
    cmd_id = _hung_job(peer, agent, tiny_model)
    for attempts in (2, 3):
        agent.kill()
        agent.start(peer, **{HANG_ENV: "1"})
        wait_for(
            lambda n=attempts: agent.query("SELECT state, attempts FROM jobs") == [("running", n)],
            f"attempt {attempts} running",
        )
    agent.kill()
    agent.start(peer, **{HANG_ENV: "1"})
    failed = peer.wait_ack(cmd_id, "failed")
    assert failed.reason == "the agent stopped 3 times while running this job"
    assert agent.query("SELECT state, attempts FROM jobs") == [("failed", 3)]
    assert peer.results == {}


def test_a_repeated_command_for_a_finished_job_sends_its_result_again(peer, agent, tiny_model):
    """The coordinator asks again when a result never reached it (a broker killed before it
    saved it): the agent does not run the job again but publishes the same result again."""
    agent.start(peer)
    spec = bench_spec(tiny_model)
    cmd_id = peer.command("bench", bench=spec)
    peer.wait_ack(cmd_id, "done")
    wait_for(lambda: peer.result_deliveries == 1, "the result")
    (first,) = peer.results.values()
    peer.command("bench", cmd_id=cmd_id, bench=spec)
    wait_for(lambda: peer.result_deliveries == 2, "the result again")
    assert list(peer.results) == [first.result_id]
    assert peer.states(cmd_id).count("done") == 2
    assert agent.query("SELECT state, attempts FROM jobs") == [("done", 1)]
    assert "its result is sent again" in agent.log_text()
