"""A read-only store: commands that write fail with one line and exit 2, ingest (standalone or
inside a command) refuses to start, and commands that only read still work.

Read-only for real: as a normal user the file is chmod 0444; as root, whom permission bits do
not stop, the file is bind-mounted read-only inside a private mount namespace (`unshare -m`)
that lives only as long as the command, so nothing is left mounted.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.store import Store

REPO = Path(__file__).resolve().parents[2]
CSV = "device,space,arch,latency_ms\nro-dev,nb201,1,2.5\n"
RO_MOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'


def _can_remount() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", RO_MOUNT, "/", "true"], capture_output=True, timeout=30
    )
    return probe.returncode == 0


@pytest.fixture
def readonly(tmp_path):
    """run(*argv) -> CompletedProcess with the store file read-only for that process."""
    store = tmp_path / "store.sqlite"
    with Store(store) as s:
        s.execute("INSERT INTO meta (key, value) VALUES ('marker', 'kept')")
    root = os.geteuid() == 0
    if root and not _can_remount():
        pytest.skip("running as root without CAP_SYS_ADMIN: no way to make a file read-only")
    if not root:
        store.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HALOFARM_STORE": str(store)}

    def run(*argv: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, *argv]
        if root:
            cmd = ["unshare", "-m", "sh", "-c", RO_MOUNT, str(store), *cmd]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path
        )

    yield run, store, tmp_path
    store.chmod(stat.S_IRUSR | stat.S_IWUSR)


def _one_line_error(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr
    for word in words:
        assert word in out.stderr, out.stderr


def test_writing_commands_fail_with_one_line_and_reads_still_work(readonly):
    run, store, tmp = readonly
    (tmp / "lat.csv").write_text(CSV)
    out = run("-m", "coordinator", "dataset", "import", str(tmp / "lat.csv"))
    _one_line_error(out, "read-only", "--store")
    listed = run("-m", "coordinator", "dataset", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "[]"
    with Store(store) as s:  # untouched
        assert s.query("SELECT value FROM meta WHERE key = 'marker'") == [("kept",)]
        assert s.query("SELECT count(*) FROM imported")[0][0] == 0


def test_ingest_refuses_to_start_on_a_read_only_store(readonly, mosquitto):
    run, store, _ = readonly
    worker = run("-m", "coordinator.ingest", "--host", mosquitto.host, "--port",
                 str(mosquitto.port), "--store", str(store))  # fmt: skip
    _one_line_error(worker, "cannot write to the store", str(store))
    assert "ready" not in worker.stdout
    # Commands that ingest on their way (here: refreshing the device list) refuse the same way.
    devices = run("-m", "coordinator", "devices", "--broker", mosquitto.url)
    _one_line_error(devices, "cannot write to the store")
