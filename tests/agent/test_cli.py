"""`halo-agent` end to end through the real entry point (``python -m agent.cli``): exit codes,
one-line errors without tracebacks, parseable --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.bodies import BenchResult, Caps, unpack_ns

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--warmup-runs", "0", "--warmup-seconds", "0", "--min-runs", "5", "--min-seconds", "0"]


def agent(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})),
        timeout=120,
    )


def assert_one_line_error(r: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert r.returncode == code, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("INFO:")]
    assert len(lines) == 1, r.stderr
    assert text in lines[0]
    assert "Traceback" not in r.stderr


def test_bench_json_is_a_bench_result(tiny_model_file):
    r = agent("bench", tiny_model_file, *QUICK, "--seed", "7", "--json")
    assert r.returncode == 0, r.stderr
    result = BenchResult.from_dict(json.loads(r.stdout))
    assert result.status == "ok"
    assert result.spec.model_name == "tiny.tflite" and result.spec.seed == 7
    assert len(result.spec.model_sha256) == 64
    assert len(unpack_ns(result.raw_ns)) == result.stats.count >= 5


def test_bench_table(tiny_model_file):
    r = agent("bench", tiny_model_file, *QUICK, "--no-xnnpack", "--threads", "2", "--affinity", "0")
    assert r.returncode == 0, r.stderr
    assert "p50 / p90 / p99" in r.stdout
    assert "XNNPACK off (not delegated), 2 threads" in r.stdout


def test_failed_benchmark_exits_1_with_its_reason(tmp_path):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a model" * 100)
    assert_one_line_error(agent("bench", str(garbage)), 1, "benchmark failed: cannot load model")
    r = agent("bench", str(garbage), "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["status"] == "failed"


@pytest.mark.parametrize(
    "args, text",
    [
        (["bench", "missing.tflite"], "does not exist"),
        (["bench", "."], "is a directory"),
        (["bench", "MODEL", "--threads", "0"], "--threads: must be an int in 1..64, got 0"),
        (["bench", "MODEL", "--min-seconds", "5", "--max-seconds", "1"], "--min-seconds"),
        (["bench", "MODEL", "--affinity", "x"], "expected CPU numbers"),
        (["bench", "MODEL", "--min-runs", "1000000"], "exceeds the agent's limit"),
        (["bench", "MODEL", "--timeout", "-1"], "--timeout:"),
        (["bench", "MODEL", "--threads", "many"], "'many' is not a valid integer"),
        (["frobnicate"], "No such command"),
    ],
)
def test_usage_errors_are_one_line_exit_2(tiny_model_file, args, text):
    args = [tiny_model_file if a == "MODEL" else a for a in args]
    r = agent(*args)
    assert_one_line_error(r, 2, "halo-agent: error: ")
    assert text in r.stderr


def test_info_json_is_caps():
    r = agent("info", "--json")
    assert r.returncode == 0, r.stderr
    caps = Caps.from_dict(json.loads(r.stdout))
    assert caps.cores >= 1 and caps.python.startswith("{}.{}.".format(*sys.version_info[:2]))


def test_info_table():
    r = agent("info")
    assert r.returncode == 0, r.stderr
    assert "xnnpack" in r.stdout and "runtime_version" in r.stdout


# --- power ---


@pytest.fixture(scope="module")
def sim_tx2(tmp_path_factory):
    from power.simboard import SimBoard

    board = SimBoard(str(tmp_path_factory.mktemp("sim") / "tx2"), "tx2-jp4", shuffle_seed=5)
    yield board.create()
    board.close()


def test_power_probe_json_lists_rails_total_and_settings(sim_tx2):
    r = agent("power", "probe", "--sysfs-root", sim_tx2.root, "--seconds", "0.2", "--json")
    assert r.returncode == 0, r.stderr
    probe = json.loads(r.stdout)
    assert probe["simulated"] and probe["board_model"] == "NVIDIA Jetson TX2 Developer Kit"
    (source,) = probe["sources"]
    assert source["name"] == "ina3221x" and source["method"] == "simulated"
    assert source["total"]["rails"] == ["VDD_IN"]
    rails = {r["rail"]: r for r in source["rails"]}
    assert source["total_mw"] == rails["VDD_IN"]["mw"] == sim_tx2.actual("VDD_IN")
    assert rails["VDD_IN"]["n"] >= 5 and rails["VDD_IN"]["mv"] == 19000
    assert {c["running_mode"] for c in source["chips"]} == {1}
    assert source["sampler"]["n_samples"] >= 5


def test_power_probe_table_and_empty_board(sim_tx2, tmp_path):
    r = agent("power", "probe", "--sysfs-root", sim_tx2.root, "--seconds", "0")
    assert r.returncode == 0, r.stderr
    assert "source ina3221x (ina3221-iio, simulated)" in r.stdout
    assert "total: VDD_IN = " in r.stdout and "VDD_SYS_DDR" in r.stdout
    r = agent("power", "probe", "--sysfs-root", str(tmp_path), "--seconds", "0")
    assert r.returncode == 0 and "no power sources found" in r.stdout


def test_power_tegrastats_summary(tmp_path):
    log = tmp_path / "ts.log"
    log.write_text(
        "RAM 2305/7846MB CPU [2%@345,off] VDD_IN 3235/3235 VDD_SYS_CPU 228/228\n"
        "garbage line\n"
        "RAM 2305/7846MB CPU [2%@345,off] VDD_IN 3335/3285 VDD_SYS_CPU 428/328\n"
    )
    r = agent("power", "tegrastats", str(log), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["rails"]["VDD_IN"]["mean_mw"] == 3285.0
    assert summary["total_rail"] == "VDD_IN" and summary["total_mean_mw"] == 3285.0
    r = agent("power", "tegrastats", str(log))
    assert r.returncode == 0 and "VDD_SYS_CPU" in r.stdout
    empty = tmp_path / "empty.log"
    empty.write_text("nothing to see\n")
    assert_one_line_error(agent("power", "tegrastats", str(empty)), 2, "no tegrastats rail")


def test_bench_with_power_on_a_simulated_board(tiny_model_file, sim_tx2):
    r = agent(
        "bench", tiny_model_file, *QUICK, "--power", "auto", "--sysfs-root", sim_tx2.root,
        "--energy-seconds", "0.5", "--idle-seconds", "0.2", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    energy = BenchResult.from_dict(json.loads(r.stdout)).energy
    assert energy["status"] == "ok" and energy["method"] == "simulated"
    assert energy["window"]["seconds"] >= 0.5
    assert energy["p_mean_mw"] == pytest.approx(sim_tx2.actual("VDD_IN"))
    r = agent(
        "bench", tiny_model_file, *QUICK, "--power", "ina3221x", "--sysfs-root", sim_tx2.root,
        "--energy-seconds", "0.3", "--idle-seconds", "0",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "energy / inference" in r.stdout and "total = VDD_IN" in r.stdout


@pytest.mark.parametrize(
    "args, text",
    [
        (["--power", "ina3221x", "--sysfs-root", "/nonexistent"], "no power source 'ina3221x'"),
        (["--power", "bad name!"], "--power: must be 'none', 'auto' or a power source name"),
        (["--power", "auto", "--energy-seconds", "0"], "--energy-seconds:"),
    ],
)
def test_bench_power_errors_are_one_line(tiny_model_file, args, text):
    r = agent("bench", tiny_model_file, *args)
    assert_one_line_error(r, 2, text)


def test_bad_power_config_is_one_line(tiny_model_file, tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text("[power]\nsampler = 'fork'\n")
    r = agent("power", "probe", "--config", str(config))
    assert_one_line_error(r, 2, "power.sampler: must be 'thread' or 'process'")


def test_info_lists_power_sources(sim_tx2):
    r = agent("info", "--sysfs-root", sim_tx2.root, "--json")
    assert r.returncode == 0, r.stderr
    assert Caps.from_dict(json.loads(r.stdout)).power_sources == ["ina3221x"]


def test_mcu_probe_and_bench_against_fakes() -> None:
    import json

    r = agent("mcu", "probe", "--port", "fake-dut://kws01?name=stm32l4", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["identity"]["name"] == "stm32l4" and doc["identity"]["model"] == "kws01"
    port, meter = "fake-dut://ic01?board=cli1&infer_us=1500", "fake-ppk2://?board=cli1"
    r = agent("mcu", "bench", "--port", port, "--meter", meter, "--windows", "2",
              "--min-window-s", "0.3", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [w["status"] for w in doc["windows"]] == ["ok", "ok"]
    assert abs(doc["latency_us_median"] - 1500) < 75
    assert all(w["energy"]["e_per_inference_uj"] > 0 for w in doc["windows"])
    assert_one_line_error(
        agent("mcu", "probe", "--port", "/dev/nonexistent-tty"), 2, "no such port"
    )
    assert_one_line_error(agent("mcu", "probe"), 2, "give --port URL (or --list)")


def test_power_probe_lists_the_serial_meters_of_the_config(tmp_path) -> None:
    import json

    config = tmp_path / "agent.toml"
    config.write_text(
        '[[power.meters]]\nname = "bench-ppk"\nkind = "ppk2"\nurl = "fake-ppk2://?board=probe1"\n'
    )
    r = agent("power", "probe", "--config", str(config), "--seconds", "0.3", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    sources = doc["sources"] if isinstance(doc, dict) else doc
    (meter,) = [s for s in sources if s["name"] == "bench-ppk"]
    assert meter["kind"] == "serial-meter" and meter["method"] == "simulated"  # a fake says so
    config.write_text('[[power.meters]]\nname = "x"\nkind = "nosuch"\nurl = "/dev/ttyACM0"\n')
    assert_one_line_error(agent("power", "probe", "--config", str(config)), 2, "kind")
