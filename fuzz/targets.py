"""One fuzz target per parser of outside bytes.

A target is a context manager: entering it builds what the parser needs (a temp file, a
simulated sysfs tree, a store, a fake device on a real pty) and yields ``run(data)``, which
feeds ``data`` to the parser the way the program does. ``run`` returns the parsed value or the
documented error it caught; any other exception escapes, and that is a bug. Each target also
has seeds: valid inputs the fuzzers start from and mutate.

Targets of on-device parsers stay Python 3.8 compatible (the 3.8 CI leg runs their tests);
coordinator targets import the coordinator only when entered.

Inputs that name several things (files of a tree, commands and their replies) are split by
:func:`records`: ``[index: 2 bytes][length: 2 bytes][content]`` repeated (little-endian).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterator, List, Tuple

Run = Callable[[bytes], Any]


def records(data: bytes) -> List[Tuple[int, bytes]]:
    """``[index][length][content]...`` -> [(index, content)]; a short last record takes what
    is left."""
    out = []
    pos = 0
    while pos < len(data):
        index = int.from_bytes(data[pos : pos + 2], "little")
        length = int.from_bytes(data[pos + 2 : pos + 4], "little")
        out.append((index, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def record(index: int, content: bytes) -> bytes:
    content = content[:0xFFFF]
    return (index & 0xFFFF).to_bytes(2, "little") + len(content).to_bytes(2, "little") + content


def _one_line(exc: BaseException) -> BaseException:
    """A user-facing error is printed as one line (exit code 2)."""
    text = str(exc)
    if not text or "\n" in text:
        raise AssertionError(f"{type(exc).__name__} message is not one line: {text!r}")
    return exc


# --------------------------------------------------------------------------- protocol


@contextlib.contextmanager
def protocol_decode() -> Iterator[Run]:
    """MQTT payloads: ``protocol.decode`` raises only ProtocolError; whatever it accepts
    re-encodes to a message that decodes to the same envelope, and is refused as any other
    message type."""
    from protocol import MESSAGE_TYPES, ProtocolError, decode, encode

    types = sorted(MESSAGE_TYPES)

    def run(data: bytes) -> Any:
        try:
            env = decode(data)
        except ProtocolError as e:
            if not e.field:
                raise AssertionError(f"ProtocolError without a field: {e!r}") from e
            return e
        again = encode(env)
        if decode(again, expect_type=env.type) != env:
            raise AssertionError("a decoded message does not survive encode/decode")
        other = types[(types.index(env.type) + 1) % len(types)]
        try:
            decode(data, expect_type=other)
        except ProtocolError:
            return env
        raise AssertionError(f"a {env.type!r} message was accepted as {other!r}")

    yield run


def protocol_seeds() -> List[bytes]:
    from protocol import (
        Ack,
        BenchSpec,
        Command,
        Heartbeat,
        Status,
        encode,
        make,
    )

    sha = "ab" * 32
    cmd_id = "0123456789abcdef0123456789abcdef"
    bodies = [
        Command(cmd_id, "bench", bench=BenchSpec(sha, "nb201-0001", threads=4)),
        Ack(cmd_id, "done", None, None),
        Heartbeat(1.0, [0.1, 0.2, 0.3], {"cpu": 45.0}, {}, None, 0, 0, None, "0.1"),
        Status("online", "0.1", 1700000000.0),
        Status("offline", "0.1", None),
    ]
    out = []
    for body in bodies:
        out.append(encode(make(body, "pi4-01", msg_id="f" * 32, created_at=1700000000.5)))
    return out


@contextlib.contextmanager
def protocol_topic() -> Iterator[Run]:
    """MQTT topic names as the broker delivers them (UTF-8): ``parse_topic`` raises only
    ProtocolError, and what it accepts is rebuilt to the same topic."""
    from protocol import ProtocolError, device_topic, job_topic, parse_topic

    def run(data: bytes) -> Any:
        topic = data.decode("utf-8", "replace")
        try:
            ref = parse_topic(topic)
        except ProtocolError as e:
            return e
        if ref.job_id is None:
            rebuilt = device_topic(ref.device, ref.leaf)
        else:
            rebuilt = job_topic(ref.device, ref.job_id, ref.leaf)
        if rebuilt != topic:
            raise AssertionError(f"{topic!r} parsed to {ref}, which builds {rebuilt!r}")
        return ref

    yield run


TOPIC_SEEDS = [b"halo/v1/dev/pi4-01/status", b"halo/v1/dev/pi4-01/job/j-1/result"]


# --------------------------------------------------------------------------- coordinator


@contextlib.contextmanager
def campaign_toml() -> Iterator[Run]:
    """A campaign file as ``halo-coord campaign`` reads it: CampaignError (a UserError) naming
    file, line and key, or a Campaign."""
    from pathlib import Path

    from coordinator.campaign.spec import load
    from coordinator.errors import UserError

    with tempfile.TemporaryDirectory(prefix="halofarm-fuzz-") as d:
        path = Path(d, "campaign.toml")

        def run(data: bytes) -> Any:
            path.write_bytes(data)
            try:
                campaign = load(path)
            except UserError as e:
                return _one_line(e)
            numbers = [v for part in dataclasses.astuple(campaign) for v in _flat(part)]
            if not all(math.isfinite(v) for v in numbers if isinstance(v, float)):
                raise AssertionError(f"a campaign with a non-finite number: {campaign}")
            return campaign

        yield run


def _flat(value: Any) -> Iterator[Any]:
    if isinstance(value, (tuple, list)):
        for item in value:
            yield from _flat(item)
    elif isinstance(value, dict):
        yield from _flat(list(value.values()))
    else:
        yield value


CAMPAIGN_SEEDS = [
    b'name = "nb201-weekly"\nrepetitions = 3\n\n[devices]\nids = ["tx2-01", "nano-02"]\n'
    b'tags = ["jetson"]\n\n[models]\nzoo = { space = "nb201", sample = 60, seed = 0, '
    b'dtype = "float32", dataset = "cifar10" }\n\n[bench]\nthreads = [1, 4]\nxnnpack = [true]\n'
    b"warmup_runs = 1\nmin_runs = 50\nmin_seconds = 1.5\nmax_seconds = 10.0\nenergy = false\n"
    b"idle_seconds = 10\n\n[order]\nseed = 0\n\n[thermal]\ncooldown_below_c = 55\npause_s = 0\n"
    b"max_wait_s = 600\nretry_throttled = true\n\n[retries]\nmax = 2\nbackoff_s = 30\n"
    b"factor = 2\n\n"
    b'[schedule]\ncron = "0 2 * * 1"\n\n[canary]\nmodels = 2\nevery = 50\nthreshold = 0.10\n',
    b"[devices]\nall_online = true\n\n[models]\nreference = true\n",
    b'[devices]\ntags = ["pi"]\n[models]\ndir = "zoo/nb201"\n[bench]\nenergy = true\n'
    b"energy_seconds = 5.0\ntimeout_s = 600\n",
]


@contextlib.contextmanager
def dataset_csv() -> Iterator[Run]:
    """``halo-coord dataset import --skip-bad``: the file parsed (UserError for a file that
    cannot be read or whose header does not fit, a Problem per bad value), then the good rows
    written to a real store in one transaction."""
    from pathlib import Path

    from coordinator.dataset import importer
    from coordinator.errors import UserError
    from coordinator.store import Store

    with tempfile.TemporaryDirectory(prefix="halofarm-fuzz-") as d:
        path = Path(d, "latency.csv")
        with Store(Path(d, "store.db")) as store:

            def run(data: bytes) -> Any:
                path.write_bytes(data)
                try:
                    parsed = importer.parse(path)
                except UserError as e:
                    return _one_line(e)
                for p in parsed.problems:
                    _one_line(ValueError(p.render(path)))
                importer.write(store, parsed.rows, path.name)
                return parsed

            yield run


DATASET_SEEDS = [
    b"device,space,arch,dataset,runtime,runtime_version,threads,dtype,delegate,latency_ms,"
    b"latency_p90_ms,latency_mean_ms,latency_std_ms,n_runs,n_results,energy_mj,energy_dyn_mj,"
    b"power_mw,index,macs,params,drift_flagged\n"
    b"pi4-01,nb201,|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|"
    b"nor_conv_3x3~1|nor_conv_3x3~2|,cifar10,ai-edge-litert,2.1.0,4,float32,xnnpack,12.5,13.1,"
    b"12.7,0.4,100,1,55.2,20.1,4400,,12000000,1500000,false\n"
    b"pi4-01,fbnet,0-1-2-3-4-5-6-7-8-0-1-2-3-4-5-6-7-8-0-1-2-3,,,,1,,,3.25,,,,,,,,,,,,\n",
    b"index,arch_str,pixel3,eyeriss\n"
    b"0,|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|"
    b"skip_connect~2|,7.2,0.5\n"
    b"1,|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
    b"skip_connect~2|,,1.1\n",
    b"index,arch,gold_6226,titan_rtx_1\n0,0-1-2-3-4-5-6-7-8-0-1-2-3-4-5-6-7-8-0-1-2-3,1.5,2.5\n",
]


@contextlib.contextmanager
def tflite_info() -> Iterator[Run]:
    """``halo-coord zoo info FILE --json``: TFLiteFormatError (a UserError) for a damaged
    file, else the whole description, statistics included, as JSON."""
    from pathlib import Path

    from click.testing import CliRunner

    from coordinator.zoo.cli import info

    runner = CliRunner()
    with tempfile.TemporaryDirectory(prefix="halofarm-fuzz-") as d:
        path = Path(d, "model.tflite")

        def run(data: bytes) -> Any:
            path.write_bytes(data)
            result = runner.invoke(info, [str(path), "--json"], catch_exceptions=True)
            if result.exception is None:
                return json.loads(result.output)
            from coordinator.errors import UserError

            if isinstance(result.exception, UserError):
                return _one_line(result.exception)
            raise result.exception

        yield run


def tflite_seeds() -> List[bytes]:
    import numpy as np

    from coordinator.zoo.graph import Graph
    from coordinator.zoo.quantize import quantize_graph
    from coordinator.zoo.testing import tiny_model_bytes
    from coordinator.zoo.writer import write_model

    rng = np.random.default_rng(0)
    g = Graph()
    x = g.input((1, 6, 6, 3))
    y = g.conv2d(x, rng.standard_normal((4, 3, 3, 3)), np.zeros(4), act="RELU", name="c")
    y = g.pool2d(y, "avg", 2, 2, name="p")
    y = g.reshape(y, (1, 36), name="r")
    y = g.fully_connected(y, rng.standard_normal((2, 36)), np.zeros(2), name="fc")
    g.mark_output(y)
    return [tiny_model_bytes(), write_model(g), write_model(quantize_graph(g, 0))]


@contextlib.contextmanager
def zoo_manifest() -> Iterator[Run]:
    """A directory's manifest.jsonl: ArchError (a UserError) naming the line, or its rows."""
    from pathlib import Path

    from coordinator.errors import UserError
    from coordinator.zoo.generate import MANIFEST, read_manifest

    with tempfile.TemporaryDirectory(prefix="halofarm-fuzz-") as d:

        def run(data: bytes) -> Any:
            Path(d, MANIFEST).write_bytes(data)
            try:
                return read_manifest(Path(d))
            except UserError as e:
                return _one_line(e)

        yield run


