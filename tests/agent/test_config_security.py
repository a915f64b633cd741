"""The agent config's command key and limits (Python 3.8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from protocol.auth import new_key, parse_key

EXAMPLE = Path(__file__).resolve().parents[2] / "packaging" / "agent.toml.example"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_have_no_key_and_bounded_limits(tmp_path):
    cfg = load_config(env={"STATE_DIRECTORY": str(tmp_path)})
    assert cfg.command_key is None and cfg.max_clock_skew_s == 120.0
    assert cfg.max_queued_jobs == 1000 and cfg.outbox_max_bytes == 256 * 1024**2


def test_inline_key_file_key_and_limits(tmp_path):
    key = new_key()
    cfg = load_config(
        write(
            tmp_path,
            f"max_queued_jobs = 10\noutbox_max_bytes = 2097152\n"
            f'[auth]\ncommand_key = "{key}"\nmax_clock_skew_s = 5\n',
        ),
        env={},
    )
    assert cfg.command_key == parse_key(key) and cfg.max_clock_skew_s == 5.0
    assert (cfg.max_queued_jobs, cfg.outbox_max_bytes) == (10, 2 * 1024**2)
    assert key not in repr(cfg)
    (tmp_path / "key").write_text(key + "\n")
    cfg = load_config(env={"HALOFARM_AUTH_COMMAND_KEY_FILE": str(tmp_path / "key")})
    assert cfg.command_key == parse_key(key)


def test_the_shipped_example_key_file_line_works(tmp_path):
    key = new_key()
    (tmp_path / "command.key").write_text(key)
    (tmp_path / "pass").write_text("s3cret\n")
    (tmp_path / "ca.pem").write_text("not checked here\n")
    text = EXAMPLE.read_text(encoding="utf-8").replace("# command_key_file", "command_key_file")
    for name in ("command.key", "broker.pass", "ca.pem"):
        target = "pass" if name == "broker.pass" else name
        text = text.replace(f"/etc/halofarm/{name}", str(tmp_path / target))
    assert load_config(write(tmp_path, text), env={}).command_key == parse_key(key)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[auth]\ncommand_key = "abc"\n', r"agent.toml:2: auth.command_key: a command key is 64"),
        (
            f'[auth]\ncommand_key = "{"ab" * 32}"\ncommand_key_file = "/x"\n',
            "also given as command_key",
        ),
        ('[auth]\ncommand_key_file = "/nonexistent/key"\n', "command_key_file: cannot read"),
        ("[auth]\nmax_clock_skew_s = -1\n", "max_clock_skew_s: must be a number"),
        ("outbox_max_bytes = 1000\n", "outbox_max_bytes: must be an integer in 1048576"),
        ("max_queued_jobs = 0\n", "max_queued_jobs: must be an integer in 1"),
        ('[auth]\nkey = "x"\n', "unknown key; known: command_key"),
    ],
)
def test_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), env={})
