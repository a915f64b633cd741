"""Ingest throughput: results/s the coordinator stores, against a C subscriber on the same stream.

What it measures: one publisher process plays a farm of devices and sends N realistic result
messages (BenchResult envelopes as the agent encodes them, raw_ns with 50-100 runs, env
blocks, op histogram; ~2 KB each) at QoS 1 with a window of 2000 un-acked messages (mqtt.md
§9) to a managed mosquitto on a free loopback port (production config from
coordinator.broker: persistence on, max_inflight_messages 100). On the other side:

(a) ``ingest``: the coordinator's Ingestor (MQTT 5 persistent session, shared subscription,
    manual ack after commit) writing to a fresh SQLite store (WAL, synchronous=FULL) on disk;
(b) ``mosquitto_sub``: ``mosquitto_sub -V mqttv5 -q 1`` on the same filter, lines counted --
    what the broker delivers to a subscriber that does nothing;
(c) ``ingest xW`` (``--workers W``, default 2): W Ingestor processes in the shared
    subscription group writing to one store -- the scale-out path of mqtt.md §11.

Each run gets a fresh broker and store; every run must store each result exactly once. The
clock starts when the publisher (payloads already encoded) is released and stops when the
N-th result is committed and acked (a, c; the ingest stats, polled every 2 ms) or printed
(b); rate = N / that time. ``span`` rates use first-to-last receive instead, as in mqtt.md
§9. ``vs sub`` = ingest rate / mosquitto_sub rate in the same repetition; ``vs target`` =
ingest rate / 5000 results/s. Broker, publisher and consumers share the machine's cores
(recorded), so the rates depend on whatever else runs there; the CPU time each process used
over the same interval (``cpu us/result``: the consumer's; the JSON also has the publisher's
and the broker's) does much less. After the runs, each ingest stage is timed alone in one
thread on the same kind of stream ("where the time goes"); in ingest itself, decoding runs in
the network thread and SQLite in the writer thread, side by side.

    python benchmarks/ingest_throughput.py [--quick] [--count N] [--repeat R] [--workers W]
                                           [--workdir DIR] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import socket
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
from machine import machine_facts
from report import print_rows, write_json  # noqa: E402

from coordinator.broker import BrokerConfig, ManagedBroker, find_mosquitto, mosquitto_version
from coordinator.ingest import Ingestor
from coordinator.store import Store, result_row
from protocol import (
    INGEST_SHARED,
    BenchResult,
    BenchSpec,
    BenchStats,
    decode,
    encode,
    job_topic,
    make,
    pack_ns,
)

NAME = "ingest_throughput"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / f"{NAME}.json"
TARGET_PER_S = 5000.0
WINDOW = 2000  # un-acked publishes (mqtt.md §9)
DEVICES = 20
SEED = 0
TIMEOUT_S = 300.0


# -- the stream ----------------------------------------------------------------------------


def device_env(rng: random.Random) -> dict:
    """An env_pre/env_post block like the agent's: governor, clocks, temps, throttle, memory."""
    cpus = {f"cpu{i}": rng.choice((1500000, 1800000)) for i in range(4)}
    return {
        "governor": "performance",
        "cpu_freq_khz": cpus,
        "cpu_max_freq_khz": {k: 1800000 for k in cpus},
        "temps_c": {"cpu-thermal": round(rng.uniform(45, 70), 1), "gpu-thermal": 48.5},
        "throttled": False,
        "throttled_raw": "0x0",
        "load": [round(rng.uniform(0, 2), 2) for _ in range(3)],
        "mem_available_bytes": rng.randrange(1 << 30, 3 << 30),
        "nvpmodel": None,
        "uptime_s": round(rng.uniform(100, 1e6), 1),
    }