MANIFEST_SEEDS = [
    b'{"arch": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|'
    b'nor_conv_3x3~1|nor_conv_3x3~2|", "dataset": "cifar10", "dtype": "float32", '
    b'"file": "nb201-cifar10-f32-i00000-s0.tflite", "id": "nb201-cifar10-f32-i00000-s0", '
    b'"index": 0, "macs": 1000, "params": 100, "sha256": "' + b"ab" * 32 + b'", '
    b'"space": "nb201"}\n'
]


# --------------------------------------------------------------------------- agent


@contextlib.contextmanager
def agent_config() -> Iterator[Run]:
    """``halo-agent run --config FILE``: ConfigError naming file, line and key, or a config."""
    from agent.config import ConfigError, load_config

    with tempfile.TemporaryDirectory(prefix="halofarm-fuzz-") as d:
        path = os.path.join(d, "agent.toml")

        def run(data: bytes) -> Any:
            with open(path, "wb") as f:
                f.write(data)
            try:
                return load_config(path, env={"STATE_DIRECTORY": d})
            except ConfigError as e:
                return _one_line(e)

        yield run


AGENT_CONFIG_SEEDS = [
    b'device_id = "pi4-lab-01"\nstate_dir = "/var/lib/halofarm"\nheartbeat_s = 15\n'
    b'cache_max_bytes = 1073741824\ntags = ["lab-a", "fan"]\n\n[broker]\n'
    b'url = "mqtts://broker.lab:8883"\nusername = "pi4-lab-01"\npassword = "secret"\n'
    b"keepalive_s = 60\nsession_expiry_s = 604800\ninflight_window = 100\n\n[power]\n"
    b'sysfs_root = "/"\nboard = "tx2"\nrail_names = { "1-0040" = ["VDD_IN", "NC", "NC"] }\n'
    b'total_rails = ["VDD_IN"]\ninclude_carrier = false\ntau_s = 0.4\nestimate_idle_mw = 2500\n'
    b'estimate_busy_mw = 6500\nperiod_ms = 10\nidle_seconds = 10\nsampler = "thread"\n',
    b'[broker]\nurl = "mqtt://user:pw@[::1]:1883"\n\n[[power.meters]]\nname = "dut"\n'
    b'kind = "ppk2"\nurl = "fake-ppk2://x"\n\n[[mcu.duts]]\nname = "l4r5"\n'
    b'url = "fake-dut://ic01"\nmeter = "dut"\n',
]


