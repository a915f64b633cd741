"""Scale-out: a simulated fleet against 1, 2 and 4 `halo-coord serve --ingest-only` workers.

What it measures: a fleet of A simulated agents (default 200; one paho MQTT 5 client each,
spread over P fleet processes) publishes realistic result envelopes (BenchResult as the agent
encodes it, ~2 KB, built by ingest_throughput.result_payload; every publish gets fresh
result/msg ids and its own ``created_at``) and heartbeats every HEARTBEAT_S, all at QoS 1 with
at most WINDOW un-acked publishes per agent, to a managed mosquitto on a free loopback port
(the production config from coordinator.broker; ``--inflight`` sets its max_inflight_messages).
On the other side, W worker processes ``halo-coord serve --ingest-only --worker wN`` (the real
CLI) share the results through the shared subscription and write one store: a SQLite file
(WAL, synchronous=FULL) or, when PostgreSQL's binaries and psycopg are here, a throwaway
PostgreSQL server on loopback (fsync on, track_commit_timestamp on).

Two phases per (store, W), on a fresh broker and store:

* ``saturate``: every agent publishes as fast as its window allows for ``--seconds``. The
  fleet offers more than ingest can take; ``stored/s`` = results committed within the phase
  (after a warm-up of WARMUP_S) per second -- the capacity. Latency here is queueing.
* ``paced``: the fleet publishes ``--rate`` results/s in total (default 1 result/s per agent,
  the "100 devices x 1 result/s" of mqtt.md, doubled) for ``--paced-seconds``; latency is what
  a result sees in practice.

Latency = commit time - the ``created_at`` the agent put in the envelope. Commit time is, for
SQLite, when a reader polling every POLL_S saw the row (rowids are committed in order there, one
writer at a time; up to POLL_S late); for PostgreSQL, ``pg_xact_commit_timestamp(xmin)``
(exact). CPU is user + system seconds of each process over the phase's publishing time, as a
percentage of one core (psutil): the broker, each worker, the fleet processes, the PostgreSQL
server with its backends, and this process (the poller); ``others`` is the rest of the
machine's busy time (work that is not the benchmark's on shared cores). The ``limit`` column
names what saturated (see limit_of). Reference in the same run: ``vs 1w`` = stored/s /
stored/s with one worker on the same store; ``offered/s`` = what the broker took from the fleet.

Every result the broker acked must be stored exactly once (checked after each phase drains).

    python benchmarks/scale.py [--quick] [--agents A] [--procs P] [--workers 1,2,4]
                               [--store sqlite,postgresql] [--seconds S] [--paced-seconds S]
                               [--rate R] [--inflight N] [--workdir DIR] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt
import paho.mqtt.client as mqtt
import psutil
from ingest_throughput import Broker, filesystem_of, result_payload
from machine import machine_facts
from report import print_rows, write_json

from coordinator.broker import BrokerConfig, find_mosquitto, mosquitto_version
from coordinator.store import Store
from protocol import Heartbeat, device_topic, encode, make

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.postgres_server: the throwaway server the tests use too

NAME = "scale"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / f"{NAME}.json"
WINDOW = 20  # un-acked QoS 1 results per agent (an outbox's in-flight window)
HEARTBEAT_S = 15.0  # agent default (agent/config.py heartbeat_s)
TEMPLATES = 4  # distinct result bodies per agent; ids and times are fresh on every publish
WARMUP_S = 1.0
POLL_S = 0.005
DRAIN_TIMEOUT_S = 180.0
START_TIMEOUT_S = 60.0
SEED = 0


# -- the fleet (one process holds many agents) ---------------------------------------------


class Template:
    """An encoded result envelope with holes for msg_id, created_at and result_id."""

    KEYS = ((b'"msg_id":"', b'"'), (b'"created_at":', b","), (b'"result_id":"', b'"'))

    def __init__(self, topic: str, payload: bytes) -> None:
        self.topic = topic
        cuts = []
        for slot, (key, end) in enumerate(self.KEYS):
            start = payload.index(key) + len(key)
            cuts.append((start, payload.index(end, start), slot))
        cuts.sort()
        self.parts, self.order, last = [], [], 0
        for start, stop, slot in cuts:
            self.parts.append(payload[last:start])
            self.order.append(slot)
            last = stop
        self.parts.append(payload[last:])

    def fill(self, msg_id: bytes, created_at: float, result_id: bytes) -> bytes:
        values = (msg_id, b"%.6f" % created_at, result_id)
        out = [self.parts[0]]
        for slot, part in zip(self.order, self.parts[1:], strict=True):
            out += (values[slot], part)
        return b"".join(out)


def heartbeat(device: str) -> tuple[str, bytes]:
    body = Heartbeat(
        uptime_s=1234.5,
        load=[0.5, 0.4, 0.3],
        temps_c={"cpu-thermal": 51.2, "gpu-thermal": 49.0},
        cpu_freq_khz={"cpu0": 1800000, "cpu1": 1800000, "cpu2": 1800000, "cpu3": 1800000},
        throttled=False,
        outbox_depth=0,
        queue_depth=0,
        running_job=None,
        agent_version="0.1.0",
    )
    return device_topic(device, "hb"), encode(make(body, device))


class SimAgent:
    """One simulated agent: its own MQTT 5 client and session, results and heartbeats."""

    def __init__(self, host: str, port: int, device: str, rng: random.Random) -> None:
        self.device = device
        self.templates = [Template(*result_payload(i, rng, device)) for i in range(TEMPLATES)]
        self.hb = heartbeat(device)
        self.next_hb = time.monotonic() + rng.uniform(0, HEARTBEAT_S)
        # Publishes (results and heartbeats, all QoS 1) and the broker's PUBACKs of them.
        self.sent = self.acked = self.refused = self.results = self.heartbeats = 0
        self.connected = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-{device}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(WINDOW)
        self.client.on_connect = lambda *a: self.connected.set()
        self.client.on_publish = self._on_publish
        self.client.connect_async(host, port, keepalive=60)
        self.client.loop_start()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.acked += 1
        self.refused += reason_code.value == 16  # "no matching subscribers": lost here

    def can_send(self) -> bool:
        return self.sent - self.acked < WINDOW

    def send_result(self) -> None:
        template = self.templates[self.sent % TEMPLATES]
        payload = template.fill(uuid.uuid4().hex.encode(), time.time(), uuid.uuid4().hex.encode())
        self._publish(template.topic, payload)
        self.results += 1

    def maybe_heartbeat(self, now: float) -> None:
        if now >= self.next_hb:
            self._publish(*self.hb)
            self.heartbeats += 1
            self.next_hb = now + HEARTBEAT_S

    def _publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish failed: {mqtt.error_string(info.rc)}")
        self.sent += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _saturate(agents: list[SimAgent], seconds: float) -> None:
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        busy = False
        for agent in agents:
            if agent.can_send():
                agent.send_result()
                busy = True
            agent.maybe_heartbeat(now)
        if not busy:
            time.sleep(0.001)


def _paced(agents: list[SimAgent], seconds: float, rate: float, rng: random.Random) -> int:
    """rate results/s from agents in turn; returns how many an agent's full window skipped."""
    skipped, i = 0, rng.randrange(len(agents))
    start = time.monotonic()
    end, due = start + seconds, start
    while (now := time.monotonic()) < end:
        if now < due:
            time.sleep(min(due - now, 0.005))
            continue
        agent = agents[i % len(agents)]
        i += 1
        if agent.can_send():
            agent.send_result()
        else:
            skipped += 1
        due += 1.0 / rate
        for a in agents:
            a.maybe_heartbeat(now)
    return skipped