def result_payload(i: int, rng: random.Random, device: str | None = None) -> tuple[str, bytes]:
    device = device or f"rpi4-{i % DEVICES:02d}"
    runs = rng.randint(50, 100)
    base = rng.uniform(0.5e6, 20e6)
    raw = sorted(int(base * rng.lognormvariate(0, 0.03)) for _ in range(runs))
    mean = sum(raw) / runs
    std = (sum((x - mean) ** 2 for x in raw) / runs) ** 0.5

    def q(p: float) -> float:
        return float(raw[min(runs - 1, int(p * runs))])

    stats = BenchStats(runs, raw[0], q(0.05), q(0.5), q(0.9), q(0.95), q(0.99), raw[-1], mean,
                       std, std / mean)  # fmt: skip
    now = time.time()
    body = BenchResult(
        result_id=uuid.UUID(int=rng.getrandbits(128)).hex,
        job_id=uuid.UUID(int=rng.getrandbits(128)).hex,
        cmd_id=uuid.UUID(int=rng.getrandbits(128)).hex,
        status="ok",
        reason=None,
        spec=BenchSpec(
            model_sha256=f"{rng.getrandbits(256):064x}",
            model_name=f"nb201-{rng.randrange(15625):05d}",
            threads=rng.choice((1, 2, 4)),
        ),
        model_bytes=rng.randrange(200_000, 4_000_000),
        runtime="tflite-runtime",
        runtime_version="2.14.0",
        init_ns=rng.randrange(5_000_000, 50_000_000),
        first_ns=int(raw[-1] * 1.5),
        warmup_count=rng.randint(1, 20),
        warmup_mean_ns=mean * 1.02,
        stats=stats,
        raw_ns=pack_ns(raw),
        env_pre=device_env(rng),
        env_post=device_env(rng),
        ops={
            "CONV_2D": rng.randint(5, 40),
            "ADD": rng.randint(0, 20),
            "AVERAGE_POOL_2D": 1,
            "FULLY_CONNECTED": 1,
            "MEAN": 1,
            "PAD": rng.randint(0, 5),
        },  # fmt: skip
        delegated=True,
        peak_rss_bytes=rng.randrange(50_000_000, 300_000_000),
        started_at=now - runs * mean / 1e9,
        finished_at=now,
    )
    env = make(body, device, msg_id=uuid.UUID(int=rng.getrandbits(128)).hex)
    return job_topic(device, body.job_id, "result"), encode(env)


def make_stream(count: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    return [result_payload(i, rng) for i in range(count)]


# -- publisher process ---------------------------------------------------------------------


def publisher(host: str, port: int, count: int, seed: int, ready, go, out) -> None:
    """Encode the stream first, then publish it QoS 1 with at most WINDOW un-acked."""
    stream = make_stream(count, seed)
    cond = threading.Condition()
    acked = 0
    refused = 0  # PUBACK "no matching subscribers": that result would be lost

    def on_publish(client, userdata, mid, reason_code, properties) -> None:
        nonlocal acked, refused
        with cond:
            acked += 1
            refused += reason_code.value == 16
            cond.notify()

    connected = threading.Event()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id="bench-publisher", protocol=mqtt.MQTTv5
    )
    client.max_inflight_messages_set(100)
    client.on_publish = on_publish
    client.on_connect = lambda *a: connected.set()
    client.connect(host, port, keepalive=60)
    client.loop_start()
    if not connected.wait(30):
        raise RuntimeError(f"publisher could not connect to {host}:{port}")
    ready.set()
    go.wait()
    start = time.time()
    for sent, (topic, payload) in enumerate(stream):
        with cond:
            cond.wait_for(lambda sent=sent: sent - acked < WINDOW)
        info = client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish failed: {mqtt.error_string(info.rc)}")
    with cond:
        cond.wait_for(lambda: acked >= count, TIMEOUT_S)
    end = time.time()
    client.disconnect()
    client.loop_stop()
    out.put(
        {
            "published": count,
            "acked": acked,
            "refused_no_subscribers": refused,
            "seconds": end - start,
            "mean_payload_bytes": sum(len(p) for _, p in stream) / count,
        }
    )


