"""Which broker and which store a `halo-coord` command uses.

Broker: `--broker URL`, else `$HALOFARM_BROKER_URL`, else the managed broker if it is running
(`halo-coord broker start`). An mqtts:// broker is verified against `$HALOFARM_BROKER_CA_FILE`
if set, else the system CAs; the managed secure broker (`halo-coord broker secure`) is reached
with the coordinator's own credentials and verified against its CA.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from dataclasses import dataclass, field, replace
from pathlib import Path

import paho.mqtt.client as mqtt

from coordinator.broker import ManagedBroker, default_state_dir
from coordinator.errors import UserError
from coordinator.security import SecureSetup

BROKER_ENV = "HALOFARM_BROKER_URL"
CA_ENV = "HALOFARM_BROKER_CA_FILE"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class BrokerTarget:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    @property
    def url(self) -> str:
        """The URL without credentials, for messages and tables."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def configure(self, client: mqtt.Client) -> None:
        """Credentials and TLS on a paho client before it connects."""
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            # Hostname checking stays on: the broker's certificate must name self.host.
            client.tls_set(ca_certs=self.ca_file, cert_reqs=ssl.CERT_REQUIRED)


def parse_broker_url(url: str) -> BrokerTarget:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise UserError(f"broker URL {url!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise UserError(f"broker URL {url!r}: the port must be a number 1-65535") from None
    return BrokerTarget(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=urllib.parse.unquote(parts.username) if parts.username else None,
        password=urllib.parse.unquote(parts.password) if parts.password else None,
    )


def resolve_broker(url: str | None, state_dir: Path | None = None) -> BrokerTarget:
    url = url or os.environ.get(BROKER_ENV)
    if url:
        target = parse_broker_url(url)
        ca_file = os.environ.get(CA_ENV)
        if ca_file and target.tls:
            if not Path(ca_file).is_file():
                raise UserError(f"{CA_ENV}={ca_file}: no such file")
            target = replace(target, ca_file=ca_file)
        return target
    managed = ManagedBroker(state_dir or default_state_dir())
    status = managed.status()
    if not status.running:
        raise UserError(
            "no broker: start one with `halo-coord broker start`, or pass "
            f"--broker mqtt://HOST:PORT (or set {BROKER_ENV})"
        )
    target = parse_broker_url(status.url)
    if not status.tls:
        return target
    setup = SecureSetup(managed.state_dir)
    username, password = setup.coordinator_credentials()
    # The loopback listener lets the coordinator's clients pick their client ids; 127.0.0.1
    # is a name the certificate always carries.
    return replace(
        target,
        host="127.0.0.1",
        port=status.local_port or target.port,
        username=username,
        password=password,
        ca_file=str(setup.ca_file),
    )
