"""`halo-coord device ...`: issue and revoke a board's broker credentials and command key."""

from __future__ import annotations

import json

import click

from coordinator.broker import SECURE_PORT, mqtt_url
from coordinator.broker_cli import _broker, json_option, state_dir_option
from coordinator.security import NewDevice, SecureSetup

BOARD_CA_PATH = "/etc/halofarm/ca.pem"


def agent_snippet(new: NewDevice, url: str, ca_path: str, ca_source: str) -> str:
    """The agent.toml lines for a new device (holds its secrets: shown once)."""
    return "\n".join(
        [
            f"# halofarm agent config for {new.device_id}: shown once, keep it secret (chmod 600).",
            f"# Copy {ca_source} to the board as {ca_path}.",
            f'device_id = "{new.device_id}"',
            "",
            "[broker]",
            f'url = "{url}"',
            f'username = "{new.device_id}"',
            f'password = "{new.password}"',
            f'ca_file = "{ca_path}"',
            "",
            "[auth]",
            f'command_key = "{new.command_key}"',
            "",
        ]
    )


@click.group()
def device() -> None:
    """Credentials of the boards on the secure broker (see `halo-coord broker secure`)."""


@device.command()
@click.argument("name")
@click.option(
    "--url",
    help="Broker URL the board connects to. [default: mqtts://NAME:PORT with the first name of "
    "the broker certificate that is not loopback (`broker secure --name`), else this host]",
)
@click.option(
    "--ca-path",
    default=BOARD_CA_PATH,
    show_default=True,
    help="Where the CA certificate will be on the board.",
)
@state_dir_option
@json_option
def add(name, url, ca_path, state_dir, as_json):
    """Add board NAME: a broker password and a command key, printed once as agent config.

    The running broker re-reads its password file at once. The coordinator signs every
    command for NAME with the key; the agent runs only commands that carry a valid signature.

    \b
    Example:
      halo-coord device add pi4-01 > pi4-01.toml   # then copy it to /etc/halofarm/agent.toml
    """
    managed = _broker(state_dir)
    setup = SecureSetup(managed.state_dir)
    new = setup.add_device(name)
    reloaded = managed.reload()
    if url is None:
        st = managed.status()
        url = mqtt_url(setup.public_name(), st.port or SECURE_PORT, tls=True)
    if as_json:
        doc = {
            "device_id": new.device_id,
            "url": url,
            "username": new.device_id,
            "password": new.password,
            "command_key": new.command_key,
            "ca_file": str(setup.ca_file),
            "broker_reloaded": reloaded,
        }
        click.echo(json.dumps(doc))
        return
    click.echo(agent_snippet(new, url, ca_path, str(setup.ca_file)), nl=False)


@device.command()
@click.argument("name")
@state_dir_option
def remove(name, state_dir):
    """Revoke board NAME's broker password and command key."""
    managed = _broker(state_dir)
    SecureSetup(managed.state_dir).remove_device(name)
    managed.reload()
    click.echo(f"device {name} removed; its agent can no longer connect")


@device.command("list")
@state_dir_option
@json_option
def list_(state_dir, as_json):
    """Boards that have credentials on the secure broker."""
    names = SecureSetup(_broker(state_dir).state_dir).require().devices()
    if as_json:
        click.echo(json.dumps(names))
    else:
        click.echo("\n".join(names) if names else "no devices")