def fleet(host: str, port: int, devices: list[str], seed: int, commands, out) -> None:
    """A fleet process: connect its agents, then run the phases it is sent."""
    rng = random.Random(seed)
    agents = [SimAgent(host, port, d, rng) for d in devices]
    for agent in agents:
        if not agent.connected.wait(START_TIMEOUT_S):
            raise RuntimeError(f"{agent.device} could not connect to {host}:{port}")
    out.put(("ready", os.getpid()))
    while True:
        command = commands.get()
        if command[0] == "stop":
            break
        kind, seconds, rate = command
        before = [(a.results, a.refused, a.heartbeats) for a in agents]
        skipped = 0
        if kind == "saturate":
            _saturate(agents, seconds)
        else:
            skipped = _paced(agents, seconds, rate, rng)
        finished = time.time()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while any(a.acked < a.sent for a in agents) and time.monotonic() < deadline:
            time.sleep(0.01)
        after = [(a.results, a.refused, a.heartbeats) for a in agents]
        sums = [sum(x[k] - b[k] for x, b in zip(after, before, strict=True)) for k in range(3)]
        out.put(("done", {"results": sums[0], "refused": sums[1], "heartbeats": sums[2],
                          "all_acked": all(a.acked >= a.sent for a in agents),
                          "skipped": skipped, "published_until": finished}))  # fmt: skip
    for agent in agents:
        agent.close()


