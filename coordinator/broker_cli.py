"""`halo-coord broker ...`: start, inspect and stop the managed mosquitto broker."""

from __future__ import annotations

import json
from pathlib import Path

import click

from coordinator.broker import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    MOSQUITTO_ENV,
    SECURE_HOST,
    SECURE_LOCAL_PORT,
    SECURE_PORT,
    STATE_DIR_ENV,
    BrokerConfig,
    BrokerError,
    BrokerStatus,
    ManagedBroker,
    default_state_dir,
)
from coordinator.errors import UserError
from coordinator.security import SecureSetup

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
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help=f"[default: {DEFAULT_PORT}; {SECURE_PORT} once `broker secure` has run]",
)
@click.option(
    "--host",
    help="Address to listen on. A non-loopback address (e.g. 0.0.0.0 for boards on the LAN) "
    f"needs --password-file or `broker secure`. [default: {DEFAULT_HOST}; "
    f"{SECURE_HOST} once `broker secure` has run]",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="mosquitto_passwd file; turns anonymous access off.",
)
@click.option(
    "--local-port",
    type=click.IntRange(1, 65535),
    help="Secure broker only: its second TLS listener, on 127.0.0.1, for this coordinator's "
    f"own clients (the main one ties client ids to usernames). [default: {SECURE_LOCAL_PORT}]",
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
def start(port, host, password_file, local_port, binary, state_dir, as_json):
    """Start the broker in the background; it keeps running after this command returns.

    After `halo-coord broker secure` it is the production broker: TLS only (mqtts, port 8883),
    a password per device, the ACL, no anonymous clients.

    \b
    Examples:
      halo-coord broker start
      halo-coord broker start --host 0.0.0.0 --password-file ~/.halofarm/passwd
    """
    managed = _broker(state_dir)
    secure = SecureSetup(managed.state_dir)
    if secure.exists():
        if password_file is not None:
            raise BrokerError(
                f"the secure broker uses its own password file ({secure.passwd_file}); "
                "drop --password-file and add devices with `halo-coord device add NAME`"
            )
        cfg = BrokerConfig(
            state_dir=managed.state_dir,
            host=host or SECURE_HOST,
            port=port or SECURE_PORT,
            password_file=secure.passwd_file,
            acl_file=secure.acl_file,
            cafile=secure.ca_file,
            certfile=secure.cert_file,
            keyfile=secure.key_file,
            local_port=local_port or SECURE_LOCAL_PORT,
        )
    else:
        if local_port is not None:
            raise BrokerError("--local-port is for the secure broker (`halo-coord broker secure`)")
        cfg = BrokerConfig(
            state_dir=managed.state_dir,
            host=host or DEFAULT_HOST,
            port=port or DEFAULT_PORT,
            password_file=password_file,
        )
    st = managed.start(cfg, binary)
    _warn_expiry(secure)
    if as_json:
        click.echo(json.dumps(st.to_dict()))
    elif st.already_running:
        click.echo(f"broker already running at {st.url} (pid {st.pid}); stop it to change options")
    else:
        click.echo(f"broker started at {st.url} (pid {st.pid}, {st.version or 'mosquitto'})")
        if st.local_port is not None:
            click.echo(f"coordinator listener: mqtts://127.0.0.1:{st.local_port}")
        click.echo(f"state: {st.state_dir}")


def _warn_expiry(setup: SecureSetup) -> None:
    if not setup.exists():
        return
    try:
        lines = setup.expiry_warnings()
    except UserError as exc:  # reading certificates needs the `secure` extra; the broker does not
        lines = [f"cannot check the certificates' expiry: {exc}"]
    for line in lines:
        click.echo(f"halo-coord: warning: {line}", err=True)


@broker.command()
@click.option(
    "--name",
    "names",
    multiple=True,
    help="A DNS name or IP address boards use to reach the broker (repeatable); the server "
    "certificate always also covers localhost, 127.0.0.1 and this host's name.",
)
@click.option("--renew-cert", is_flag=True, help="Issue a new server certificate.")
@state_dir_option
@json_option
def secure(names, renew_cert, state_dir, as_json):
    """Set up the production broker: own CA and TLS certificate, password file, ACL.

    Creates what is missing under the broker's state dir (secure/), keeping an existing CA and
    the devices' credentials. Restart the broker to use it; then add boards with
    `halo-coord device add NAME`. Needs `pip install 'halofarm[secure]'`.

    \b
    Examples:
      halo-coord broker secure --name broker.lab --name 192.168.1.10
      halo-coord broker stop; halo-coord broker start
    """
    setup = SecureSetup(_broker(state_dir).state_dir)
    cert_names = setup.init(list(names), renew_cert=renew_cert)
    if as_json:
        doc = {"dir": str(setup.dir), "ca_file": str(setup.ca_file), "names": cert_names}
        click.echo(json.dumps(doc | {"devices": setup.devices()}))
        return
    click.echo(f"secure broker setup in {setup.dir}")
    click.echo(f"CA certificate (copy to every board): {setup.ca_file}")
    click.echo(f"server certificate names: {', '.join(cert_names)}")
    click.echo(
        f"next: `halo-coord broker start` (mqtts on port {SECURE_PORT}; restart it if it runs), "
        "then `halo-coord device add NAME` per board"
    )


@broker.command()
@state_dir_option
@json_option
def status(state_dir, as_json):
    """Show whether the broker runs, where, since when, and which mosquitto."""
    managed = _broker(state_dir)
    st = managed.status()
    _warn_expiry(SecureSetup(managed.state_dir))
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