# --------------------------------------------------------------------------- halo


@contextlib.contextmanager
def halo_checkpoint() -> Iterator[Run]:
    """A learned-optimizer blob (an adapt command's ``optimizer_sha256``) loaded on the board:
    CheckpointError (or CheckpointArchitectureError) naming the file and what to do, or an
    optimizer."""
    from halo.errors import CheckpointError
    from halo.optim.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory(prefix="halofarm-fuzz-") as d:
        path = os.path.join(d, "optimizer.npz")

        def run(data: bytes) -> Any:
            with open(path, "wb") as f:
                f.write(data)
            try:
                return load_checkpoint(path)
            except CheckpointError as e:
                return _one_line(e)

        yield run


def halo_checkpoint_seeds() -> List[bytes]:
    """A small optimizer saved as the coordinator saves one (cell sizes 2, 3, 2)."""
    from halo.optim.checkpoint import save_checkpoint
    from halo.optim.hrnn import HierarchicalRNN
    from halo.optim.hrnn_config import HRNNConfig

    with tempfile.TemporaryDirectory(prefix="halofarm-fuzz-") as d:
        path = save_checkpoint(
            os.path.join(d, "small.npz"), HierarchicalRNN(HRNNConfig(cell_sizes=(2, 3, 2)))
        )
        with open(path, "rb") as f:
            return [f.read()]