class Fleet:
    """procs fleet processes sharing the agents."""

    def __init__(self, host: str, port: int, agents: int, procs: int, seed: int) -> None:
        ctx = mp.get_context("spawn")
        devices = [f"sim-{i:04d}" for i in range(agents)]
        self._commands = [ctx.Queue() for _ in range(procs)]
        self._out = ctx.Queue()
        self._procs = [
            ctx.Process(
                target=fleet,
                args=(host, port, devices[p::procs], seed + p, self._commands[p], self._out),
                daemon=True,
            )
            for p in range(procs)
        ]
        for proc in self._procs:
            proc.start()
        self.pids = [self._get("ready") for _ in self._procs]

    def _get(self, kind: str):
        got, value = self._out.get(timeout=DRAIN_TIMEOUT_S + START_TIMEOUT_S)
        if got != kind:
            raise RuntimeError(f"fleet said {got!r}, expected {kind!r}")
        return value

    def start(self, kind: str, seconds: float, rate: float) -> None:
        for queue in self._commands:
            queue.put((kind, seconds, rate / len(self._commands)))

    def results(self) -> list[dict]:
        """Each process's counts, once it published and the broker acked everything."""
        return [self._get("done") for _ in self._procs]

    def stop(self) -> None:
        for queue in self._commands:
            queue.put(("stop",))
        for proc in self._procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


# -- broker, ingest workers and stores -----------------------------------------------------


