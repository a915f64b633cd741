"""The managed MQTT broker: a mosquitto process the coordinator configures, starts and stops.

Everything lives in one state directory: `mosquitto.conf` (rewritten on every start),
`mosquitto.db` (persistence), `mosquitto.log` (the broker's stdout/stderr) and `broker.pid`.
The broker runs detached in its own session, so it outlives the `halo-coord` process that
started it; `status()` and `stop()` find it again through the pidfile.
"""

from __future__ import annotations

import errno
import getpass
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import platformdirs
import psutil

from coordinator.errors import UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1883
# The secure (production) broker: TLS only, for boards on the LAN.
SECURE_HOST = "0.0.0.0"
SECURE_PORT = 8883
# ...and its second TLS listener, on loopback, for the coordinator's own clients.
SECURE_LOCAL_PORT = 8884
STATE_DIR_ENV = "HALOFARM_STATE_DIR"
MOSQUITTO_ENV = "HALOFARM_MOSQUITTO"
# protocol.envelope.MAX_MESSAGE_BYTES (256 KiB) plus headroom, so a message the protocol layer
# accepts is never dropped by the broker; oversized ones are refused there with a reason.
MESSAGE_SIZE_LIMIT = 256 * 1024 + 16 * 1024
INSTALL_HINT = (
    "install it: `sudo apt-get install mosquitto` (Debian/Ubuntu/Raspberry Pi OS) "
    "or `brew install mosquitto` (macOS)"
)
# Debian installs the broker to /usr/sbin, which is not on a normal user's PATH; Homebrew to sbin.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")
HEADER = "# mosquitto config written by halofarm; rewritten on every start."
LOG_NAME = "mosquitto.log"
LOG_ROTATE_BYTES = 5 * 1024 * 1024