@contextlib.contextmanager
def halo_table() -> Iterator[Run]:
    """An adapt job's data blob (a CSV of features and a label): TaskDataError (or one of its
    subclasses) naming file, line and column, or the table and its encoded labels."""
    from halo.errors import TaskDataError
    from halo.tasks.tables import encode_labels, read_table

    with tempfile.TemporaryDirectory(prefix="halofarm-fuzz-") as d:
        path = os.path.join(d, "source.csv")

        def run(data: bytes) -> Any:
            with open(path, "wb") as f:
                f.write(data)
            try:
                table = read_table(path)
                return table, encode_labels(table.labels)
            except TaskDataError as e:
                return _one_line(e)

        yield run


HALO_TABLE_SEEDS = [
    b"T3,TT4,T4U,FTI,label\n0.0061,0.0996,0.0867,0.1149,2\n0.0013,0.0737,0.0866,0.0851,2\n"
    b"0.0281,0.0465,0.0925,0.0503,1\n",
    b"\xef\xbb\xbfa,b,label\n1,2,cat\n3,4,dog\n\n5,6,cat\n",
]


# --------------------------------------------------------------------------- power


def _generic_tree(root: str) -> None:
    """A laptop-like hwmon and powercap tree (power.hwmon_generic, power.rapl)."""
    files = {
        "sys/class/hwmon/hwmon0/name": "acpitz",
        "sys/class/hwmon/hwmon0/temp1_input": "45000",
        "sys/class/hwmon/hwmon1/name": "amdgpu",
        "sys/class/hwmon/hwmon1/power1_input": "15000000",
        "sys/class/hwmon/hwmon1/power1_label": "PPT",
        "sys/class/hwmon/hwmon2/name": "battery",
        "sys/class/hwmon/hwmon2/energy1_input": "123456789",
        "sys/class/hwmon/hwmon2/update_interval": "1000",
        "sys/class/powercap/intel-rapl:0/name": "package-0",
        "sys/class/powercap/intel-rapl:0/energy_uj": "1000000",
        "sys/class/powercap/intel-rapl:0/max_energy_range_uj": "262143328850",
        "sys/class/powercap/intel-rapl:0/enabled": "1",
        "sys/class/powercap/intel-rapl:0:0/name": "core",
        "sys/class/powercap/intel-rapl:0:0/energy_uj": "500000",
        "sys/class/powercap/intel-rapl:0:0/max_energy_range_uj": "262143328850",
        "sys/class/powercap/intel-rapl:1/name": "psys",
        "sys/class/powercap/intel-rapl:1/energy_uj": "9000000",
        "sys/class/powercap/intel-rapl:1/max_energy_range_uj": "262143328850",
    }
    # Facts every benchmark records (agent.sysfacts.env_snapshot) and caps report.
    files.update(
        {
            "proc/meminfo": "MemTotal:        3884528 kB\nMemAvailable:    2961228 kB\n",
            "proc/loadavg": "0.52 0.58 0.59 1/467 12345",
            "proc/uptime": "12345.67 45678.90",
            "proc/sys/kernel/osrelease": "5.15.0-1034-raspi",
            "etc/os-release": 'NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 22.04.3 LTS"\n',
            "sys/devices/system/cpu/present": "0-3",
            "sys/devices/system/cpu/cpufreq/policy0/scaling_governor": "ondemand",
            "sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq": "1500000",
            "sys/devices/system/cpu/cpufreq/policy0/cpuinfo_max_freq": "1800000",
            "sys/devices/system/cpu/cpufreq/policy0/related_cpus": "0 1 2 3",
            "sys/class/thermal/thermal_zone0/temp": "45277",
            "sys/class/thermal/thermal_zone0/type": "cpu-thermal",
            "sys/class/thermal/thermal_zone1/temp": "43000",
            "sys/class/thermal/thermal_zone1/type": "cpu-thermal",
            "sys/class/dmi/id/sys_vendor": "LENOVO",
            "sys/class/dmi/id/product_name": "20XW",
        }
    )
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text + "\n")