class Worker:
    """`halo-coord serve --ingest-only --worker NAME` as a child process."""

    def __init__(self, name: str, broker_url: str, store: str, logdir: Path) -> None:
        self.name = name
        self.log = logdir / f"{name}.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "coordinator",
                    "serve",
                    "--ingest-only",
                    "--worker",
                    name,
                    "--broker",
                    broker_url,
                    "--store",
                    store,
                ],  # fmt: skip
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )

    def wait_subscribed(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "subscribed as halo-ingest-" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=DRAIN_TIMEOUT_S)
        if self.proc.returncode != 0:
            raise RuntimeError(f"worker {self.name} exited {self.proc.returncode}")
        return json.loads(out.splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Cpu:
    """CPU seconds (user + system) per named group of processes between start() and stop().
    A group is a pid and, with children=True, its descendants as they are at each reading;
    a process gone by stop() is left out (PostgreSQL's short-lived autovacuum workers)."""

    def __init__(self, groups: dict[str, tuple[int, bool]]) -> None:
        self._groups = groups
        self._start: dict[str, dict[int, float]] = {}
        self.seconds: dict[str, float] = {}

    @staticmethod
    def _read(pid: int, children: bool) -> dict[int, float]:
        out = {}
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)] if children else [root]
        except psutil.NoSuchProcess:
            return out
        for proc in procs:
            try:
                times = proc.cpu_times()
                out[proc.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return out

    @staticmethod
    def _machine() -> tuple[float, float]:
        """(busy, iowait) CPU seconds of the whole machine, every process and core."""
        t = psutil.cpu_times()
        iowait = getattr(t, "iowait", 0.0)
        return sum(t) - t.idle - iowait, iowait

    def start(self) -> None:
        self._start = {name: self._read(*g) for name, g in self._groups.items()}
        self._machine_start = self._machine()

    def stop(self) -> None:
        for name, group in self._groups.items():
            now, then = self._read(*group), self._start[name]
            self.seconds[name] = sum(v - then.get(pid, 0.0) for pid, v in now.items())
        busy, iowait = self._machine()
        self.machine_busy = busy - self._machine_start[0]
        self.machine_iowait = iowait - self._machine_start[1]


class CommitClock:
    """(sent_at, committed_at) of every result committed since mark(), for one store."""

    def __init__(self, target: str, postgres: bool) -> None:
        self.postgres = postgres
        self.target = target
        if postgres:
            import psycopg

            self._pg = psycopg.connect(target, autocommit=True)
        else:
            self._db = sqlite3.connect(target, timeout=30)
        self._last = self._max_rowid()
        self.rows: list[tuple[float, float]] = []

    def _max_rowid(self) -> int:
        sql = "SELECT coalesce(max(rowid), 0) FROM results"
        db = self._pg if self.postgres else self._db
        return db.execute(sql).fetchone()[0]

    def mark(self) -> None:
        self._last = self._max_rowid()
        self._start = self._last
        self.rows = []

    def count(self) -> int:
        """Results committed since mark(); for SQLite, also records when each was seen."""
        if self.postgres:
            sql = "SELECT count(*) FROM results WHERE rowid > %s"
            return self._pg.execute(sql, (self._start,)).fetchone()[0]
        new = self._db.execute(
            "SELECT rowid, sent_at FROM results WHERE rowid > ? ORDER BY rowid", (self._last,)
        ).fetchall()
        if new:
            now = time.time()
            self._last = new[-1][0]
            self.rows += [(sent, now) for _, sent in new]
        return len(self.rows)

    def finish(self) -> list[tuple[float, float]]:
        if self.postgres:
            self.rows = self._pg.execute(
                "SELECT sent_at, extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 "
                "FROM results WHERE rowid > %s",
                (self._start,),
            ).fetchall()
        return self.rows

    def close(self) -> None:
        (self._pg if self.postgres else self._db).close()


# -- one (store, workers) configuration ----------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def limit_of(
    cpu: dict[str, float], cores: int, stored: float, offered: float, store: str, inflight: int
) -> str:
    """What saturated, from CPU % of one core per process group. With no core busy, what is
    left is the commit cycle: a worker holds at most `inflight` un-acked messages (the
    broker's max_inflight_messages), so it waits for each batch's commit (an fsync; for SQLite
    also its turn at the one write lock) before the broker sends more."""
    groups = ("total", "workers", "fleet", "postgres", "machine", "others")
    singles = {k: v for k, v in cpu.items() if k not in groups}
    name, top = max(singles.items(), key=lambda kv: kv[1])
    if stored >= 0.95 * offered:
        return "offered load (ingest keeps up)"
    if cpu["machine"] >= 85.0 * cores:
        shares = {k: cpu[k] for k in ("broker", "workers", "fleet", "postgres", "others")}
        order = sorted(shares.items(), key=lambda kv: -kv[1])
        share = ", ".join(f"{k} {v:.0f}%" for k, v in order[:3] if v > 0)
        return f"CPU: all {cores} cores busy ({share})"
    if top >= 85.0:
        return f"{name} at {top:.0f}% of one core"
    lock = " + one writer at a time" if store == "sqlite" else ""
    return f"commit cycle: <= {inflight} in flight/worker, fsync per batch{lock}"


def run_config(
    work: Path, store_kind: str, workers: int, args: argparse.Namespace, pg
) -> list[dict]:
    work.mkdir(parents=True)
    broker = Broker(work, args.inflight)
    postgres = store_kind == "postgresql"
    target = pg.new_database("scale") if postgres else str(work / "store.sqlite")
    Store(target).close()  # created and migrated before the workers race for it
    procs: list[Worker] = []
    fleet_: Fleet | None = None
    rows = []
    try:
        url = f"mqtt://{broker.host}:{broker.port}"
        procs = [Worker(f"w{k}", url, target, work) for k in range(workers)]
        for w in procs:
            w.wait_subscribed()
        fleet_ = Fleet(broker.host, broker.port, args.agents, args.procs, SEED)
        groups = {"broker": (broker.pid, False), "poller": (os.getpid(), False)}
        groups.update({f"worker{k}": (w.proc.pid, False) for k, w in enumerate(procs)})
        groups.update({f"fleet{k}": (pid, False) for k, pid in enumerate(fleet_.pids)})
        if postgres:  # the server and its backends
            groups["postgres"] = (pg.proc.pid, True)
        clock = CommitClock(target, postgres)
        for phase, seconds in (("saturate", args.seconds), ("paced", args.paced_seconds)):
            cpu = Cpu(groups)
            clock.mark()
            cpu.start()
            t0 = time.time()
            fleet_.start(phase, seconds, args.rate)
            # Poll while the fleet publishes (commit times), then until everything is stored.
            while time.time() < t0 + seconds:
                clock.count()
                time.sleep(POLL_S)
            cpu.stop()
            t1 = time.time()
            published = fleet_.results()
            if not all(p["all_acked"] for p in published):
                raise RuntimeError(
                    f"the broker did not ack every publish within {DRAIN_TIMEOUT_S} s"
                )
            acked = sum(p["results"] - p["refused"] for p in published)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while clock.count() < acked:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{store_kind} x{workers} {phase}: stalled at "
                                       f"{clock.count()} of {acked} results")  # fmt: skip
                time.sleep(POLL_S)
            drained = time.time()
            committed = clock.finish()
            if len(committed) != acked:
                raise RuntimeError(f"{len(committed)} results stored for {acked} acked")
            rows.append(summarise(phase, store_kind, workers, t0, t1, drained, committed,
                                  published, cpu, args))  # fmt: skip
        clock.close()
    finally:
        if fleet_ is not None:
            fleet_.stop()
        stats = []
        for w in procs:
            try:
                stats.append(w.stop())
            except Exception as exc:  # noqa: BLE001 - reported in the results
                stats.append({"error": str(exc)})
            w.kill()
        broker.stop()
    for row in rows:
        row["worker_stats"] = stats
    return rows


