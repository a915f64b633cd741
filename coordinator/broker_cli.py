"""`halo-coord broker ...`: start, inspect and stop the managed mosquitto broker."""

from __future__ import annotations

import json
from pathlib import Path

import click

from coordinator.broker import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    MOSQUITTO_ENV,
    STATE_DIR_ENV,
    BrokerConfig,
    BrokerStatus,
    ManagedBroker,
    default_state_dir,
)

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=STATE_DIR_ENV,
    show_envvar=True,
    help="halofarm state directory; the broker keeps its config, database, log and pidfile "
    "in its broker/ subdirectory. [default: the platform's user state dir]",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _broker(state_dir: Path | None) -> ManagedBroker:
    return ManagedBroker(state_dir / "broker" if state_dir else default_state_dir())


@click.group()
def broker() -> None:
    """Run the MQTT broker (mosquitto) that agents and the coordinator talk through."""


@broker.command()
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to listen on. A non-loopback address (e.g. 0.0.0.0 for boards on the LAN) "
    "needs --password-file.",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="mosquitto_passwd file; turns anonymous access off.",
)
@click.option(
    "--mosquitto",
    "binary",
    envvar=MOSQUITTO_ENV,
    show_envvar=True,
    type=click.Path(dir_okay=False),
    help="mosquitto binary. [default: found on PATH or in the sbin directories]",
)
@state_dir_option
@json_option
def start(port, host, password_file, binary, state_dir, as_json):
    """Start the broker in the background; it keeps running after this command returns.

    \b
    Examples:
      halo-coord broker start
      halo-coord broker start --host 0.0.0.0 --password-file ~/.halofarm/passwd
    """
    managed = _broker(state_dir)
    cfg = BrokerConfig(
        state_dir=managed.state_dir, host=host, port=port, password_file=password_file
    )
    st = managed.start(cfg, binary)
    if as_json:
        click.echo(json.dumps(st.to_dict()))
    elif st.already_running:
        click.echo(f"broker already running at {st.url} (pid {st.pid}); stop it to change options")
    else:
        click.echo(f"broker started at {st.url} (pid {st.pid}, {st.version or 'mosquitto'})")
        click.echo(f"state: {st.state_dir}")


@broker.command()
@state_dir_option
@json_option
def status(state_dir, as_json):
    """Show whether the broker runs, where, since when, and which mosquitto."""
    st = _broker(state_dir).status()
    if as_json:
        click.echo(json.dumps(st.to_dict()))
        return
    click.echo(_status_line(st))
    click.echo(f"state: {st.state_dir}")


@broker.command()
@state_dir_option
@json_option
def stop(state_dir, as_json):
    """Stop the broker (SIGTERM, so it saves its database; SIGKILL after 10 s)."""
    before, killed = _broker(state_dir).stop()
    if as_json:
        doc = {"stopped": before.running, "killed": killed}
        doc |= {k: getattr(before, k) for k in ("pid", "url", "state_dir", "stale_pid")}
        click.echo(json.dumps(doc))
    elif not before.running:
        click.echo(_status_line(before))
    elif killed:
        click.echo(
            f"broker (pid {before.pid}) ignored SIGTERM and was killed; "
            "messages since its last save may be lost"
        )
    else:
        click.echo(f"broker stopped (pid {before.pid}, {before.url})")


def _status_line(st: BrokerStatus) -> str:
    if not st.running:
        stale = f" (removed stale pidfile of pid {st.stale_pid})" if st.stale_pid else ""
        return f"broker not running{stale}"
    up = f", up {_duration(st.uptime_s)}" if st.uptime_s is not None else ""
    return f"broker running at {st.url} (pid {st.pid}{up}, {st.version or 'mosquitto'})"


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