def _regular_files(root: str) -> List[str]:
    out = []
    for base, _, names in os.walk(root):
        for name in names:
            path = os.path.join(base, name)
            if os.path.isfile(path) and not os.path.islink(path):
                out.append(path)
    return sorted(out)


def _exercise_power(root: str) -> List[Any]:
    """What the agent does with a board's tree: discover, describe, read twice (rates need
    two readings), pick the total-power rule, open ``auto``, record the environment."""
    from agent import sysfacts
    from power.discover import PowerOptions, discover, open_source, policy_for
    from power.errors import PowerError
    from protocol import fields

    options = PowerOptions(sysfs_root=root)
    out: List[Any] = []
    for source in discover(options):
        try:
            out.append(source.describe())
            out.append(source.rail_names())
            for full in (True, False):
                reading = source.read(full=full)
                for mw in reading.mw:
                    if mw is not None and not isinstance(mw, float):
                        raise AssertionError(f"{source.name}: reading {mw!r} is not a float")
            try:
                out.append(policy_for(source, options))
            except PowerError as e:
                out.append(e)
        finally:
            source.close()
    try:
        source, policy = open_source("auto", options)
        source.close()
        out.append(policy)
    except PowerError as e:
        out.append(e)
    snap = sysfacts.env_snapshot(root)
    # It goes into every result's env_pre: it must be a valid protocol JSON object.
    fields.json_object(snap, "env_pre")
    out.append(snap)
    out.extend(
        [
            sysfacts.board_model(root),
            sysfacts.soc(root),
            sysfacts.cpu_count(root),
            sysfacts.meminfo(root),
            sysfacts.os_name(root),
            sysfacts.kernel_release(root),
        ]
    )
    return out


@contextlib.contextmanager
def power_sysfs() -> Iterator[Run]:
    """The sysfs readers (INA3221 IIO and hwmon, generic hwmon, powercap, the device-tree
    model, agent.sysfacts) on simulated trees whose files get the fuzzed contents. Readers
    return None/skip or raise PowerError (ReadError, RailPolicyError, SourceNotFound)."""
    from power.simboard import SimBoard

    base = tempfile.mkdtemp(prefix="halofarm-fuzz-")
    try:
        roots = []
        for layout, seed in (("tx2-jp4", None), ("orin-nx-jp5", 3), ("rpi-ina3221", None)):
            root = os.path.join(base, layout)
            SimBoard(root, layout, shuffle_seed=seed).create().close()
            roots.append(root)
        generic = os.path.join(base, "generic")
        _generic_tree(generic)
        roots.append(generic)
        files = [(root, path) for root in roots for path in _regular_files(root)]
        originals = {}
        for _, path in files:
            with open(path, "rb") as f:
                originals[path] = f.read()

        def run(data: bytes) -> Any:
            changed = {}
            for index, content in records(data):
                root, path = files[index % len(files)]
                changed[path] = root
                with open(path, "wb") as f:
                    f.write(content)
            try:
                return [_exercise_power(root) for root in sorted(set(changed.values()))]
            finally:
                for path in changed:
                    with open(path, "wb") as f:
                        f.write(originals[path])

        run.files = [os.path.relpath(p, base) for _, p in files]  # type: ignore[attr-defined]
        run.originals = [originals[p] for _, p in files]  # type: ignore[attr-defined]
        yield run
    finally:
        shutil.rmtree(base, ignore_errors=True)


def power_seeds() -> List[bytes]:
    """Typical attribute contents, each in a file spread over the trees."""
    values = [b"5000\n", b"1\n", b"VDD_IN\n", b"ina3221\n", b"-1\n", b"0-3\n", b"NVIDIA Jetson\x00"]
    return [record(i * 7, value) for i, value in enumerate(values * 4)]


@contextlib.contextmanager
def tegrastats_log() -> Iterator[Run]:
    """``halo-agent power tegrastats LOG``: any bytes give a summary (never raises)."""
    from power.tegrastats import format_summary, parse_file, summarize

    with tempfile.TemporaryDirectory(prefix="halofarm-fuzz-") as d:
        path = os.path.join(d, "tegrastats.log")

        def run(data: bytes) -> Any:
            with open(path, "wb") as f:
                f.write(data)
            log = parse_file(path)
            summary = summarize(log)
            json.dumps(summary, allow_nan=False)
            format_summary(summary)
            return summary

        yield run