class BrokerError(UserError):
    """The broker cannot be found, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class BrokerConfig:
    """What `render_config` turns into a mosquitto.conf."""

    state_dir: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    persistence: bool = True
    # mosquitto's default (1000) silently drops QoS 1 messages queued for an offline
    # persistent session beyond that; an ingest worker may be down for a whole campaign.
    max_queued_messages: int = 100_000
    max_inflight_messages: int = 100
    # Seconds between database saves (mosquitto's default is 1800). A graceful stop always
    # saves; this bounds what a broker crash loses. autosave_on_changes=True would make the
    # interval a count of changes, rewriting the whole database that often.
    autosave_interval: int = 10
    autosave_on_changes: bool = False
    # A payload limit (not max_packet_size, which mosquitto recommends): an oversized publish
    # is refused with a PUBACK reason code instead of disconnecting the device, which would
    # resend it from its outbox forever.
    message_size_limit: int = MESSAGE_SIZE_LIMIT
    password_file: Path | None = None
    acl_file: Path | None = None
    # TLS listener (see coordinator.security): all three or none.
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    # With TLS: a second listener on 127.0.0.1 for the coordinator's clients. The main one
    # then replaces every client id with the username, so a device cannot connect as another
    # device and take over its session; the coordinator needs several client ids (ingest,
    # controller, ...), which only the loopback listener allows.
    local_port: int | None = None
    # mosquitto started as root switches to user "mosquitto", which cannot write state_dir.
    user: str | None = None

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @property
    def url(self) -> str:
        return mqtt_url(self.host, self.port, self.tls)


def mqtt_url(host: str, port: int, tls: bool = False) -> str:
    scheme = "mqtts" if tls else "mqtt"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def render_config(cfg: BrokerConfig) -> str:
    """The mosquitto.conf text for cfg (pure; the same text for the same config)."""
    for name, value in (
        ("host", cfg.host),
        ("state_dir", cfg.state_dir),
        ("password_file", cfg.password_file),
        ("acl_file", cfg.acl_file),
        ("cafile", cfg.cafile),
        ("certfile", cfg.certfile),
        ("keyfile", cfg.keyfile),
        ("user", cfg.user),
    ):
        if value is not None and (not str(value) or any(c in str(value) for c in "\r\n")):
            raise BrokerError(f"broker {name} must be a non-empty single line, got {value!r}")
    for port in (cfg.port, cfg.local_port or cfg.port):
        if not 1 <= port <= 65535:
            raise BrokerError(f"broker port must be in 1..65535, got {port}")
    tls = (cfg.cafile, cfg.certfile, cfg.keyfile)
    if any(tls) and not all(tls):
        raise BrokerError("a TLS listener needs cafile, certfile and keyfile together")
    if cfg.local_port is not None and not cfg.tls:
        raise BrokerError("the local coordinator listener is for the TLS broker only")
    tls_lines = [
        f"cafile {cfg.cafile}",
        f"certfile {cfg.certfile}",
        f"keyfile {cfg.keyfile}",
        "tls_version tlsv1.2",
    ]
    lines = [HEADER, f"listener {cfg.port} {cfg.host}"]
    if cfg.tls:
        # TLS-only listeners: plain-TCP clients are refused by the handshake.
        lines += tls_lines
    if cfg.local_port is not None:
        lines += ["use_username_as_clientid true", f"listener {cfg.local_port} 127.0.0.1"]
        lines += tls_lines
    if cfg.password_file is None:
        lines.append("allow_anonymous true")
    else:
        lines += ["allow_anonymous false", f"password_file {cfg.password_file}"]
    if cfg.acl_file is not None:
        lines.append(f"acl_file {cfg.acl_file}")
    if cfg.persistence:
        lines += [
            "persistence true",
            # mosquitto appends the file name to the location verbatim.
            f"persistence_location {cfg.state_dir}/",
            "persistence_file mosquitto.db",
            f"autosave_interval {cfg.autosave_interval}",
            f"autosave_on_changes {str(cfg.autosave_on_changes).lower()}",
        ]
    else:
        lines.append("persistence false")
    lines += [
        f"max_queued_messages {cfg.max_queued_messages}",
        f"max_inflight_messages {cfg.max_inflight_messages}",
        f"message_size_limit {cfg.message_size_limit}",
    ]
    if cfg.user is not None:
        lines.append(f"user {cfg.user}")
    # A log file, not stdout: mosquitto flushes it per line, so the log is complete even after
    # SIGKILL; stdout/stderr (early notes before the config is read) are appended there too.
    lines += [
        f"log_dest file {Path(cfg.state_dir) / LOG_NAME}",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "",
    ]
    return "\n".join(lines)


def default_state_dir() -> Path:
    """`$HALOFARM_STATE_DIR/broker`, else the platform's user state dir for halofarm + /broker."""
    root = os.environ.get(STATE_DIR_ENV) or platformdirs.user_state_dir("halofarm")
    return Path(root) / "broker"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def find_mosquitto(
    explicit: str | os.PathLike | None = None, search_path: str | None = None
) -> str:
    """Path of the mosquitto binary: explicit, else $HALOFARM_MOSQUITTO, else PATH and sbin dirs."""
    explicit = explicit or os.environ.get(MOSQUITTO_ENV)
    if explicit:
        path = Path(explicit)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        raise BrokerError(
            f"mosquitto binary {path} does not exist or is not executable; {INSTALL_HINT}"
        )
    if search_path is None:
        search_path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    found = shutil.which("mosquitto", path=search_path)
    if found is None:
        raise BrokerError(
            f"mosquitto not found on PATH or in {', '.join(SBIN_DIRS)}; {INSTALL_HINT}, "
            "or pass --mosquitto PATH"
        )
    return found