class Publisher:
    """The publisher process: started, waits with its payloads encoded until release()."""

    def __init__(self, host: str, port: int, count: int, seed: int) -> None:
        ctx = mp.get_context("spawn")
        self._ready, self._go, self._out = ctx.Event(), ctx.Event(), ctx.Queue()
        self._proc = ctx.Process(
            target=publisher,
            args=(host, port, count, seed, self._ready, self._go, self._out),
            name="bench-publisher",
            daemon=True,
        )
        self._proc.start()
        if not self._ready.wait(TIMEOUT_S):
            self._proc.kill()
            raise RuntimeError("publisher process did not get ready")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def release(self) -> float:
        start = time.time()
        self._go.set()
        return start

    def result(self) -> dict:
        out = self._out.get(timeout=TIMEOUT_S)
        self._proc.join(TIMEOUT_S)
        return out


# -- one repetition of each consumer -------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A managed mosquitto with the production config on a free loopback port; ``inflight``
    overrides its max_inflight_messages (production: 100), the un-acked messages a consumer
    may hold."""

    def __init__(self, workdir: Path, inflight: int | None = None) -> None:
        extra = {} if inflight is None else {"max_inflight_messages": inflight}
        cfg = BrokerConfig(state_dir=workdir / "broker", port=free_port(), **extra)
        self.host, self.port = cfg.host, cfg.port
        self._managed = ManagedBroker(cfg.state_dir)
        self._managed.start(cfg)
        self.pid = self._managed.status().pid

    def stop(self) -> None:
        self._managed.stop()


class CpuMeter:
    """CPU seconds (user + system) that processes use between start() and stop()."""

    def __init__(self, **pids: int | None) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}
        self._start: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        times = proc.cpu_times()
        return times.user + times.system

    def start(self) -> None:
        self._start = {name: self._cpu(p) for name, p in self._procs.items()}

    def stop(self) -> None:
        self.seconds = {name: self._cpu(p) - self._start[name] for name, p in self._procs.items()}

    def per_result_us(self, count: int) -> dict[str, float]:
        return {name: s / count * 1e6 for name, s in self.seconds.items()}


def wait_messages(messages, count: int, what: str) -> float:
    """Poll messages() every 2 ms until it reaches count; the time it did."""
    deadline = time.monotonic() + TIMEOUT_S
    while messages() < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} stalled at {messages()} of {count}")
        time.sleep(0.002)
    return time.time()


def run_ingest(workdir: Path, count: int, seed: int) -> dict:
    broker = Broker(workdir)
    try:
        with Store(workdir / "store.sqlite") as store:
            # No on_commit: it would make ingest keep every decoded result, which the
            # coordinator's own ingest does not.
            ingestor = Ingestor(store, broker.host, broker.port, name="bench")
            ingestor.start()
            if not ingestor.wait_ready(30):
                raise RuntimeError("ingestor did not subscribe")
            pub = Publisher(broker.host, broker.port, count, seed)
            cpu = CpuMeter(consumer=os.getpid(), publisher=pub.pid, broker=broker.pid)
            cpu.start()
            start = pub.release()
            end = wait_messages(lambda: ingestor.stats().messages, count, "ingest")
            cpu.stop()
            stats = ingestor.stats()
            ingestor.stop()
            stored = store.count_results()
            first = min(r.received_at for r in store.results(limit=1))
        published = pub.result()
    finally:
        broker.stop()
    return {
        "consumer": "ingest",
        "results": count,
        "stored": stored,
        "seconds": end - start,
        "per_s": count / (end - start),
        "span_per_s": count / (end - first),
        "batches": stats.batches,
        "mean_batch": stats.messages / max(stats.batches, 1),
        "duplicates": stats.results_duplicate,
        "rejected": stats.rejected,
        "errors": stats.errors,
        "cpu_us_per_result": cpu.per_result_us(count),
        "publisher": published,
    }


def ingest_worker(host: str, port: int, store_path: str, name: str, ready, stop, out) -> None:
    """One ingest worker process of the shared-subscription group (mqtt.md §11)."""
    last_commit, seen = 0.0, 0
    with Store(store_path) as store:
        ingestor = Ingestor(store, host, port, name=name)
        ingestor.start()
        if not ingestor.wait_ready(30):
            raise RuntimeError(f"ingest worker {name} did not subscribe")
        ready.set()
        # When this worker's last batch was committed and acked (polled as in run_ingest).
        while not stop.wait(0.002):
            messages = ingestor.stats().messages
            if messages != seen:
                last_commit, seen = time.time(), messages
        ingestor.stop()
        out.put({**ingestor.stats().to_dict(), "last_commit": last_commit})


def run_ingest_workers(workdir: Path, count: int, seed: int, workers: int) -> dict:
    """Like run_ingest, with `workers` Ingestor processes sharing the stream and the store."""
    broker = Broker(workdir)
    store_path = workdir / "store.sqlite"
    Store(store_path).close()  # create and migrate once, before the workers race for it
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    procs, readies = [], []
    try:
        for w in range(workers):
            ready = ctx.Event()
            proc = ctx.Process(
                target=ingest_worker,
                args=(broker.host, broker.port, str(store_path), f"bench{w}", ready, stop, out),
                daemon=True,
            )
            proc.start()
            procs.append(proc)
            readies.append(ready)
        for ready in readies:
            if not ready.wait(TIMEOUT_S):
                raise RuntimeError("an ingest worker did not get ready")
        pub = Publisher(broker.host, broker.port, count, seed)
        cpu = CpuMeter(
            publisher=pub.pid,
            broker=broker.pid,
            **{f"consumer{w}": proc.pid for w, proc in enumerate(procs)},
        )
        with Store(store_path) as store:
            cpu.start()
            start = pub.release()
            deadline = time.monotonic() + TIMEOUT_S
            while store.count_results() < count:  # a cheap poll: 20 per second
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ingest stalled at {store.count_results()} results")
                time.sleep(0.05)
            cpu.stop()  # up to 50 ms late: a little more idle time counted, not more work
            stop.set()
            stats = [out.get(timeout=TIMEOUT_S) for _ in procs]
            stored = store.count_results()
            first = store.results(limit=1)[0].received_at
        published = pub.result()
    finally:
        stop.set()
        for proc in procs:
            proc.join(TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
        broker.stop()
    end = max(s["last_commit"] for s in stats)
    batches = sum(s["batches"] for s in stats)
    cpu_us = cpu.per_result_us(count)
    cpu_us["consumer"] = sum(v for k, v in cpu_us.items() if k.startswith("consumer"))
    return {
        "consumer": f"ingest x{workers}",
        "results": count,
        "stored": stored,
        "seconds": end - start,
        "per_s": count / (end - start),
        "span_per_s": count / (end - first),
        "per_worker": [s["results_inserted"] for s in stats],
        "batches": batches,
        "mean_batch": sum(s["messages"] for s in stats) / max(batches, 1),
        "duplicates": sum(s["results_duplicate"] for s in stats),
        "rejected": sum(s["rejected"] for s in stats),
        "errors": sum(s["errors"] for s in stats),
        "cpu_us_per_result": cpu_us,
        "publisher": published,
    }


PROBE_TOPIC = "bench/probe"


def wait_subscribed(host: str, port: int) -> None:
    """mosquitto_sub prints nothing when subscribed: publish probes until one has a
    subscriber (PUBACK without "no matching subscribers")."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-probe",
                         protocol=mqtt.MQTTv5)  # fmt: skip
    codes: list[int] = []
    client.on_publish = lambda c, u, mid, rc, p: codes.append(rc.value)
    client.connect(host, port)
    client.loop_start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            client.publish(PROBE_TOPIC, b"probe", qos=1).wait_for_publish(10)
            if codes and codes[-1] == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("mosquitto_sub never subscribed")
    finally:
        client.disconnect()
        client.loop_stop()