TEGRASTATS_SEEDS = [
    b"RAM 2305/7846MB (lfb 1x4MB) SWAP 0/3923MB (cached 0MB) CPU [12%@345,off,off,3%@345,"
    b"1%@345,0%@345] EMC_FREQ 0% GR3D_FREQ 0%@140 APE 150 PLL@40.5C MCPU@41C PMIC@100C "
    b"Tboard@37C GPU@39C BCPU@41C thermal@40.1C Tdiode@38.75C VDD_SYS_GPU 152/152 "
    b"VDD_SYS_SOC 687/687 VDD_4V0_WIFI 0/0 VDD_IN 2672/2672 VDD_SYS_CPU 152/152 "
    b"VDD_SYS_DDR 364/364\n",
    b"03-15-2024 10:12:01 RAM 3095/15388MB (lfb 2x4MB) SWAP 0/7694MB (cached 0MB) "
    b"CPU [1%@729,0%@729,0%@729,0%@729,off,off,off,off] GR3D_FREQ 0%@[305,305] "
    b"cpu@45.5C soc2@42.2C tj@45.5C VDD_GPU_SOC 2345mW/2345mW VDD_CPU_CV 394mW/394mW "
    b"VIN_SYS_5V0 2728mW/2728mW VDDQ_VDD2_1V8AO 301mW/301mW\n",
    b"11-02-2025 08:00:00 CPU [5%@1000] GR3D_FREQ @[1000,1000] cpu@52.9C/52.9C "
    b"VDD_GPU_SOC 5139mW/5139mW/5139mW VDD_CPU_CV 700mW/700mW/900mW\n",
]


# --------------------------------------------------------------------------- firmware_bridge

# DUT operations a fuzz input can ask for (its first byte, modulo; +16: via an interface board).
DUT_OPS = ("name", "profile", "timestamp", "identify", "results", "db_print", "infer", "load")
DUT_LOAD = bytes(range(40))  # two db chunks direct (31 + 9), two via the board (26 + 14)


def _scripted_device(terminator: bytes, closing: Callable[[bytes], bytes]) -> Any:
    """A device that answers each command (ended by ``terminator``; empty ones ignored) with
    the next reply of its ``script`` followed by ``closing(command)``, a well-formed end of
    the reply: the fuzzed part is what the driver parses, and no command waits for its
    timeout."""
    from firmware_bridge.fakes.core import FakeDevice

    class Scripted(FakeDevice):
        def __init__(self) -> None:
            super().__init__()
            self.script: List[bytes] = []
            self.pending = b""

        def on_bytes(self, data: bytes) -> None:
            self.pending += data
            while terminator in self.pending:
                command, _, self.pending = self.pending.partition(terminator)
                if command.strip():
                    reply = self.script.pop(0) if self.script else b""
                    self.emit(reply + closing(command))

    return Scripted()


@contextlib.contextmanager
def _pty_device(terminator: bytes, closing: Callable[[bytes], bytes]) -> Iterator[Tuple[Any, str]]:
    from firmware_bridge.fakes.pty_port import PtyPort

    device = _scripted_device(terminator, closing)
    port = PtyPort(device, name="ttyFUZZ0").start()
    try:
        yield device, port.path
    finally:
        port.close()


def _dut_closing(command: bytes) -> bytes:
    return b"\r\n[dut]: m-ready\r\n" if command.startswith(b"dut ") else b"\r\nm-ready\r\n"


def _dut_script(data: bytes, interface: bool) -> List[bytes]:
    """The input's replies, split at ``%``; via the board, each after the board's own
    acknowledgement."""
    return [b"m-ready\r\n" + r if interface else r for r in data.split(b"%")]


@contextlib.contextmanager
def eembc_dut() -> Iterator[Run]:
    """The MLPerf Tiny / EEMBC DUT driver on a real pty whose device answers with the fuzzed
    replies: only firmware_bridge's BridgeError subclasses (ProtocolError, DeviceError,
    CommandTimeout) may come out."""
    from firmware_bridge.dut import EembcDut, Timeouts
    from firmware_bridge.errors import BridgeError
    from firmware_bridge.transport import PortSettings, Transport

    with _pty_device(b"%", _dut_closing) as (device, path):
        settings = PortSettings(path, exclusive=False, quiet_s=0.02, flush_max_s=0.2)
        transport = Transport(settings).open()
        duts = [
            EembcDut(transport, interface, Timeouts(command_s=0.25, infer_min_s=0.25))
            for interface in (False, True)
        ]
        try:

            def run(data: bytes) -> Any:
                op = data[0] if data else 0
                dut = duts[(op >> 4) & 1]
                device.script = _dut_script(data[1:], dut.interface)
                try:
                    name = DUT_OPS[op % len(DUT_OPS)]
                    if name == "infer":
                        return dut.infer(5, 1)
                    if name == "load":
                        return dut.load(DUT_LOAD)
                    return getattr(dut, name)()
                except BridgeError as e:
                    return e
                finally:
                    # Whatever the script had left (replies past an early m-ready) is stale.
                    transport.flush_stale(quiet_s=0.005, max_s=0.05)
                    device.script = []

            yield run
        finally:
            transport.close()


