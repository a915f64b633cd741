"""The production broker's secrets: TLS files, mosquitto password file and ACL, the coordinator's
own broker credentials and each device's command key.

Everything lives in the broker state directory's `secure/` subdirectory; files holding secrets
are written mode 0600 (atomically, via a temporary file). `halo-coord broker secure` creates it;
from then on `halo-coord broker start` runs a TLS-only, password-protected broker with the ACL.

Who may do what (the ACL file, rendered by `render_acl`): the coordinator user reads and writes
the whole `halo/v1/` tree; a device's username is its device id, and it may only subscribe to its
own `cmd` and `blob/data` topics and publish to the topics an agent publishes under its own
`halo/v1/dev/<id>/`. Model chunks travel on the device's own `blob/data` topic, so a device can
read only the blobs it is sent. Anonymous clients are refused. On the devices' listener a
client's id is its username (`use_username_as_clientid`), so no device can take over another's
session; the coordinator connects through a loopback-only listener (see `BrokerConfig`).

mosquitto password lines are `user:$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>`
(salt 12 bytes, 64-byte hash, 101 iterations: what `mosquitto_passwd` 2.0 writes; checked against
its output in tests/security), so no mosquitto binary is needed to add a device.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from coordinator import tlsgen
from coordinator.errors import UserError
from protocol.auth import new_key, parse_key
from protocol.fields import ID_RE
from protocol.topics import DEVICE_LEAVES, JOB_LEAVES, PREFIX

COORDINATOR_USER = "halo-coordinator"
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
SECURE_DIRNAME = "secure"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
CERT_WARN_DAYS = 30  # `broker start`/`status` warn this long before a certificate expires
# Topics an agent subscribes to; it publishes on every other leaf of its own subtree.
DEVICE_READS = ("cmd", "blob_data")


class SecurityError(UserError):
    """The secure setup is missing or inconsistent; the message says what to run."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, PBKDF2_ITERATIONS, 64)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def render_acl(coordinator_user: str = COORDINATOR_USER) -> str:
    lines = [
        "# mosquitto ACL written by halofarm (halo-coord broker secure); rewritten by it.",
        f"user {coordinator_user}",
        f"topic readwrite {PREFIX}/#",
        "",
        "# Every other user is a device whose username is its device id (%u).",
    ]
    for leaf, path in DEVICE_LEAVES.items():
        access = "read" if leaf in DEVICE_READS else "write"
        lines.append(f"pattern {access} {PREFIX}/dev/%u/{path}")
    lines += [f"pattern write {PREFIX}/dev/%u/job/+/{path}" for path in JOB_LEAVES.values()]
    return "\n".join(lines) + "\n"