def run_sub(workdir: Path, count: int, seed: int) -> dict:
    binary = shutil.which("mosquitto_sub")
    if binary is None:
        raise RuntimeError("mosquitto_sub not found: apt-get install mosquitto-clients")
    broker = Broker(workdir)
    proc = None
    try:
        proc = subprocess.Popen(
            [binary, "-V", "mqttv5", "-q", "1", "-h", broker.host, "-p", str(broker.port),
             "-t", INGEST_SHARED, "-t", PROBE_TOPIC],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_subscribed(broker.host, broker.port)
        pub = Publisher(broker.host, broker.port, count, seed)
        cpu = CpuMeter(consumer=proc.pid, publisher=pub.pid, broker=broker.pid)
        cpu.start()
        start = pub.release()
        first = None
        received = 0
        for line in proc.stdout:
            if line.startswith(b"probe"):
                continue
            received += 1
            if first is None:
                first = time.time()
            if received == count:
                break
        end = time.time()
        cpu.stop()
        published = pub.result()
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        broker.stop()
    return {
        "consumer": "mosquitto_sub",
        "results": count,
        "received": received,
        "seconds": end - start,
        "per_s": count / (end - start),
        "span_per_s": count / (end - first),
        "cpu_us_per_result": cpu.per_result_us(count),
        "publisher": published,
    }


# -- where the time goes: each ingest stage alone, in this process ---------------------------


def stage_costs(
    stream: list[tuple[str, bytes]], workdir: Path, batch: int = 1000, repeat: int = 3
) -> dict:
    """Microseconds per message for each step of ingest, one after the other in this thread,
    without MQTT: plain JSON parsing (for scale), protocol decode and validation (includes
    its own JSON parse), building the row, and SQLite inserts committed per ``batch`` rows
    into a fresh store. The best of ``repeat`` rounds: what else runs on the machine only
    ever adds time.

    ``mqtt_and_rest`` (filled in by the caller) is what the measured time per result adds
    to decoding and building the row, the ingest network thread's own work: paho's receive
    and ack path, the GIL it shares with the writer thread (whose SQLite work otherwise runs
    beside it, so it is not added), and whatever else competes for the cores.
    """
    best: dict[str, float] = {}
    for r in range(repeat):
        t0 = time.perf_counter()
        for _, payload in stream:
            json.loads(payload)
        t1 = time.perf_counter()
        envs = [decode(payload, expect_type="result") for _, payload in stream]
        t2 = time.perf_counter()
        rows = [
            result_row(env, time.time(), raw) for env, (_, raw) in zip(envs, stream, strict=True)
        ]
        t3 = time.perf_counter()
        with Store(workdir / f"stages-{r}.sqlite") as store:
            for i in range(0, len(rows), batch):
                store.add_result_rows(rows[i : i + batch])
        t4 = time.perf_counter()
        n = len(stream)
        times = {
            "json_parse_us": (t1 - t0) / n * 1e6,
            "decode_validate_us": (t2 - t1) / n * 1e6,
            "row_us": (t3 - t2) / n * 1e6,
            "sqlite_insert_commit_us": (t4 - t3) / n * 1e6,
        }
        best = {k: min(v, best.get(k, v)) for k, v in times.items()}
    return {**best, "sqlite_batch": batch}


def filesystem_of(path: Path) -> str:
    """The file system type holding path (from /proc/mounts; "" if unknown)."""
    best, fstype = "", ""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    target = str(path.resolve())
    for line in mounts:
        _, mount, kind, *_ = line.split()
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) > len(
            best
        ):
            best, fstype = mount, kind
    return fstype