def summarise(phase, store_kind, workers, t0, t1, drained, committed, published, cpu, args):
    window = (t0 + args.warmup, t1)
    span = window[1] - window[0]
    in_window = [c for s, c in committed if window[0] <= c <= window[1]]
    latency = [(c - s) * 1e3 for s, c in committed if window[0] <= s <= window[1]]
    wall = t1 - t0
    pct = {k: v / wall * 100.0 for k, v in cpu.seconds.items()}
    groups = {
        "broker": pct["broker"],
        "poller": pct["poller"],
        "workers": sum(v for k, v in pct.items() if k.startswith("worker")),
        "worker_max": max(v for k, v in pct.items() if k.startswith("worker")),
        "fleet": sum(v for k, v in pct.items() if k.startswith("fleet")),
        "postgres": sum(v for k, v in pct.items() if k.startswith("postgres")),
    }
    groups["total"] = sum(v for k, v in pct.items())
    # Everything that ran on the machine meanwhile, ours or not (other work on shared cores).
    groups["machine"] = cpu.machine_busy / wall * 100.0
    groups["others"] = max(0.0, groups["machine"] - groups["total"])
    groups["iowait"] = cpu.machine_iowait / wall * 100.0
    sent = sum(p["results"] for p in published)
    offered = sent / wall
    stored = len(in_window) / span
    limit_cpu = {**{k: v for k, v in pct.items() if not k.startswith(("fleet", "postgres"))},
                 **{k: groups[k] for k in ("workers", "fleet", "postgres", "total", "machine",
                                           "others")}}  # fmt: skip
    return {
        "store": store_kind,
        "workers": workers,
        "phase": phase,
        "agents": args.agents,
        "fleet_processes": args.procs,
        "seconds": wall,
        "drain_seconds": drained - t1,
        "first_commit_after_s": min((c for _, c in committed), default=t1) - t0,
        "results": len(committed),
        "heartbeats": sum(p["heartbeats"] for p in published),
        "refused_no_subscribers": sum(p["refused"] for p in published),
        "paced_skipped_full_window": sum(p["skipped"] for p in published),
        "offered_per_s": offered,
        "stored_per_s": stored,
        "latency_ms": {
            "p50": percentile(latency, 0.5),
            "p99": percentile(latency, 0.99),
            "max": max(latency, default=None),
            "n": len(latency),
        },
        "cpu_percent_of_one_core": {**groups, "per_process": pct},
        "limit": limit_of(
            limit_cpu, os.cpu_count() or 1, stored, offered, store_kind, args.inflight
        ),  # fmt: skip
    }


# -- report --------------------------------------------------------------------------------


def print_table(rows: list[dict]) -> None:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}" if v >= 100 else f"{v:.1f}"

    lines = [("store", "W", "phase", "offered/s", "stored/s", "vs 1w", "p50 ms", "p99 ms",
              "broker%", "workers%", "max w%", "fleet%", "pg%", "ours%", "others%", "iowait%",
              "limit")]  # fmt: skip
    for r in rows:
        c = r["cpu_percent_of_one_core"]
        lines.append(
            (
                r["store"],
                str(r["workers"]),
                r["phase"],
                f"{r['offered_per_s']:.0f}",
                f"{r['stored_per_s']:.0f}",
                "-" if r.get("vs_1_worker") is None else f"{r['vs_1_worker']:.2f}",
                ms(r["latency_ms"]["p50"]),
                ms(r["latency_ms"]["p99"]),
                f"{c['broker']:.0f}",
                f"{c['workers']:.0f}",
                f"{c['worker_max']:.0f}",
                f"{c['fleet']:.0f}",
                f"{c['postgres']:.0f}" if r["store"] == "postgresql" else "-",
                f"{c['total']:.0f}",
                f"{c['others']:.0f}",
                f"{c['iowait']:.0f}",
                r["limit"],
            )
        )
    print_rows(lines, left=3)


