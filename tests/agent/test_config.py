"""Agent config: TOML file, HALOFARM_* overrides, defaults, and errors that say what to fix."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from agent.config import (
    BrokerConfig,
    ConfigError,
    default_device_id,
    default_state_dir,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "packaging" / "agent.toml.example"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path):
    cfg = load_config(env={"STATE_DIRECTORY": str(tmp_path)})
    assert cfg.device_id == default_device_id()
    assert cfg.state_dir == tmp_path
    assert cfg.db_path == tmp_path / "agent.db" and cfg.blob_dir == tmp_path / "blobs"
    assert cfg.heartbeat_s == 15.0
    assert cfg.cache_max_bytes == 1024**3
    assert cfg.tags == []
    assert cfg.broker == BrokerConfig()
    assert cfg.broker.session_expiry_s == 7 * 24 * 3600
    assert cfg.broker.inflight_window == 100


def test_the_shipped_example_parses(tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8")
    (tmp_path / "pass").write_text("s3cret\n")
    (tmp_path / "ca.pem").write_text("not checked here\n")
    text = text.replace("/etc/halofarm/broker.pass", str(tmp_path / "pass"))
    text = text.replace("/etc/halofarm/ca.pem", str(tmp_path / "ca.pem"))
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.device_id == "pi4-lab-01"
    assert cfg.tags == ["lab-a", "active-cooling"]
    b = cfg.broker
    assert (b.host, b.port, b.tls) == ("coordinator.lab", 8883, True)
    assert (b.username, b.password) == ("pi4-lab-01", "s3cret")
    assert b.ca_file == str(tmp_path / "ca.pem")
    assert "s3cret" not in repr(cfg)


def test_environment_overrides_the_file(tmp_path):
    path = write(
        tmp_path, 'device_id = "from-file"\nheartbeat_s = 30\n[broker]\nurl = "mqtt://a"\n'
    )
    env = {
        "HALOFARM_DEVICE_ID": "from-env",
        "HALOFARM_BROKER_URL": "mqtt://b:1999",
        "HALOFARM_HEARTBEAT_S": "2.5",
        "HALOFARM_TAGS": "x, y",
        "HALOFARM_STATE_DIR": str(tmp_path / "s"),
        "HALOFARM_BROKER_INFLIGHT_WINDOW": "7",
    }
    cfg = load_config(path, env=env)
    assert cfg.device_id == "from-env"
    assert (cfg.broker.host, cfg.broker.port) == ("b", 1999)
    assert cfg.heartbeat_s == 2.5 and cfg.tags == ["x", "y"]
    assert cfg.state_dir == tmp_path / "s"
    assert cfg.broker.inflight_window == 7


def test_credentials_in_the_url_are_decoded_and_kept_out_of_it(tmp_path):
    cfg = load_config(env={"HALOFARM_BROKER_URL": "mqtts://dev%40lab:p%3Ass@broker.lab"})
    b = cfg.broker
    assert (b.username, b.password, b.port, b.tls) == ("dev@lab", "p:ss", 8883, True)
    assert b.url == "mqtts://broker.lab:8883"


@pytest.mark.parametrize(
    "text, message",
    [
        ('devcie_id = "x"\n', r"agent\.toml:1: devcie_id: unknown key; known: device_id"),
        ('\n[broker]\nurl = "mqtt://a"\nport = 1\n', r"agent\.toml:4: broker\.port: unknown key"),
        ("[brokr]\nurl = 1\n", r"agent\.toml:1: brokr: unknown key"),
        ('broker = "mqtt://a"\n', r"broker: must be a table"),
        ('device_id = "bad/id"\n', r"device_id: must be 1-64 letters.*'bad/id'"),
        ("heartbeat_s = 0\n", r"heartbeat_s: must be a number in 1\.0\.\.3600\.0, got 0"),
        ("heartbeat_s = true\n", r"heartbeat_s: must be a number"),
        ("cache_max_bytes = 10\n", r"cache_max_bytes: must be an integer in"),
        ("tags = [1]\n", r"tags: must be a list of non-empty strings"),
        ('[broker]\nurl = "http://a"\n', r"broker\.url: must start with mqtt:// or mqtts://"),
        ('[broker]\nurl = "mqtt://"\n', r"no host"),
        ('[broker]\nurl = "mqtt://a:99999"\n', r"invalid port"),
        ('[broker]\nurl = "mqtt://a/topic"\n', r"no path or query"),
        ('[broker]\nurl = "mqtt://u:p@a"\npassword = "q"\n', r"password is given 2 times"),
        ('[broker]\npassword = "q"\n', r"a password needs a username"),
        ('[broker]\nca_file = "/x.pem"\n', r"broker\.ca_file: only used with an mqtts:// URL"),
        ('[broker]\nurl = "mqtts://a"\nca_file = "/no/such.pem"\n', r"no such file"),
        ('[broker]\nusername = "u"\npassword_file = "/no/such"\n', r"password_file: cannot read"),
        ("[broker]\ninflight_window = 0\n", r"inflight_window: must be an integer in 1\.\.500"),
        ('device_id = "x"\ndevice_id = "y"\n', r"invalid TOML"),
    ],
)
def test_errors_name_the_key_and_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), env={})


def test_errors_from_the_environment_name_the_variable():
    with pytest.raises(ConfigError, match="environment variable HALOFARM_HEARTBEAT_S"):
        load_config(env={"HALOFARM_HEARTBEAT_S": "often"})


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.toml", env={})


@pytest.mark.parametrize(
    "hostname, expected",
    [
        ("pi4-lab-01", "pi4-lab-01"),
        ("jetson nano.local", "jetson-nano.local"),
        ("--weird/name#", "weird-name-"),
        ("ü", "device"),
        ("x" * 80, "x" * 64),
    ],
)
def test_default_device_id_is_a_valid_topic_level(hostname, expected):
    assert default_device_id(hostname) == expected


def test_default_state_dir_prefers_systemd_state_directory():
    assert default_state_dir({"STATE_DIRECTORY": "/var/lib/halofarm:/x"}) == Path(
        "/var/lib/halofarm"
    )
    expected = "/var/lib/halofarm" if os.geteuid() == 0 else "halofarm"
    assert expected in str(default_state_dir({}))


METER = '[[power.meters]]\nname = "ppk"\nkind = "ppk2"\nurl = "fake-ppk2://"\n'
DUT = '[[mcu.duts]]\nname = "l4r5"\nurl = "fake-dut://ic01"\nmeter = "ppk"\n'


def test_meters_and_duts(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text(METER + DUT)
    cfg = load_config(path, env={})
    assert [m.name for m in cfg.power.options.meters] == ["ppk"]
    assert cfg.dut("l4r5").meter == "ppk" and cfg.dut("l4r5").port.url == "fake-dut://ic01"
    for text, message in [
        (DUT, "names meter 'ppk', which no [[power.meters]] entry defines (defined: none)"),
        (METER + METER, "power.meters: names must be unique, got ppk, ppk"),
        ("[power]\nmeters = 3\n", "must be an array of tables"),
        (METER.replace("ppk2", "nosuch", 1), "power.meters[0]"),
        (METER + DUT.replace('url = "fake-dut://ic01"\n', ""), "mcu.duts[0]: 'url' is required"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(path, env={})
