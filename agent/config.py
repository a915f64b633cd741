"""Agent configuration: a TOML file, then ``HALOFARM_*`` environment overrides, then defaults.

File layout (every key optional)::

    device_id = "pi4-lab-01"           # default: the hostname, made a valid id
    state_dir = "/var/lib/halofarm"    # default: $STATE_DIRECTORY (systemd), else see below
    heartbeat_s = 15
    cache_max_bytes = 1073741824       # model/blob cache on disk (LRU eviction)
    max_queued_jobs = 1000             # more waiting jobs are rejected ("queue full")
    outbox_max_bytes = 268435456       # un-sent messages on disk; see below
    tags = ["lab-a", "fan"]

    [broker]
    url = "mqtts://broker.lab:8883"    # mqtt:// (1883) or mqtts:// (8883); user:pass@ allowed
    username = "pi4-lab-01"            # on the secure broker: the device id
    password_file = "/etc/halofarm/broker.pass"   # or password = "..."
    ca_file = "/etc/halofarm/ca.pem"   # mqtts only; default: the system CAs
    keepalive_s = 60
    session_expiry_s = 604800
    inflight_window = 100

    [auth]
    command_key = "64 hex digits"      # or command_key_file = "/etc/halofarm/command.key"
    max_clock_skew_s = 120             # a command counts as expired this long after expires_at

``halo-coord device add NAME`` prints ``device_id``, ``[broker]`` and ``[auth]`` for a board on
the secure broker (``halo-coord broker secure``). Over mqtts the broker's certificate is always
verified (against ``ca_file``) and must name the URL's host. With a command key the agent runs
only commands signed with it that have not expired, and accepts model chunks only for blobs
those commands name; unsigned, altered or expired commands are acked ``rejected`` with the
reason. Without a key, commands are not authenticated (a broker you trust completely).

Results are never dropped: when the un-sent messages in the outbox reach ``outbox_max_bytes``
(the broker has been unreachable for long), new jobs are rejected with that reason and the
retained ``status`` message says so, until the backlog has been delivered.

    [power]
    sysfs_root = "/"                   # a simulated board's tree in tests and demos
    board = "tx2"                      # when the device tree is silent: tx2 nano tx1 ...
    rail_names = { "1-0040" = ["VDD_IN", "NC", "NC"] }   # per chip, "NC" = not connected
    total_rails = ["VDD_IN"]           # overrides the board's total-power rule
    include_carrier = false            # TX2 dev kit: total = VDD_IN + VDD_MUX
    fix_running_mode = false           # JetPack 4, root: force ina3221x continuous mode
    tau_s = 0.4                        # sensor time constant, if measured on this board
    estimate_idle_mw = 2500            # a CPU-load model, for boards without a sensor
    estimate_busy_mw = 6500
    period_ms = 10                     # sampling period
    idle_seconds = 10                  # idle baseline before each energy run
    sampler = "thread"                 # or "process"

Each key has an environment variable ``HALOFARM_<SECTION>_<KEY>`` (``HALOFARM_DEVICE_ID``,
``HALOFARM_BROKER_URL``, ...; ``HALOFARM_TAGS`` is comma-separated) that wins over the file.

Python 3.8 compatible.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from firmware_bridge.resources import DutResource, dut_resource
from power.discover import PowerOptions
from power.serial_meter import MeterConfig, meter_config
from protocol.auth import DEFAULT_SKEW_S, parse_key

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ENV_PREFIX = "HALOFARM_"
ROOT_STATE_DIR = "/var/lib/halofarm"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
GIB = 1024**3


class ConfigError(Exception):
    """The configuration is unusable; the message names the file, line or variable to fix."""


@dataclass(frozen=True)
class BrokerConfig:
    url: str = "mqtt://127.0.0.1:1883"
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    ca_file: Optional[str] = None
    keepalive_s: int = 60
    session_expiry_s: int = 7 * 24 * 3600
    inflight_window: int = 100


@dataclass(frozen=True)
class PowerConfig:
    """How jobs measure energy; ``options`` is what :mod:`power.discover` needs."""

    options: PowerOptions = PowerOptions()
    period_ms: float = 10.0
    idle_seconds: float = 10.0
    sampler: str = "thread"


@dataclass(frozen=True)
class AgentConfig:
    device_id: str
    state_dir: Path
    broker: BrokerConfig = BrokerConfig()
    heartbeat_s: float = 15.0
    cache_max_bytes: int = GIB
    tags: List[str] = field(default_factory=list)
    max_queued_jobs: int = 1000
    outbox_max_bytes: int = 256 * 1024**2
    command_key: Optional[bytes] = field(default=None, repr=False)
    max_clock_skew_s: float = DEFAULT_SKEW_S
    power: PowerConfig = PowerConfig()
    mcu_duts: Tuple[DutResource, ...] = ()  # [[mcu.duts]]: MCUs attached to this board
    source: Optional[str] = None  # the file it came from, for messages

    def dut(self, name: str) -> Optional[DutResource]:
        return next((d for d in self.mcu_duts if d.name == name), None)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "agent.db"

    @property
    def blob_dir(self) -> Path:
        return self.state_dir / "blobs"


# --- value checkers: (raw value, where) -> value; ``where`` names the key for the message ---


def _int(lo: int, hi: int) -> Callable[[Any, str], int]:
    def check(value: Any, where: str) -> int:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ConfigError(f"{where}: must be an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"{where}: must be an integer in {lo}..{hi}, got {value!r}")
        return value

    return check


def _number(lo: float, hi: float) -> Callable[[Any, str], float]:
    def check(value: Any, where: str) -> float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(f"{where}: must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise ConfigError(f"{where}: must be a number in {lo}..{hi}, got {value!r}")
        return float(value)

    return check


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: must be a non-empty string, got {value!r}")
    return value


def _tags(value: Any, where: str) -> List[str]:
    if isinstance(value, str):
        value = [t.strip() for t in value.split(",") if t.strip()]
    if not isinstance(value, list) or not all(isinstance(t, str) and t for t in value):
        raise ConfigError(f"{where}: must be a list of non-empty strings, got {value!r}")
    if len(value) > 64 or any(len(t) > 128 for t in value):
        raise ConfigError(f"{where}: at most 64 tags of at most 128 characters each")
    return list(value)


def _boolean(value: Any, where: str) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    return value


def _names(value: Any, where: str) -> List[str]:
    if isinstance(value, str):
        value = [t.strip() for t in value.split(",") if t.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(t, str) and t for t in value):
        raise ConfigError(f"{where}: must be a non-empty list of rail names, got {value!r}")
    return list(value)


def _rail_names(value: Any, where: str) -> Dict[str, List[str]]:
    """``{"1-0040": ["VDD_IN", "NC", "NC"]}``; from the environment as
    ``1-0040=VDD_IN,NC,NC;1-0041=...``."""
    if isinstance(value, str):
        table: Dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in value.split(";"))):
            chip, sep, names = part.partition("=")
            if not sep:
                raise ConfigError(f"{where}: expected CHIP=NAME,NAME,NAME; got {part!r}")
            table[chip.strip()] = names
        value = table
    if not isinstance(value, dict):
        raise ConfigError(f'{where}: must be a table like {{ "1-0040" = ["VDD_IN"] }}')
    out: Dict[str, List[str]] = {}
    for chip, names in value.items():
        names = _names(names, f"{where}.{chip}")
        if len(names) > 3:
            raise ConfigError(f"{where}.{chip}: an INA3221 has 3 channels, got {len(names)} names")
        out[str(chip)] = names
    return out


def _sampler(value: Any, where: str) -> str:
    if value not in ("thread", "process"):
        raise ConfigError(f"{where}: must be 'thread' or 'process', got {value!r}")
    return str(value)


def _named_tables(
    value: Any, where: str, example: str, parse: Callable[[Mapping[str, Any], str], Any]
) -> Tuple[Any, ...]:
    """An array of tables, each parsed by ``parse(table, where[i])`` (ValueError names the
    key), whose ``name`` fields must be unique."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{where}: must be an array of tables, e.g. {example}")
    out = []
    for i, table in enumerate(value):
        try:
            out.append(parse(table, f"{where}[{i}]"))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    names = [item.name for item in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: names must be unique, got {', '.join(names)}")
    return tuple(out)


def _meters(value: Any, where: str) -> Tuple[MeterConfig, ...]:
    example = '[[power.meters]] name = "dut" kind = "ppk2" url = "..."'
    return _named_tables(value, where, example, meter_config)


def _duts(value: Any, where: str) -> Tuple[DutResource, ...]:
    example = '[[mcu.duts]] name = "l4r5" url = "/dev/serial/by-id/..."'
    return _named_tables(value, where, example, dut_resource)


def _device_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise ConfigError(
            f"{where}: must be 1-64 letters, digits, '_', '.', '-' starting with a letter or "
            f"digit (it becomes an MQTT topic level), got {value!r}"
        )
    return value


# section -> key -> checker. Section "" is the top level.
SCHEMA: Dict[str, Dict[str, Callable[[Any, str], Any]]] = {
    "": {
        "device_id": _device_id,
        "state_dir": _text,
        "heartbeat_s": _number(1.0, 3600.0),
        "cache_max_bytes": _int(1024**2, 2**62),
        "max_queued_jobs": _int(1, 1_000_000),
        # At least a few results' worth, so one job's output always fits.
        "outbox_max_bytes": _int(1024**2, 2**62),
        "tags": _tags,
    },
    "broker": {
        "url": _text,
        "username": _text,
        "password": _text,
        "password_file": _text,
        "ca_file": _text,
        "keepalive_s": _int(5, 65535),
        "session_expiry_s": _int(0, 2**32 - 1),
        # Far below paho's 65535 mids (publish() would fail with ERR_QUEUE_SIZE) and below
        # the 999 bound parameters of the SQLite in older distributions (one per claimed row).
        "inflight_window": _int(1, 500),
    },
    "auth": {
        "command_key": _text,
        "command_key_file": _text,
        "max_clock_skew_s": _number(0.0, 86400.0),
    },
    "power": {
        "sysfs_root": _text,
        "board": _text,
        "rail_names": _rail_names,
        "total_rails": _names,
        "include_carrier": _boolean,
        "fix_running_mode": _boolean,
        "tau_s": _number(0.0, 60.0),
        "estimate_idle_mw": _number(0.0, 1e7),
        "estimate_busy_mw": _number(0.0, 1e7),
        "period_ms": _number(0.5, 10000.0),
        "idle_seconds": _number(0.0, 3600.0),
        "sampler": _sampler,
        "meters": _meters,
    },
    "mcu": {
        "duts": _duts,
    },
}


def env_name(section: str, key: str) -> str:
    return ENV_PREFIX + (f"{section}_{key}" if section else key).upper()


def default_device_id(hostname: Optional[str] = None) -> str:
    """The hostname turned into a valid device id ("my host.local" -> "my-host.local")."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", hostname or socket.gethostname())
    name = re.sub(r"^[^A-Za-z0-9]+", "", name)[:64]
    return name or "device"


def default_state_dir(env: Mapping[str, str]) -> Path:
    # systemd's StateDirectory= sets $STATE_DIRECTORY (possibly a ':'-separated list).
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path(ROOT_STATE_DIR)
    import platformdirs

    return Path(platformdirs.user_state_dir("halofarm"))


def _line_of(text: str, section: str, key: str) -> Optional[int]:
    """Best-effort line number of ``key`` in ``[section]`` (TOML parsers do not report it)."""
    current = ""
    key_re = re.compile(r"\s*[\"']?" + re.escape(key) + r"[\"']?\s*[=.]")
    header_re = re.compile(r"\s*\[\s*([^\]\s]+)\s*\]")
    for number, line in enumerate(text.splitlines(), 1):
        header = header_re.match(line)
        if header:
            current = header.group(1).strip("\"'")
            if not section and current == key:
                return number
        elif current == section and key_re.match(line):
            return number
    return None


def _read_file(path: Path) -> Tuple[Dict[str, Dict[str, Any]], Dict[Tuple[str, str], str]]:
    """The file's values by (section, key), and where each came from."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None

    def where(section: str, key: str) -> str:
        line = _line_of(text, section, key)
        name = f"{section}.{_toml_key(key)}" if section else _toml_key(key)
        return f"{path}:{line}: {name}" if line else f"{path}: {name}"

    values: Dict[str, Dict[str, Any]] = {s: {} for s in SCHEMA}
    origin: Dict[Tuple[str, str], str] = {}
    for key, value in data.items():
        if key in SCHEMA and key:
            if not isinstance(value, dict):
                raise ConfigError(f"{where('', key)}: must be a table ([{key}])")
            for sub, sub_value in value.items():
                if sub not in SCHEMA[key]:
                    raise ConfigError(f"{where(key, sub)}: unknown key; known: {_known(key)}")
                values[key][sub] = sub_value
                origin[(key, sub)] = where(key, sub)
        elif key in SCHEMA[""]:
            values[""][key] = value
            origin[("", key)] = where("", key)
        else:
            raise ConfigError(f"{where('', key)}: unknown key; known: {_known('')}")
    return values, origin


def _toml_key(key: str) -> str:
    """A key as TOML spells it: bare, or quoted with escapes (a newline in a quoted key must
    not split the one-line error)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _known(section: str) -> str:
    keys = list(SCHEMA[section])
    if not section:
        keys += [f"[{s}]" for s in SCHEMA if s]
    return ", ".join(keys)


def _broker(values: Dict[str, Any], where: Callable[[str], str]) -> BrokerConfig:
    url = values.get("url", BrokerConfig.url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as e:  # "mqtt://[:61]": a bracketed host that is no IP address
        raise ConfigError(f"{where('url')}: not a broker URL ({e})") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise ConfigError(
            f"{where('url')}: must start with mqtt:// or mqtts://, got {url!r} "
            "(websockets are not supported)"
        )
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ConfigError(f"{where('url')}: invalid port in {url!r}") from None
    if not parts.hostname:
        raise ConfigError(f"{where('url')}: no host in {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{where('url')}: a broker URL has no path or query, got {url!r}")

    username = values.get("username")
    if parts.username is not None:
        if username is not None:
            raise ConfigError(f"{where('username')}: also given in the URL; give it once")
        username = urllib.parse.unquote(parts.username)
    password = values.get("password")
    sources = [s for s in ("password", "password_file") if s in values]
    if parts.password is not None:
        sources.append("url")
        password = urllib.parse.unquote(parts.password)
    if len(sources) > 1:
        raise ConfigError(
            f"{where(sources[0])}: the password is given {len(sources)} times "
            f"({', '.join(sources)}); give exactly one"
        )
    if "password_file" in values:
        try:
            password = Path(values["password_file"]).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"{where('password_file')}: cannot read: {e.strerror or e}") from None
    if password is not None and username is None:
        raise ConfigError(f"{where('username')}: a password needs a username")

    ca_file = values.get("ca_file")
    if ca_file is not None:
        if parts.scheme != "mqtts":
            raise ConfigError(f"{where('ca_file')}: only used with an mqtts:// URL")
        if not Path(ca_file).is_file():
            raise ConfigError(f"{where('ca_file')}: no such file {ca_file!r}")

    return BrokerConfig(
        url=_url_without_credentials(parts.scheme, parts.hostname, port),
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=username,
        password=password,
        ca_file=ca_file,
        keepalive_s=values.get("keepalive_s", BrokerConfig.keepalive_s),
        session_expiry_s=values.get("session_expiry_s", BrokerConfig.session_expiry_s),
        inflight_window=values.get("inflight_window", BrokerConfig.inflight_window),
    )


def _command_key(values: Dict[str, Any], where: Callable[[str], str]) -> Optional[bytes]:
    if "command_key" in values and "command_key_file" in values:
        raise ConfigError(f"{where('command_key_file')}: the key is also given as command_key")
    text = values.get("command_key")
    if "command_key_file" in values:
        try:
            text = Path(values["command_key_file"]).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"{where('command_key_file')}: cannot read: {e.strerror or e}"
            ) from None
    if text is None:
        return None
    try:
        return parse_key(text)
    except ValueError as e:
        name = "command_key_file" if "command_key_file" in values else "command_key"
        raise ConfigError(f"{where(name)}: {e}") from None


def _url_without_credentials(scheme: str, host: str, port: int) -> str:
    """The URL as it may appear in logs and status lines."""
    return "{}://{}:{}".format(scheme, f"[{host}]" if ":" in host else host, port)


def load_config(
    path: Optional[os.PathLike] = None, env: Optional[Mapping[str, str]] = None
) -> AgentConfig:
    """Read ``path`` (optional), apply ``HALOFARM_*`` overrides from ``env`` (default:
    ``os.environ``) and fill defaults. Raises :class:`ConfigError` naming what to fix."""
    env = os.environ if env is None else env
    values: Dict[str, Dict[str, Any]] = {s: {} for s in SCHEMA}
    origin: Dict[Tuple[str, str], str] = {}
    if path is not None:
        values, origin = _read_file(Path(path))
    for section, keys in SCHEMA.items():
        for key in keys:
            name = env_name(section, key)
            if name in env:
                values[section][key] = env[name]
                origin[(section, key)] = f"environment variable {name}"
    for section, keys in SCHEMA.items():
        for key, value in values[section].items():
            values[section][key] = keys[key](value, origin[(section, key)])

    top = values[""]
    broker = _broker(values["broker"], lambda key: origin.get(("broker", key), f"broker.{key}"))
    auth = values["auth"]
    command_key = _command_key(auth, lambda key: origin.get(("auth", key), f"auth.{key}"))
    power = _power(values["power"], lambda key: origin.get(("power", key), f"power.{key}"))
    duts = values["mcu"].get("duts", ())
    meters = {m.name for m in power.options.meters}
    for d in duts:
        if d.meter is not None and d.meter not in meters:
            raise ConfigError(
                f"{origin.get(('mcu', 'duts'), 'mcu.duts')}: DUT {d.name} names meter "
                f"{d.meter!r}, which no [[power.meters]] entry defines "
                f"(defined: {', '.join(sorted(meters)) or 'none'})"
            )
    return AgentConfig(
        device_id=top.get("device_id") or default_device_id(),
        state_dir=Path(top["state_dir"]) if "state_dir" in top else default_state_dir(env),
        broker=broker,
        heartbeat_s=top.get("heartbeat_s", AgentConfig.heartbeat_s),
        cache_max_bytes=top.get("cache_max_bytes", AgentConfig.cache_max_bytes),
        tags=top.get("tags", []),
        max_queued_jobs=top.get("max_queued_jobs", AgentConfig.max_queued_jobs),
        outbox_max_bytes=top.get("outbox_max_bytes", AgentConfig.outbox_max_bytes),
        command_key=command_key,
        max_clock_skew_s=auth.get("max_clock_skew_s", AgentConfig.max_clock_skew_s),
        power=power,
        mcu_duts=duts,
        source=None if path is None else str(path),
    )


def _power(values: Dict[str, Any], where: Callable[[str], str]) -> PowerConfig:
    idle, busy = values.get("estimate_idle_mw"), values.get("estimate_busy_mw")
    if (idle is None) != (busy is None):
        given = "estimate_idle_mw" if idle is not None else "estimate_busy_mw"
        raise ConfigError(f"{where(given)}: the estimate needs both estimate_idle_mw and busy_mw")
    if idle is not None and busy < idle:
        raise ConfigError(f"{where('estimate_busy_mw')}: must be >= estimate_idle_mw ({idle})")
    options = PowerOptions(
        sysfs_root=values.get("sysfs_root", "/"),
        board=values.get("board"),
        rail_names=values.get("rail_names", {}),
        total_rails=values.get("total_rails"),
        include_carrier=values.get("include_carrier", False),
        fix_running_mode=values.get("fix_running_mode", False),
        tau_s=values.get("tau_s"),
        estimate_idle_mw=idle,
        estimate_busy_mw=busy,
        meters=values.get("meters", ()),
    )
    return PowerConfig(
        options=options,
        period_ms=values.get("period_ms", PowerConfig.period_ms),
        idle_seconds=values.get("idle_seconds", PowerConfig.idle_seconds),
        sampler=values.get("sampler", PowerConfig.sampler),
    )