def dut_seeds() -> List[bytes]:
    name = b"m-name-dut-[unspecified]"
    profile = b"m-profile-[ULPMark for tinyML Firmware V0.0.1]\r\nm-model-[ic01]"
    lap = b"m-lap-us-123456789"
    results = b"m-results-[0.000,0.992,0.008,0.000,]"
    infer = (
        b"m-warmup-start-1\r\nm-warmup-done\r\nm-infer-start-5\r\nm-lap-us-4294967000\r\n"
        b"m-lap-us-1000\r\nm-infer-done\r\n" + results
    )
    load = b"m-[Expecting 40 bytes]%\r\n%m-load-done"
    buffer = b"m-buffer-00-01-02-03-04-05-06-07\r\nm-buffer-08-09-0a-0b"
    seeds = [
        bytes([0]) + name,
        bytes([1]) + profile,
        bytes([2]) + lap,
        bytes([3]) + name + b"%" + profile + b"%" + lap,
        bytes([4]) + results,
        bytes([5]) + buffer,
        bytes([6]) + infer,
        bytes([7]) + load,
        bytes([0]) + b"m-init-done\r\nm-ready\r\ne-[Unknown command: name]%" + name,
    ]
    via_board = [
        bytes([16 + 6]) + b"\r\n".join(b"[dut]: " + line for line in infer.split(b"\r\n")),
        bytes([16 + 1]) + b"\r\n".join(b"[dut]: " + line for line in profile.split(b"\r\n")),
    ]
    return seeds + via_board


def _meter(kind: str) -> Any:
    """A meter as the agent makes it, streaming, its port not opened: the stream decoder runs
    in the transport's reader thread, so it must take any bytes without raising."""
    from firmware_bridge.meters.inameter import InaMeter
    from firmware_bridge.meters.lpm01a import Lpm01a
    from firmware_bridge.meters.ppk2 import Calibration, Ppk2, Ppk2Decoder

    if kind == "ppk2":
        meter = Ppk2("fake-ppk2://fuzz")
        meter.decoder = Ppk2Decoder(Calibration(), 3300.0, 0)
    elif kind == "lpm01a":
        meter = Lpm01a("fake-lpm01a://fuzz")
    else:
        meter = InaMeter("fake-inameter://fuzz", rails=["CH1", "CH2"])
    meter.streaming = True
    return meter


@contextlib.contextmanager
def meter_stream() -> Iterator[Run]:
    """The serial meters' stream decoders (PPK2 binary words, LPM01A ASCII values and
    timestamps, halofarm inameter checksummed records) fed the fuzzed bytes in the chunks the
    records give: they count bad data, never raise; energy stays finite."""
    kinds = ("ppk2", "lpm01a", "inameter")

    def run(data: bytes) -> Any:
        chunks = records(data)
        kind = kinds[chunks[0][0] % len(kinds)] if chunks else kinds[0]
        meter = _meter(kind)
        for i, (_, chunk) in enumerate(chunks):
            meter._on_data(chunk, 1_000_000 * (i + 1))
        snap = meter.snapshot()
        if not all(math.isfinite(e) for e in snap.energy_j):
            raise AssertionError(f"{kind}: energy {snap.energy_j} from {data!r}")
        return snap

    yield run


def _inameter_record(body: str) -> bytes:
    x = 0
    for ch in body.encode("latin-1"):
        x ^= ch
    return f"{body}*{x:02X}\r\n".encode("latin-1")