def postgres_available() -> tuple[object | None, str | None]:
    """(bindir, None) if a throwaway server can run here, else (None, why not)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "psycopg missing: pip install 'halofarm[postgres]'"
    from tests.postgres_server import postgres_bindir

    bindir = postgres_bindir()
    return (bindir, None) if bindir else (None, "initdb/postgres not found")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--quick", action="store_true", help="short phases, workers 1 and 2 (~1 min)")
    p.add_argument("--agents", type=int, default=200, help="simulated agents")
    p.add_argument("--procs", type=int, default=2, help="fleet processes sharing the agents")
    p.add_argument("--workers", help="ingest worker counts to run (default 1,2,4; quick 1,2)")
    p.add_argument("--store", default="sqlite,postgresql", help="stores to run")
    p.add_argument("--seconds", type=float, default=10.0, help="saturate phase length")
    p.add_argument("--paced-seconds", type=float, default=10.0, help="paced phase length")
    p.add_argument("--rate", type=float, help="paced results/s in total (default: 1 per agent)")
    p.add_argument(
        "--inflight",
        type=int,
        default=BrokerConfig.max_inflight_messages,
        help="the broker's max_inflight_messages: un-acked messages per worker",
    )
    p.add_argument("--workdir", type=Path, help="broker state and SQLite store (default: tmp)")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.paced_seconds, args.warmup = 2.5, 1.5, 0.5
        args.workers = args.workers or "1,2"
    else:
        args.warmup = WARMUP_S
        args.workers = args.workers or "1,2,4"
    args.rate = args.rate or float(args.agents)
    args.worker_counts = [int(w) for w in args.workers.split(",")]
    args.stores = args.store.split(",")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    bindir, why_not = postgres_available() if "postgresql" in args.stores else (None, None)
    stores = [s for s in args.stores if s != "postgresql" or bindir is not None]
    if why_not:
        print(f"PostgreSQL skipped: {why_not}")
    pg = None
    rows: list[dict] = []
    work_root = args.workdir or Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix="scale-", dir=work_root) as tmp:
        try:
            if bindir is not None:
                from tests.postgres_server import PostgresServer

                pg = PostgresServer(
                    bindir, fsync=True, max_connections=50,
                    settings={"track_commit_timestamp": "on"},
                )  # fmt: skip
            for store_kind in stores:
                for workers in args.worker_counts:
                    print(f"{store_kind}, {workers} worker(s) ...", flush=True)
                    rows += run_config(Path(tmp) / f"{store_kind}-{workers}", store_kind,
                                       workers, args, pg)  # fmt: skip
        finally:
            if pg is not None:
                pg.stop()
    for r in rows:
        base = next((b for b in rows if b["store"] == r["store"] and b["phase"] == r["phase"]
                     and b["workers"] == 1), None)  # fmt: skip
        r["vs_1_worker"] = (
            r["stored_per_s"] / base["stored_per_s"] if base and base["stored_per_s"] else None
        )
    print()
    print_table(rows)
    out = {
        "benchmark": NAME,
        "quick": args.quick,
        "agents": args.agents,
        "fleet_processes": args.procs,
        "window_per_agent": WINDOW,
        "heartbeat_s": HEARTBEAT_S,
        "paced_rate_per_s": args.rate,
        "saturate_seconds": args.seconds,
        "paced_seconds": args.paced_seconds,
        "warmup_seconds": args.warmup,
        "broker_max_inflight_messages": args.inflight,
        "postgresql": None if pg is None else {"bindir": str(bindir)},
        "postgresql_skipped": why_not,
        "mosquitto": mosquitto_version(find_mosquitto()),
        "paho_mqtt": paho.mqtt.__version__,
        "store_filesystem": filesystem_of(work_root),
        "machine": machine_facts(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "runs": rows,
    }
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