# -- report ----------------------------------------------------------------------------------


def print_table(rows: list[dict], stages: dict) -> None:
    header = ("rep", "consumer", "results", "seconds", "results/s", "span/s", "vs sub",
              "vs target", "cpu us/result", "publisher/s")  # fmt: skip
    lines = [header]
    for r in rows:
        pub = r["publisher"]
        lines.append(
            (
                str(r["rep"]),
                r["consumer"],
                str(r["results"]),
                f"{r['seconds']:.2f}",
                f"{r['per_s']:.0f}",
                f"{r['span_per_s']:.0f}",
                "-" if r.get("vs_sub") is None else f"{r['vs_sub']:.2f}",
                "-" if r.get("vs_target") is None else f"{r['vs_target']:.2f}",
                f"{r['cpu_us_per_result']['consumer']:.0f}",
                f"{pub['published'] / pub['seconds']:.0f}",
            )
        )
    print_rows(lines, left=2)
    print()
    print("ingest stages, us per result (each alone in one thread, without MQTT):")
    for key, value in stages.items():
        print(f"  {key:<26} {value:8.1f}" if isinstance(value, float) else f"  {key:<26} {value}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--quick", action="store_true", help="3000 results, one repetition")
    p.add_argument("--count", type=int, default=30000, help="results per run")
    p.add_argument("--repeat", type=int, default=2, help="repetitions of each consumer")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also run this many ingest worker processes sharing the stream (1: skip)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="where the broker state and the store go (default: the temp dir); put it on the "
        "disk the coordinator will use -- on tmpfs an fsync costs nothing",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    count, repeat = (3000, 1) if args.quick else (args.count, args.repeat)
    rows = []
    load_before = os.getloadavg()
    work_root = args.workdir or Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix="ingest-throughput-", dir=work_root) as tmp:
        work = Path(tmp)
        for rep in range(1, repeat + 1):
            seed = SEED + rep
            sub = run_sub(work / f"sub-{rep}", count, seed)
            ingests = [run_ingest(work / f"ingest-{rep}", count, seed)]
            if args.workers > 1:
                ingests.append(
                    run_ingest_workers(work / f"workers-{rep}", count, seed, args.workers)
                )
            rows.append({"rep": rep, **sub})
            for ing in ingests:
                if ing["stored"] != count or ing["duplicates"] or ing["rejected"]:
                    raise RuntimeError(f"ingest run {rep} lost or mangled results: {ing}")
                ing["vs_sub"] = ing["per_s"] / sub["per_s"]
                ing["vs_target"] = ing["per_s"] / TARGET_PER_S
                rows.append({"rep": rep, **ing})
        stream = make_stream(min(count, 5000), SEED)
        stages = stage_costs(stream, work)
    best = max(r["per_s"] for r in rows if r["consumer"] == "ingest")
    stages["measured_ingest_us"] = 1e6 / best
    stages["mqtt_and_rest_us"] = stages["measured_ingest_us"] - (
        stages["decode_validate_us"] + stages["row_us"]
    )
    print_table(rows, stages)
    out = {
        "benchmark": NAME,
        "quick": args.quick,
        "seed": SEED,
        "count": count,
        "window": WINDOW,
        "devices": DEVICES,
        "target_results_per_s": TARGET_PER_S,
        "best_ingest_per_s": best,
        "best_ingest_workers_per_s": max(
            (r["per_s"] for r in rows if r["consumer"].startswith("ingest x")), default=None
        ),
        "mosquitto": mosquitto_version(find_mosquitto()),
        "paho_mqtt": paho.mqtt.__version__,
        "store_filesystem": filesystem_of(work_root),
        "machine": machine_facts(),
        # 1, 5 and 15 minute load averages: how busy the shared cores were around the runs.
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "runs": rows,
        "stages_us_per_result": stages,
    }
    write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