def meter_seeds() -> List[bytes]:
    ppk2 = b"".join(
        ((i & 0x3F) << 18 | (1 << 14) | (1000 + i) | ((i // 8) & 1) << 24).to_bytes(4, "little")
        for i in range(60)
    )
    lpm = (
        b"PowerShield > ack start\r\n1234-07,1250-07,1300-07\r\n1210-07\r\nevent 1 fal\r\n"
        b"TimeStamp: 001s 000ms, buff 00%\r\n"
    )
    ina = (
        b"m-ready\r\n"
        + _inameter_record("P,1,1000,1,3300,12000")
        + _inameter_record("P,2,1500,2,5000,3000")
        + _inameter_record("P,3,11000,1,3300,13000")
        + _inameter_record("E,4,11500,mark,7")
    )
    return [
        record(0, ppk2[:200]) + record(0, ppk2[200:]),
        record(1, lpm),
        record(2, ina[:100]) + record(2, ina[100:]),
    ]


@contextlib.contextmanager
def meter_setup() -> Iterator[Run]:
    """The serial meters' command replies at setup (LPM01A ``ack``/``error`` lines, inameter
    ``m-name``/``m-info``/``m-chan`` lines, PPK2 metadata) from a device on a real pty:
    MeterError, firmware_bridge ProtocolError or DeviceDisconnected, nothing else."""
    from firmware_bridge.errors import BridgeError
    from firmware_bridge.meters.inameter import InaMeter
    from firmware_bridge.meters.lpm01a import Lpm01a
    from firmware_bridge.meters.ppk2 import parse_metadata

    with contextlib.ExitStack() as stack:
        meters = []
        for cls, terminator, closing, kwargs in (
            (Lpm01a, b"\r\n", lambda cmd: b"\r\nPowerShield > ack " + cmd + b"\r\n", {}),
            (InaMeter, b"%", lambda cmd: b"\r\nm-ready\r\n", {"rails": ["CH1", "CH2"]}),
        ):
            device, path = stack.enter_context(_pty_device(terminator, closing))
            meter = cls(path, exclusive=False, reconnect=False, **kwargs)
            meter.transport.open()
            meter.transport.set_sink(meter._on_data)
            stack.callback(meter.transport.close)
            meters.append((meter, device))

        def run(data: bytes) -> Any:
            which = data[0] % 3 if data else 0
            if which == 2:
                return parse_metadata(data[1:].decode("latin-1"))
            meter, device = meters[which]
            device.script = data[1:].split(b"\x00")
            try:
                meter.setup()
                return meter.info
            except BridgeError as e:
                return e
            finally:
                meter.transport.flush_stale(quiet_s=0.005, max_s=0.05)
                meter.drain_replies()
                device.script = []

        yield run


def meter_setup_seeds() -> List[bytes]:
    """Per command, what comes before the device's closing ``ack <command>`` / ``m-ready``
    (split at NUL); PPK2 metadata as a whole."""
    lpm = [b"PowerShield > ", b"", b"PowerShield > ack version 1.0.6\r\n"]
    ina = [
        b"",  # the stop% sent first
        b"m-name-inameter-[halofarm-inameter v1]",
        b"m-info-[proto=1,fw=0.3,chip=ina3221]\r\nm-chan-[1,VDD,100000]\r\nm-chan-[2,VIO,100000]",
        b"",
    ]
    ppk2 = b"Calibrated: 0\nR0: 1031.64\nR1: 101.65\nGS0: 0.00\nGI0: 1.0\nHW: 9173\nIA: 56\nEND\n"
    return [
        bytes([0]) + b"\x00".join(lpm),
        bytes([0]) + b"PowerShield > error htc\r\nError detail: busy",
        bytes([1]) + b"\x00".join(ina),
        bytes([2]) + ppk2,
    ]


# --------------------------------------------------------------------------- registry

# name -> (target, seeds, packages to instrument under atheris)
TARGETS: Dict[str, Tuple[Callable[[], Any], Callable[[], List[bytes]], Tuple[str, ...]]] = {
    "protocol": (protocol_decode, protocol_seeds, ("protocol",)),
    "protocol_topic": (protocol_topic, lambda: list(TOPIC_SEEDS), ("protocol",)),
    "campaign": (campaign_toml, lambda: list(CAMPAIGN_SEEDS), ("coordinator.campaign",)),
    "dataset": (dataset_csv, lambda: list(DATASET_SEEDS), ("coordinator.dataset",)),
    "tflite": (tflite_info, tflite_seeds, ("coordinator.zoo",)),
    "manifest": (zoo_manifest, lambda: list(MANIFEST_SEEDS), ("coordinator.zoo",)),
    "agent_config": (
        agent_config,
        lambda: list(AGENT_CONFIG_SEEDS),
        ("agent", "power", "firmware_bridge"),
    ),
    "halo_checkpoint": (halo_checkpoint, halo_checkpoint_seeds, ("halo",)),
    "halo_table": (halo_table, lambda: list(HALO_TABLE_SEEDS), ("halo",)),
    "power_sysfs": (power_sysfs, power_seeds, ("power", "agent")),
    "tegrastats": (tegrastats_log, lambda: list(TEGRASTATS_SEEDS), ("power",)),
    "eembc_dut": (eembc_dut, dut_seeds, ("firmware_bridge",)),
    "meter_stream": (meter_stream, meter_seeds, ("firmware_bridge",)),
    "meter_setup": (meter_setup, meter_setup_seeds, ("firmware_bridge",)),
}
