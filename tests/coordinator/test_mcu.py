"""`halo-coord mcu bench` end to end: real mosquitto, a real agent whose config attaches a
fake MLPerf Tiny DUT and a fake PPK2 on one fake board (in-process pyserial URL schemes)."""

from __future__ import annotations

import json
import uuid

from tests.coordinator.farm_support import LocalAgent, coord, wait_online


def test_mcu_bench_through_the_farm(tmp_path, mosquitto):
    env = {"HALOFARM_BROKER_URL": mosquitto.url, "HALOFARM_STORE": str(tmp_path / "store.sqlite")}
    board = f"b{uuid.uuid4().hex[:8]}"
    extra = (
        "\n[[power.meters]]\n"
        f'name = "ppk"\nkind = "ppk2"\nurl = "fake-ppk2://?board={board}"\n'
        "[[mcu.duts]]\n"
        f'name = "kws"\nurl = "fake-dut://kws01?board={board}&infer_us=1800"\nmeter = "ppk"\n'
    )
    agent = LocalAgent(tmp_path, "mcu-host", mosquitto.url, extra_config=extra).start()
    try:
        wait_online([agent], env)
        out = coord("mcu", "bench", "--device", "mcu-host", "--dut", "nosuch", env=env)
        assert out.returncode == 2 and "has no DUT 'nosuch' (its caps list: kws;" in out.stderr
        out = coord("mcu", "bench", "--device", "mcu-host", "--dut", "kws", "--windows", "2",
                    "--min-window-s", "0.3", "--json", env=env)  # fmt: skip
        assert out.returncode == 0, out.stderr + agent.log.read_text()[-2000:]
        (row,) = json.loads(out.stdout)
        assert row["status"] == "ok" and row["runtime"] == "mlperf-tiny-dut"
        assert 1.7e6 < row["p50_ns"] < 1.9e6  # 1800 us per inference, from the DUT's laps
        # a fake meter says so: its energy is labelled simulated, never measured
        assert row["e_per_inference_mj"] > 0 and row["energy_method"] == "simulated"
        listed = coord("results", "--json", "--no-sync", env=env)
        assert [r["result_id"] for r in json.loads(listed.stdout)] == [row["result_id"]]
    finally:
        agent.stop()