def write_secret(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an old tmp file may have had another mode
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def default_names() -> list[str]:
    """Names the broker certificate always carries (loopback, so the coordinator can connect)."""
    names = ["localhost", "127.0.0.1"]
    host = socket.gethostname()
    if host and host not in names:
        names.append(host)
    return names


@dataclass(frozen=True)
class NewDevice:
    device_id: str
    password: str
    command_key: str


class SecureSetup:
    """The files under `<broker state dir>/secure/`."""

    def __init__(self, broker_state_dir: Path) -> None:
        self.dir = Path(broker_state_dir).resolve() / SECURE_DIRNAME
        self.ca_file = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"
        self.cert_file = self.dir / "server.pem"
        self.key_file = self.dir / "server.key"
        self.passwd_file = self.dir / "passwd"
        self.acl_file = self.dir / "acl"
        self.coordinator_file = self.dir / "coordinator.json"
        self.devices_file = self.dir / "devices.json"
        self.lock_file = self.dir / ".lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time: two `device add` at once would each save the device list
        they read, and the later one would drop the other's device."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def exists(self) -> bool:
        return self.coordinator_file.is_file()

    def require(self) -> SecureSetup:
        if not self.exists():
            raise SecurityError(
                f"no secure broker setup in {self.dir}: run `halo-coord broker secure` first"
            )
        return self

    # -- creating ----------------------------------------------------------------------------

    def init(self, names: list[str], renew_cert: bool = False) -> list[str]:
        """Create what is missing (CA, server certificate for `names` plus the defaults,
        coordinator credentials, ACL, password file); returns the certificate's names. An
        existing CA and device credentials are kept; the server certificate is renewed when
        asked or when a name is missing from it."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        with self._locked():
            return self._init(names, renew_cert)

    def _init(self, names: list[str], renew_cert: bool) -> list[str]:
        wanted = list(dict.fromkeys([*names, *default_names()]))
        if not self.ca_file.is_file():
            ca = tlsgen.make_ca()
            write_secret(self.ca_key, ca.key)
            self.ca_file.write_bytes(ca.cert)
            renew_cert = True
        if not renew_cert and self.cert_file.is_file():
            have = tlsgen.cert_names(self.cert_file.read_bytes())
            renew_cert = not set(wanted) <= set(have)
            # Names given now first: the first one not loopback is the boards' default URL.
            wanted = list(dict.fromkeys([*names, *have, *wanted]))
        if renew_cert or not self.cert_file.is_file():
            ca = tlsgen.Pem(self.ca_file.read_bytes(), self.ca_key.read_bytes())
            server = tlsgen.make_server_cert(ca, wanted)
            write_secret(self.key_file, server.key)
            self.cert_file.write_bytes(server.cert)
        if not self.coordinator_file.is_file():
            creds = {"username": COORDINATOR_USER, "password": secrets.token_urlsafe(32)}
            write_secret(self.coordinator_file, json.dumps(creds).encode())
        self.acl_file.write_text(render_acl(), encoding="utf-8")
        self._write_passwd()
        return tlsgen.cert_names(self.cert_file.read_bytes())

    def add_device(self, device_id: str) -> NewDevice:
        self.require()
        if not ID_RE.fullmatch(device_id):
            raise SecurityError(
                f"device id {device_id!r}: use 1-64 letters, digits, '_', '.', '-' starting "
                "with a letter or digit"
            )
        if device_id == COORDINATOR_USER:
            raise SecurityError(f"{COORDINATOR_USER!r} is the coordinator's own user name")
        with self._locked():
            return self._add_device(device_id)

    def _add_device(self, device_id: str) -> NewDevice:
        devices = self._devices()
        if device_id in devices:
            raise SecurityError(
                f"device {device_id} exists already; `halo-coord device remove {device_id}` "
                "first to issue new credentials"
            )
        new = NewDevice(device_id, secrets.token_urlsafe(24), new_key())
        devices[device_id] = {
            "password_hash": hash_password(new.password),
            "command_key": new.command_key,
            "added_at": time.time(),
        }
        self._save_devices(devices)
        return new

    def remove_device(self, device_id: str) -> None:
        with self.require()._locked():
            devices = self._devices()
            if devices.pop(device_id, None) is None:
                raise SecurityError(f"no device {device_id} in {self.devices_file}")
            self._save_devices(devices)

    # -- reading -----------------------------------------------------------------------------

    def public_name(self) -> str:
        """The host boards connect to by default: the certificate's first non-loopback name."""
        names = tlsgen.cert_names(self.require().cert_file.read_bytes())
        return next((n for n in names if n not in LOOPBACK_NAMES), socket.gethostname())

    def devices(self) -> list[str]:
        return sorted(self._devices())

    def expiry_warnings(self, now: float | None = None) -> list[str]:
        """One line per certificate (server, CA) that has expired or expires within
        CERT_WARN_DAYS, saying what to run. Boards refuse an expired broker certificate, so
        the whole farm would go quiet."""
        now = time.time() if now is None else now
        out = []
        for what, path, fix in (
            ("server certificate", self.cert_file,
             "`halo-coord broker secure --renew-cert`, then restart the broker"),
            ("CA certificate", self.ca_file,
             "move secure/ aside, `halo-coord broker secure` and give every board the new CA "
             "file and credentials"),
        ):  # fmt: skip
            if not path.is_file():
                continue
            end = tlsgen.cert_not_after(path.read_bytes())
            days = (end.timestamp() - now) / 86400
            when = end.strftime("%Y-%m-%d %H:%M UTC")
            if days <= 0:
                out.append(f"the broker's {what} ({path}) expired on {when}; boards cannot "
                           f"connect: {fix}")  # fmt: skip
            elif days <= CERT_WARN_DAYS:
                out.append(f"the broker's {what} ({path}) expires on {when}, in {days:.0f} "
                           f"days: {fix}")  # fmt: skip
        return out

    def command_key(self, device_id: str) -> bytes | None:
        entry = self._devices().get(device_id)
        return None if entry is None else parse_key(entry["command_key"])

    def coordinator_credentials(self) -> tuple[str, str]:
        creds = json.loads(self.require().coordinator_file.read_text(encoding="utf-8"))
        return creds["username"], creds["password"]

    # -- internals ---------------------------------------------------------------------------

    def _devices(self) -> dict[str, dict]:
        try:
            return json.loads(self.devices_file.read_text(encoding="utf-8"))["devices"]
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError) as exc:
            raise SecurityError(f"{self.devices_file} is damaged ({exc}); restore it") from None

    def _save_devices(self, devices: dict[str, dict]) -> None:
        write_secret(self.devices_file, json.dumps({"devices": devices}, indent=1).encode())
        self._write_passwd()

    def _write_passwd(self) -> None:
        user, password = self.coordinator_credentials()
        lines = [f"{user}:{hash_password(password)}"]
        lines += [f"{d}:{e['password_hash']}" for d, e in sorted(self._devices().items())]
        write_secret(self.passwd_file, ("\n".join(lines) + "\n").encode())


class DeviceKeys:
    """Command keys by device id for signing, re-read when devices.json changes (a device
    added while `halo-coord serve` runs is signed for from its first command)."""

    def __init__(self, setup: SecureSetup | None) -> None:
        self.setup = setup
        self._mtime: float | None = None
        self._keys: dict[str, bytes] = {}

    def get(self, device_id: str) -> bytes | None:
        if self.setup is None:
            return None
        try:
            mtime = self.setup.devices_file.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if mtime != self._mtime:
            self._keys = {d: self.setup.command_key(d) for d in self.setup.devices()}
            self._mtime = mtime
        return self._keys.get(device_id)
