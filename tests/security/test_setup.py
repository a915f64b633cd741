"""`halo-coord broker secure` / `device add` as a user meets them: files, config, errors."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from coordinator.broker import BrokerConfig, BrokerError, render_config
from coordinator.cli import main
from coordinator.errors import UserError
from coordinator.security import SecureSetup, default_names
from coordinator.tlsgen import cert_names

from .conftest import run_cli


def run_main(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return exc.value.code, captured.out + captured.err


def test_tls_listener_config(tmp_path):
    cfg = BrokerConfig(
        state_dir=tmp_path,
        host="0.0.0.0",
        port=8883,
        password_file=tmp_path / "passwd",
        acl_file=tmp_path / "acl",
        cafile=tmp_path / "ca.pem",
        certfile=tmp_path / "server.pem",
        keyfile=tmp_path / "server.key",
    )
    lines = render_config(cfg).splitlines()
    assert lines[1:6] == [
        "listener 8883 0.0.0.0",
        f"cafile {tmp_path}/ca.pem",
        f"certfile {tmp_path}/server.pem",
        f"keyfile {tmp_path}/server.key",
        "tls_version tlsv1.2",
    ]
    assert "allow_anonymous false" in lines and f"acl_file {tmp_path}/acl" in lines
    assert cfg.url == "mqtts://0.0.0.0:8883"
    with pytest.raises(BrokerError, match="cafile, certfile and keyfile together"):
        render_config(BrokerConfig(state_dir=tmp_path, cafile=tmp_path / "ca.pem"))


def test_secure_setup_is_idempotent_and_names_are_added(tmp_path):
    state = tmp_path / "halofarm"
    run_cli("broker", "secure", "--state-dir", str(state))
    setup = SecureSetup(state / "broker")
    ca, coordinator = setup.ca_file.read_bytes(), setup.coordinator_file.read_bytes()
    assert set(default_names()) <= set(cert_names(setup.cert_file.read_bytes()))
    run_cli("device", "add", "pi-01", "--state-dir", str(state))
    out = run_cli(
        "broker", "secure", "--name", "broker.lab", "--name", "10.1.2.3", "--state-dir", str(state)
    )
    assert "broker.lab" in out and "10.1.2.3" in out
    assert set(cert_names(setup.cert_file.read_bytes())) >= {"broker.lab", "10.1.2.3", "localhost"}
    # The CA, the coordinator's and the devices' credentials survive.
    assert setup.ca_file.read_bytes() == ca and setup.coordinator_file.read_bytes() == coordinator
    assert setup.devices() == ["pi-01"]
    passwd = setup.passwd_file.read_text().splitlines()
    assert [line.split(":")[0] for line in passwd] == ["halo-coordinator", "pi-01"]


def test_device_add_prints_the_agent_config_once(tmp_path, capsys):
    state = tmp_path / "halofarm"
    run_cli("broker", "secure", "--state-dir", str(state))
    code, out = run_main(capsys, "device", "add", "pi-01", "--state-dir", str(state))
    assert code == 0
    assert 'device_id = "pi-01"' in out and 'username = "pi-01"' in out
    assert 'url = "mqtts://' in out and ":8883" in out and "command_key = " in out
    password = next(line for line in out.splitlines() if line.startswith("password = "))
    setup = SecureSetup(state / "broker")
    # Stored only as a hash: the snippet is the one place it is ever shown.
    for path in setup.dir.iterdir():
        assert password.split('"')[1] not in path.read_text(errors="replace"), path

    code, out = run_main(capsys, "device", "add", "pi-01", "--state-dir", str(state))
    assert code == 2 and out.count("\n") == 1 and "exists already" in out
    code, out = run_main(capsys, "device", "add", "bad/name", "--state-dir", str(state))
    assert code == 2 and "device id 'bad/name'" in out
    code, out = run_main(capsys, "device", "add", "halo-coordinator", "--state-dir", str(state))
    assert code == 2 and "coordinator's own user name" in out
    code, out = run_main(capsys, "device", "list", "--state-dir", str(state))
    assert (code, out) == (0, "pi-01\n")


def test_device_commands_need_the_secure_setup(tmp_path, capsys):
    code, out = run_main(capsys, "device", "add", "pi-01", "--state-dir", str(tmp_path))
    assert code == 2 and out.count("\n") == 1
    assert "run `halo-coord broker secure` first" in out


def test_secure_broker_refuses_a_foreign_password_file(tmp_path, capsys):
    state = tmp_path / "halofarm"
    run_cli("broker", "secure", "--state-dir", str(state))
    code, out = run_main(
        capsys, "broker", "start", "--password-file", str(tmp_path / "p"), "--state-dir", str(state)
    )
    assert code == 2 and "uses its own password file" in out


def test_missing_cryptography_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cryptography", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install 'halofarm\[secure\]'"):
        SecureSetup(Path(tmp_path)).init([])


def test_ca_file_for_an_external_mqtts_broker(tmp_path, monkeypatch):
    from coordinator.connect import resolve_broker

    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    monkeypatch.setenv("HALOFARM_BROKER_URL", "mqtts://coord:pw@broker.lab")
    monkeypatch.setenv("HALOFARM_BROKER_CA_FILE", str(ca))
    target = resolve_broker(None)
    assert (target.host, target.port, target.tls, target.ca_file) == (
        "broker.lab",
        8883,
        True,
        str(ca),
    )
    assert "pw" not in repr(target)
    monkeypatch.setenv("HALOFARM_BROKER_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(UserError, match="HALOFARM_BROKER_CA_FILE=.*no such file"):
        resolve_broker(None)


def test_device_url_defaults_to_the_first_given_name(tmp_path):
    state = tmp_path / "halofarm"
    run_cli("broker", "secure", "--state-dir", str(state))
    out = run_cli("device", "add", "pi-01", "--state-dir", str(state))
    assert f'url = "mqtts://{default_names()[-1]}:8883"' in out  # this host's name
    run_cli("broker", "secure", "--name", "10.1.2.3", "--state-dir", str(state))
    out = run_cli("device", "add", "pi-02", "--state-dir", str(state))
    assert 'url = "mqtts://10.1.2.3:8883"' in out


def test_devices_added_at_the_same_time_are_all_kept(tmp_path):
    """Each `device add` reads the device list, adds one and writes it back; without a lock
    two at once both write what they read, and one device is lost."""
    import threading

    state = tmp_path / "halofarm"
    run_cli("broker", "secure", "--state-dir", str(state))
    names = [f"pi-{i:02d}" for i in range(12)]
    start = threading.Barrier(len(names))
    errors = []

    def add(name: str) -> None:
        setup = SecureSetup(state / "broker")  # its own, like a separate process
        start.wait()
        try:
            setup.add_device(name)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    setup = SecureSetup(state / "broker")
    assert setup.devices() == names
    users = [line.split(":")[0] for line in setup.passwd_file.read_text().splitlines()]
    assert users == ["halo-coordinator", *names]


def test_broker_status_warns_before_the_server_certificate_expires(tmp_path, capsys, monkeypatch):
    from coordinator import tlsgen

    state = tmp_path / "halofarm"
    run_cli("broker", "secure", "--state-dir", str(state))
    code, out = run_main(capsys, "broker", "status", "--state-dir", str(state))
    assert code in (0, None) and "warning" not in out  # a fresh 2-year certificate
    monkeypatch.setattr(tlsgen, "SERVER_DAYS", 10)
    run_cli("broker", "secure", "--renew-cert", "--state-dir", str(state))
    code, out = run_main(capsys, "broker", "status", "--state-dir", str(state))
    (warning,) = [line for line in out.splitlines() if "warning" in line]
    assert "server certificate" in warning and "in 10 days" in warning
    assert "halo-coord broker secure --renew-cert" in warning
    setup = SecureSetup(state / "broker")
    (expired,) = setup.expiry_warnings(now=time.time() + 11 * 86400)
    assert "expired on" in expired and "boards cannot connect" in expired


def test_broker_status_without_cryptography_still_answers(tmp_path, capsys, monkeypatch):
    state = tmp_path / "halofarm"
    run_cli("broker", "secure", "--state-dir", str(state))
    for name in [m for m in sys.modules if m.startswith("cryptography")]:
        monkeypatch.setitem(sys.modules, name, None)  # uninstalled since the setup was made
    code, out = run_main(capsys, "broker", "status", "--state-dir", str(state))
    assert code in (0, None) and "not running" in out
    (warning,) = [line for line in out.splitlines() if "warning" in line]
    assert "cannot check the certificates' expiry" in warning and "halofarm[secure]" in warning