def mosquitto_version(binary: str) -> str:
    """First line of `mosquitto -h`, e.g. "mosquitto version 2.0.11"."""
    out = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=10)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def mqtt_ready(
    host: str, port: int, timeout: float = 1.0, cafile: os.PathLike | None = None
) -> bool:
    """True if an MQTT 3.1.1 CONNECT gets a CONNACK; any return code (e.g. "not authorized")
    proves a broker is serving the port. With `cafile`, over TLS verified by that CA."""
    client_id = b"halofarm-probe"
    # protocol name, level 4, clean session, keepalive 5 s
    body = b"\x00\x04MQTT\x04\x02\x00\x05" + len(client_id).to_bytes(2, "big") + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            s = raw
            if cafile is not None:
                ctx = ssl.create_default_context(cafile=str(cafile))
                ctx.check_hostname = False  # any served name will do for "is it up"
                s = ctx.wrap_socket(raw)
            s.sendall(b"\x10" + bytes([len(body)]) + body)
            reply = s.recv(4)
            s.sendall(b"\xe0\x00")  # DISCONNECT, so the broker logs a clean goodbye
    except OSError:
        return False
    return reply[:2] == b"\x20\x02"


@dataclass
class BrokerStatus:
    running: bool
    state_dir: str
    pid: int | None = None
    host: str | None = None
    port: int | None = None
    url: str | None = None
    tls: bool = False
    local_port: int | None = None  # the secure broker's loopback listener (coordinator)
    uptime_s: float | None = None
    version: str | None = None
    # A pidfile whose process was gone (or was not our broker); it has been removed.
    stale_pid: int | None = None
    already_running: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class ManagedBroker:
    """Start, inspect and stop the mosquitto that owns one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.config_path = self.state_dir / "mosquitto.conf"
        self.log_path = self.state_dir / LOG_NAME
        self.pid_path = self.state_dir / "broker.pid"
        self._proc: subprocess.Popen | None = None

    def start(
        self, cfg: BrokerConfig, binary: str | None = None, timeout: float = 10.0
    ) -> BrokerStatus:
        """Start the broker for cfg and wait until it answers MQTT; if one is already running
        here, return its status with already_running=True and leave it alone."""
        if Path(cfg.state_dir).resolve() != self.state_dir:
            raise ValueError(f"config is for {cfg.state_dir}, broker for {self.state_dir}")
        current = self.status()
        if current.running:
            current.already_running = True
            return current
        if not is_loopback(cfg.host) and cfg.password_file is None:
            # Anonymous access on a LAN lets anyone command every board and forge results.
            raise BrokerError(
                f"refusing to listen on {cfg.host} with anonymous access; create a password "
                "file with `mosquitto_passwd -c FILE USER` and pass --password-file FILE, "
                "or use --host 127.0.0.1"
            )
        binary = find_mosquitto(binary)
        # mosquitto runs with another cwd: every path in its config must be absolute.
        cfg = replace(cfg, state_dir=self.state_dir, user=cfg.user or getpass.getuser())
        for name in ("acl_file", "cafile", "certfile", "keyfile"):
            if getattr(cfg, name) is not None:
                cfg = replace(cfg, **{name: Path(getattr(cfg, name)).resolve()})
        if cfg.password_file is not None:
            cfg = replace(cfg, password_file=Path(cfg.password_file).resolve())
            if not cfg.password_file.is_file():
                raise BrokerError(
                    f"password file {cfg.password_file} not found; create it with "
                    f"`mosquitto_passwd -c {cfg.password_file} USER`"
                )
        _check_port_free(cfg.host, cfg.port)
        if cfg.local_port is not None:
            _check_port_free("127.0.0.1", cfg.local_port)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.config_path.write_text(render_config(cfg), encoding="utf-8")
            if self.log_path.exists() and self.log_path.stat().st_size > LOG_ROTATE_BYTES:
                self.log_path.replace(self.log_path.with_suffix(".log.1"))
            log = open(self.log_path, "ab")
        except OSError as exc:
            raise BrokerError(f"cannot write broker state in {self.state_dir}: {exc}") from None
        with log:
            # Own session and no terminal: the broker outlives this CLI process and its Ctrl-C.
            self._proc = subprocess.Popen(
                [binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_path.write_text(f"{self._proc.pid}\n", encoding="utf-8")
        probe_host = _probe_host(cfg.host)
        deadline = time.monotonic() + timeout
        while not mqtt_ready(probe_host, cfg.port, cafile=cfg.cafile):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._abort_start()
                raise BrokerError(
                    f"mosquitto did not start on {cfg.url}: {self._log_tail()} "
                    f"(full log: {self.log_path})"
                )
            time.sleep(0.05)
        return self.status()

    def status(self) -> BrokerStatus:
        pid, stale = self._live_pid()
        st = BrokerStatus(running=pid is not None, state_dir=str(self.state_dir), stale_pid=stale)
        if pid is None:
            return st
        st.pid = pid
        # The running broker's facts are best effort: running and pid are what matter.
        try:
            text = self.config_path.read_text(encoding="utf-8")
            listeners = _listeners(text)
            st.host, st.port = listeners[0]
            st.local_port = listeners[1][1] if len(listeners) > 1 else None
            st.tls = any(line.startswith("certfile ") for line in text.splitlines())
            st.url = mqtt_url(st.host, st.port, st.tls)
        except (OSError, ValueError):
            pass
        try:
            proc = psutil.Process(pid)
            st.uptime_s = round(time.time() - proc.create_time(), 1)
            st.version = mosquitto_version(proc.exe())
        except (psutil.Error, OSError, IndexError, subprocess.SubprocessError):
            pass
        return st

    def reload(self) -> bool:
        """SIGHUP: mosquitto re-reads its password and ACL files. False if not running."""
        pid, _ = self._live_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGHUP)
        return True

    def stop(self, timeout: float = 10.0) -> tuple[BrokerStatus, bool]:
        """SIGTERM (mosquitto saves its database), SIGKILL after timeout. Returns the status
        before stopping and whether SIGKILL was needed."""
        before = self.status()
        killed = False
        if before.pid is not None:
            proc = psutil.Process(before.pid)
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
                killed = True
            except psutil.NoSuchProcess:
                pass
            self.pid_path.unlink(missing_ok=True)
        if self._proc is not None:
            self._proc.poll()  # reaped already by psutil; lets Popen forget it without warning
            self._proc = None
        return before, killed

    def _live_pid(self) -> tuple[int | None, int | None]:
        """(pid of our running broker, None) or (None, stale pid whose pidfile was removed)."""
        try:
            pid = int(self.pid_path.read_text(encoding="utf-8").strip())
        except FileNotFoundError:
            return None, None
        except ValueError:  # torn write: nothing to check, nothing to report
            self.pid_path.unlink(missing_ok=True)
            return None, None
        if pid > 0 and self._is_our_broker(pid):
            return pid, None
        self.pid_path.unlink(missing_ok=True)
        return None, pid

    def _is_our_broker(self, pid: int) -> bool:
        # A pid can be reused by another process after a reboot or crash: check the command line.
        try:
            proc = psutil.Process(pid)
            return proc.status() != psutil.STATUS_ZOMBIE and str(self.config_path) in proc.cmdline()
        except psutil.Error:
            return False

    def _abort_start(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._proc = None
        self.pid_path.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "no log"
        return " | ".join(text.strip().splitlines()[-lines:]) or "empty log"


def _listeners(config_text: str) -> list[tuple[str, int]]:
    found = []
    for line in config_text.splitlines():
        parts = line.split()
        if parts[:1] == ["listener"] and len(parts) == 3:
            found.append((parts[2], int(parts[1])))
    if not found:
        raise ValueError("no `listener PORT HOST` line")
    return found


def _probe_host(host: str) -> str:
    # A wildcard listener accepts on loopback too; connecting to 0.0.0.0 is not portable.
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as mosquitto does
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BrokerError(
                    f"port {port} on {host} is already in use (Debian's own mosquitto.service "
                    "listens on 1883: `sudo systemctl disable --now mosquitto`), or pick --port N"
                ) from None
            raise BrokerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
