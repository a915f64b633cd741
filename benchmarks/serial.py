"""Serial bridge: command round trip to an EEMBC DUT over a pty, and the sustained sample rate a
PPK2 stream (100 kS/s, 400 kB/s) is decoded at, with the CPU it costs.

The fakes run in their own process (``python -m firmware_bridge.fakes``) on real pty pairs, as
a USB device would be another chip: their CPU is not this process's.

(a) Round trip: ``name%`` -> ``m-ready`` (two reply lines). The device is first the smallest
possible one -- a child process on the pty's master answering every ``%`` at once -- reached by
the bare minimum (the reference: ``os.write`` + blocking ``os.read``, no pyserial, no thread, no
parsing), by the bare transport (``write`` + two ``read_line``: pyserial, reader thread) and by
``EembcDut.command`` (+ parsing); then the fake DUT in its own process (its pty pump and device
thread add their hops), and the in-process ``fake-dut://`` URL scheme (no pty).

(b) PPK2 stream: the meter driver (pyserial reader thread + numpy decoder + energy
bookkeeping) on the fake PPK2 at 100 kS/s for ``--seconds``: decoded samples/s against the
100 000 the fake produced, samples lost (counter gaps) and bad bytes, this process's CPU (%% of
one core) while streaming, and the energy of the fake's known square profile against the truth
(target 0.5 %%). Reference: ``Ppk2Decoder.feed`` alone on one second of words (its decode
capacity, in samples/s per core) and ``np.frombuffer`` on the same bytes (the floor).

    python benchmarks/serial.py [--quick] [--seconds 10] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from machine import machine_facts
from report import print_rows, write_json

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# This script's name shadows pyserial (``import serial``) while its directory is on sys.path:
# drop the directory now that machine/report are imported. firmware_bridge is newer than the
# dev venv's editable install: find it from the checkout.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(REPO))

from firmware_bridge.dut import EembcDut  # noqa: E402
from firmware_bridge.fakes.ppk2 import CAL, encode_current, metadata_text  # noqa: E402
from firmware_bridge.fakes.profiles import SquareProfile  # noqa: E402
from firmware_bridge.fakes.serial_port import forget  # noqa: E402
from firmware_bridge.meters.factory import open_meter  # noqa: E402
from firmware_bridge.meters.ppk2 import Ppk2Decoder, parse_metadata  # noqa: E402
from firmware_bridge.transport import PortSettings, Transport  # noqa: E402

NAME = "serial"
DEFAULT_OUT = REPO / "benchmarks" / "results" / f"{NAME}.json"
SQUARE = dict(lo_ma=1.5, hi_ma=9.0, period_ms=20.0, duty=0.3)
VOLTS = 3.0


def stats_us(ns: list[int]) -> dict:
    a = np.asarray(ns, dtype=np.float64) / 1e3
    return {
        "n": int(a.size),
        "p50_us": float(np.median(a)),
        "p99_us": float(np.percentile(a, 99)),
        "mean_us": float(a.mean()),
    }


class FakeServer:
    """``python -m firmware_bridge.fakes URL`` in its own process; ``paths`` by URL."""

    def __init__(self, *urls: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="halofarm-bench-")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge.fakes", *urls, "--dir", self.dir],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.paths = {}
        for line in self.proc.stdout:
            msg = json.loads(line)
            if msg.get("ready"):
                break
            self.paths[msg["url"]] = msg["path"]

    def cpu_s(self) -> float:
        import psutil

        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


ECHO_CHILD = textwrap.dedent(
    """
    import os, sys
    fd = int(sys.argv[1])
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # the host closed its side
            break
        if not data:
            break
        for _ in range(data.count(b"%")):
            os.write(fd, b"m-name-dut-[x]\\r\\nm-ready\\r\\n")
    """
)


class EchoChild:
    """The smallest possible device: a child process on a pty's master that answers every
    ``%`` at once with the two lines of a ``name`` reply."""

    def __enter__(self) -> EchoChild:
        import tty

        master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.child = subprocess.Popen(
            [sys.executable, "-c", ECHO_CHILD, str(master)], pass_fds=(master,)
        )
        os.close(master)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.slave)
        self.child.wait(10)

    def raw_round_trips(self, n: int) -> dict:
        """os.write / blocking os.read: no pyserial, no thread, no parsing."""
        times = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            os.write(self.slave, b"name%")
            got = b""
            while not got.endswith(b"m-ready\r\n"):
                got += os.read(self.slave, 4096)
            times.append(time.perf_counter_ns() - t0)
        return stats_us(times)


def dut_round_trip(url: str, n: int) -> dict:
    with EembcDut.open(url) as dut:
        dut.name()
        times = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            dut.command("name")
            times.append(time.perf_counter_ns() - t0)
    return stats_us(times)


def transport_round_trip(url: str, n: int) -> dict:
    with Transport(PortSettings(url)).open() as t:
        times = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            t.write(b"name%")
            t.read_line(5.0)
            t.read_line(5.0)
            times.append(time.perf_counter_ns() - t0)
    return stats_us(times)


def round_trips(n: int) -> list[dict]:
    with EchoChild() as echo:
        rows = [{"path": "reference: os.write/os.read <-> echo child", **echo.raw_round_trips(n)}]
        rows.append({"path": "Transport <-> echo child", **transport_round_trip(echo.path, n)})
        rows.append({"path": "EembcDut.command <-> echo child", **dut_round_trip(echo.path, n)})
    server = FakeServer("fake-dut://ic01")
    try:
        path = server.paths["fake-dut://ic01"]
        rows.append({"path": "EembcDut.command <-> fake DUT process", **dut_round_trip(path, n)})
    finally:
        server.close()
    url = "fake-dut://ic01?id=bench"
    rows.append({"path": "EembcDut.command, fake-dut:// in process", **dut_round_trip(url, n)})
    forget(url)
    return rows


def decoder_capacity() -> dict:
    """One second of words through the decoder alone (and np.frombuffer as the floor)."""
    prof = SquareProfile(
        SQUARE["lo_ma"], SQUARE["hi_ma"], SQUARE["period_ms"] / 1e3, SQUARE["duty"]
    )
    k = np.arange(100_001) / 100_000
    amps = np.diff(prof.charge(k)) * 100_000
    counters = (np.arange(100_000) & 0x3F).astype(np.uint32)
    data = (encode_current(amps, 3000) | (counters << 18)).astype("<u4").tobytes()
    chunk = 4 * 500  # what the fake sends every 5 ms
    best = {}
    for name, fn in (
        ("decode", lambda: _feed_all(data, chunk)),
        (
            "frombuffer",
            lambda: [np.frombuffer(data[i : i + chunk], "<u4") for i in range(0, len(data), chunk)],
        ),
    ):
        runs = []
        for _ in range(5):
            t0 = time.process_time()
            fn()
            runs.append(time.process_time() - t0)
        best[name] = min(runs)
    return {
        "decode_cpu_s_per_s_of_stream": best["decode"],
        "decode_capacity_samples_per_s": 100_000 / best["decode"],
        "frombuffer_cpu_s": best["frombuffer"],
    }


def _feed_all(data: bytes, chunk: int) -> None:
    dec = Ppk2Decoder(parse_metadata(metadata_text(3000)), 3000)
    for i in range(0, len(data), chunk):
        dec.feed(data[i : i + chunk])


def ppk2_stream(seconds: float) -> dict:
    query = "&".join(f"{k}={v}" for k, v in SQUARE.items())
    url = f"fake-ppk2://?profile=square&{query}"
    server = FakeServer(url)
    try:
        meter = open_meter(server.paths[url], "ppk2", voltage_mv=int(VOLTS * 1000))
        try:
            meter.start()
            while meter.snapshot().samples == 0:
                time.sleep(0.01)
            first = meter.snapshot()
            wall0, cpu0, fake0 = time.monotonic(), time.process_time(), server.cpu_s()
            time.sleep(seconds)
            last = meter.snapshot()
            wall = time.monotonic() - wall0
            cpu = time.process_time() - cpu0
            fake_cpu = server.cpu_s() - fake0
        finally:
            meter.close()
    finally:
        server.close()
    prof = SquareProfile(
        SQUARE["lo_ma"], SQUARE["hi_ma"], SQUARE["period_ms"] / 1e3, SQUARE["duty"]
    )
    q = prof.charge(np.array([first.t_meter_s, last.t_meter_s]))
    truth = VOLTS * float(q[1] - q[0])
    measured = last.energy_j[0] - first.energy_j[0]
    span = last.t_meter_s - first.t_meter_s
    return {
        "seconds": wall,
        "samples_decoded": last.samples - first.samples,
        "decoded_per_s": (last.samples - first.samples) / wall,
        "meter_time_per_wall": span / wall,
        "dropped_samples": last.dropped - first.dropped,
        "bad_bytes": last.bad - first.bad,
        "host_cpu_pct_of_one_core": 100.0 * cpu / wall,
        "fake_cpu_pct_of_one_core": 100.0 * fake_cpu / wall,
        "energy_rel_error": abs(measured - truth) / truth,
        "energy_j": measured,
        "truth_j": truth,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=None, help="PPK2 stream length")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    n = 200 if args.quick else 2000
    seconds = args.seconds or (3.0 if args.quick else 10.0)

    rt = round_trips(n)
    ref = rt[0]["p50_us"]
    print(f"(a) command round trip name% -> m-ready, {n} commands")
    rows = [("path", "p50 us", "p99 us", "mean us", "p50 / reference")]
    for r in rt:
        rows.append((r["path"], f"{r['p50_us']:.0f}", f"{r['p99_us']:.0f}", f"{r['mean_us']:.0f}",
                     f"{r['p50_us'] / ref:.2f}"))  # fmt: skip
    print_rows(rows)

    cap = decoder_capacity()
    st = ppk2_stream(seconds)
    print(f"\n(b) PPK2 fake at 100 kS/s over a pty, {st['seconds']:.1f} s")
    print_rows(
        [
            ("figure", "value"),
            ("decoded samples/s", f"{st['decoded_per_s']:.0f}"),
            ("meter time / wall time", f"{st['meter_time_per_wall']:.4f}"),
            ("samples lost (counter gaps)", str(st["dropped_samples"])),
            ("bad bytes", str(st["bad_bytes"])),
            ("host CPU, % of one core", f"{st['host_cpu_pct_of_one_core']:.1f}"),
            ("fake's CPU, % of one core", f"{st['fake_cpu_pct_of_one_core']:.1f}"),
            ("energy error vs truth", f"{st['energy_rel_error'] * 100:.3f} %"),
            ("decoder alone: CPU s per s of stream", f"{cap['decode_cpu_s_per_s_of_stream']:.3f}"),
            ("decoder alone: capacity samples/s", f"{cap['decode_capacity_samples_per_s']:.0f}"),
            ("np.frombuffer floor: CPU s per s", f"{cap['frombuffer_cpu_s']:.4f}"),
        ]
    )
    write_json(
        args.out,
        {
            "name": NAME,
            "machine": machine_facts(),
            "round_trip": rt,
            "ppk2_stream": st,
            "decoder": cap,
            "calibration": CAL,
            "quick": args.quick,
        },
    )


if __name__ == "__main__":
    main()
