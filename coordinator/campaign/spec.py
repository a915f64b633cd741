"""The campaign file: TOML in, a validated :class:`Campaign` out, or every problem at once.

Layout (every table but ``[devices]`` and ``[models]`` optional)::

    name = "nb201-weekly"
    repetitions = 3

    [devices]                    # one or more of:
    ids = ["tx2-01", "nano-02"]
    tags = ["jetson"]
    all_online = false

    [models]                     # exactly one of:
    dir = "zoo/nb201"            # a directory written by `halo-coord zoo generate`
    zoo = { space = "nb201", sample = 60, seed = 0, dtype = "float32", dataset = "cifar10" }
    reference = true             # the 10 NB201 reference architectures (HELP's embedding)

    [bench]
    threads = [1, 4]             # every value is a configuration
    xnnpack = [true]
    warmup_runs = 1              # timing rules: as `halo-coord bench`
    min_runs = 50
    energy = false               # true: power "auto" on each device
    idle_seconds = 10
    energy_seconds = 10

    [order]
    seed = 0                     # per-device random interleaving of models x configs x reps

    [thermal]
    cooldown_below_c = 55        # wait until the hottest zone is below this ...
    pause_s = 0                  # ... and/or pause this long between models
    max_wait_s = 600
    retry_throttled = true       # a result measured while throttling is retried

    [retries]
    max = 2                      # failed or timed-out jobs, with exponential backoff
    backoff_s = 30
    factor = 2

    [schedule]
    cron = "0 2 * * 1"           # optional; evaluated in UTC

    [canary]
    models = 2                   # fixed reference models re-measured on each device ...
    every = 50                   # ... every this many jobs
    threshold = 0.10             # relative p50 drift that flags the device

Problems name the file, the line and the key: ``c.toml:7: bench.threads: must be ...``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.campaign.tomlines import key_lines, line_of
from coordinator.errors import UserError
from coordinator.zoo.generate import DTYPES
from coordinator.zoo.spaces import SPACES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the coordinator's floor is 3.10
    import tomli as tomllib

ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
MAX_REPETITIONS = 1000


@dataclass(frozen=True)
class Problem:
    line: int | None
    key: str
    message: str

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class CampaignError(UserError):
    """A campaign file with problems; ``problems`` lists every one of them."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        first = problems[0].render(source)
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(first + more)

    def lines(self) -> list[str]:
        return [p.render(self.source) for p in self.problems]


@dataclass(frozen=True)
class Devices:
    ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    all_online: bool = False


@dataclass(frozen=True)
class Models:
    kind: str  # "dir" | "zoo" | "reference"
    dir: Path | None = None
    space: str = "nb201"
    sample: int = 0
    seed: int = 0
    dtype: str = "float32"
    dataset: str | None = None


@dataclass(frozen=True)
class Bench:
    threads: tuple[int, ...] = (1,)
    xnnpack: tuple[bool, ...] = (True,)
    timing: dict[str, Any] = field(default_factory=dict)  # BenchSpec timing fields given
    energy: bool = False
    idle_seconds: float | None = None
    energy_seconds: float | None = None


@dataclass(frozen=True)
class Thermal:
    cooldown_below_c: float | None = None
    pause_s: float = 0.0
    max_wait_s: float = 600.0
    retry_throttled: bool = True


@dataclass(frozen=True)
class Retries:
    max: int = 2
    backoff_s: float = 30.0
    factor: float = 2.0


@dataclass(frozen=True)
class Canary:
    models: int = 0
    every: int = 50
    threshold: float = 0.10


@dataclass(frozen=True)
class Campaign:
    name: str
    devices: Devices
    models: Models
    bench: Bench = Bench()
    repetitions: int = 1
    order_seed: int = 0
    thermal: Thermal = Thermal()
    retries: Retries = Retries()
    cron: str | None = None
    canary: Canary = Canary()
    source: str = "<campaign>"


TIMING_KEYS = {
    "warmup_runs": (int, 0, 1_000_000),
    "warmup_seconds": (float, 0.0, 3600.0),
    "min_runs": (int, 1, 1_000_000),
    "min_seconds": (float, 0.0, 86400.0),
    "max_seconds": (float, 0.0, 86400.0),
    "timeout_s": (float, 0.0, 172800.0),
}
TABLES = {
    "": {
        "name",
        "repetitions",
        "devices",
        "models",
        "bench",
        "order",
        "thermal",
        "retries",
        "schedule",
        "canary",
    },  # fmt: skip
    "devices": {"ids", "tags", "all_online"},
    "models": {"dir", "zoo", "reference"},
    "models.zoo": {"space", "sample", "seed", "dtype", "dataset"},
    "bench": {"threads", "xnnpack", "energy", "idle_seconds", "energy_seconds", *TIMING_KEYS},
    "order": {"seed"},
    "thermal": {"cooldown_below_c", "pause_s", "max_wait_s", "retry_throttled"},
    "retries": {"max", "backoff_s", "factor"},
    "schedule": {"cron"},
    "canary": {"models", "every", "threshold"},
}
_MISSING = object()


class _Reader:
    """Typed access to the parsed file that records a :class:`Problem` instead of raising."""

    def __init__(self, data: dict[str, Any], lines: dict[tuple[str, ...], int]) -> None:
        self.data = data
        self.lines = lines
        self.problems: list[Problem] = []

    def problem(self, path: tuple[str, ...], message: str) -> None:
        key = ".".join(_toml_key(part) for part in path)
        self.problems.append(Problem(line_of(self.lines, path), key, message))

    def table(self, path: tuple[str, ...]) -> dict[str, Any]:
        value: Any = self.data
        for part in path:
            value = value.get(part, {}) if isinstance(value, dict) else {}
        if not isinstance(value, dict):
            self.problem(path, "must be a table")
            return {}
        known = TABLES[".".join(path)]
        for key in value:
            if key not in known:
                self.problem(path + (key,), f"unknown key; known: {', '.join(sorted(known))}")
        return value

    def get(self, path: tuple[str, ...], kind: type, default: Any, lo=None, hi=None) -> Any:
        value = (
            self.table(path[:-1]).get(path[-1], _MISSING)
            if path[:-1]
            else self.data.get(path[-1], _MISSING)
        )
        if value is _MISSING:
            return default
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            self.problem(path, f"must be {_kind_name(kind)}, got {value!r}")
            return default
        # nan compares false with every bound: without the first test it would pass them all.
        if value != value or (lo is not None and value < lo) or (hi is not None and value > hi):
            self.problem(path, f"must be in {lo}..{hi}, got {value!r}")
            return default
        return value

    def list_of(self, path: tuple[str, ...], kind: type, default: tuple, lo=None, hi=None):
        raw = self.table(path[:-1]).get(path[-1], _MISSING)
        if raw is _MISSING:
            return default
        if not isinstance(raw, list) or not raw:
            self.problem(path, f"must be a non-empty list of {_kind_name(kind)}s, got {raw!r}")
            return default
        out = []
        for item in raw:
            good = isinstance(item, kind) and (kind is bool or not isinstance(item, bool))
            if not good or (lo is not None and item < lo) or (hi is not None and item > hi):
                bounds = f" in {lo}..{hi}" if lo is not None else ""
                self.problem(path, f"every item must be {_kind_name(kind)}{bounds}, got {item!r}")
                return default
            if item not in out:
                out.append(item)
        return tuple(out)


def _toml_key(part: str) -> str:
    """A key as TOML spells it: bare, or quoted with escapes (a newline in a quoted key must
    not split the one-line error)."""
    return part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part)


def _kind_name(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[kind]


def _devices(r: _Reader) -> Devices:
    if "devices" not in r.data:
        r.problem(("devices",), "missing: name devices by ids, tags or all_online = true")
        return Devices()
    r.table(("devices",))
    ids = r.list_of(("devices", "ids"), str, ())
    for device in ids:
        if not device or len(device) > 64 or not set(device) <= ID_CHARS:
            r.problem(("devices", "ids"), f"not a device id: {device!r}")
    tags = r.list_of(("devices", "tags"), str, ())
    all_online = r.get(("devices", "all_online"), bool, False)
    if not (ids or tags or all_online):
        r.problem(("devices",), "selects no device: give ids, tags or all_online = true")
    return Devices(ids, tags, all_online)


def _models(r: _Reader, base: Path) -> Models:
    if "models" not in r.data:
        r.problem(("models",), "missing: give dir, zoo or reference = true")
        return Models("dir")
    table = r.table(("models",))
    given = [k for k in ("dir", "zoo", "reference") if k in table]
    if len(given) != 1:
        r.problem(("models",), f"give exactly one of dir, zoo, reference (got {given or 'none'})")
        return Models("dir")
    if given == ["dir"]:
        text = r.get(("models", "dir"), str, "")
        path = (base / text).resolve() if text else None
        if path is not None and not (path / "manifest.jsonl").is_file():
            r.problem(("models", "dir"), f"{str(path)!r} has no manifest.jsonl (write it with "
                      "`halo-coord zoo generate --out DIR`)")  # fmt: skip
        return Models("dir", dir=path)
    if given == ["reference"]:
        if r.get(("models", "reference"), bool, False) is not True:
            r.problem(("models", "reference"), "must be true (or give dir or zoo instead)")
        return Models("reference")
    r.table(("models", "zoo"))
    space = r.get(("models", "zoo", "space"), str, "nb201")
    if space not in SPACES:
        r.problem(("models", "zoo", "space"), f"unknown space {space!r}; spaces: "
                  f"{', '.join(SPACES)}")  # fmt: skip
        space = "nb201"
    sample = r.get(("models", "zoo", "sample"), int, 0, 1, 1_000_000)
    zoo = table["zoo"]  # not a table: r.table() said so
    if isinstance(zoo, dict) and "sample" not in zoo:
        r.problem(("models", "zoo", "sample"), "missing: how many architectures to draw")
    size = SPACES[space].SIZE
    if size is not None and sample > size:
        r.problem(("models", "zoo", "sample"), f"{space} has only {size} architectures")
    dtype = r.get(("models", "zoo", "dtype"), str, "float32")
    if dtype not in DTYPES:
        r.problem(("models", "zoo", "dtype"), f"must be one of {', '.join(DTYPES)}")
    dataset = r.get(("models", "zoo", "dataset"), str, None)
    if dataset is not None and dataset not in SPACES[space].DATASETS:
        r.problem(("models", "zoo", "dataset"), f"{space} datasets: "
                  f"{', '.join(SPACES[space].DATASETS)}")  # fmt: skip
    return Models(
        "zoo",
        space=space,
        sample=sample,
        seed=r.get(("models", "zoo", "seed"), int, 0, 0, 2**32 - 1),
        dtype=dtype,
        dataset=dataset,
    )


def _bench(r: _Reader) -> Bench:
    r.table(("bench",))
    timing = {}
    for key, (kind, lo, hi) in TIMING_KEYS.items():
        value = r.get(("bench", key), kind, None, lo, hi)
        if value is not None:
            timing[key] = value
    if timing.get("min_seconds", 0.0) > timing.get("max_seconds", float("inf")):
        r.problem(("bench", "min_seconds"), "must not exceed max_seconds")
    return Bench(
        threads=r.list_of(("bench", "threads"), int, (1,), 1, 64),
        xnnpack=r.list_of(("bench", "xnnpack"), bool, (True,)),
        timing=timing,
        energy=r.get(("bench", "energy"), bool, False),
        idle_seconds=r.get(("bench", "idle_seconds"), float, None, 0.0, 3600.0),
        energy_seconds=r.get(("bench", "energy_seconds"), float, None, 0.001, 86400.0),
    )


def _cron(r: _Reader) -> str | None:
    r.table(("schedule",))
    cron = r.get(("schedule", "cron"), str, None)
    if cron is None:
        return None
    try:
        from croniter import croniter
    except ImportError:
        r.problem(("schedule", "cron"), "needs croniter: pip install 'halofarm[campaign]'")
        return cron
    if not croniter.is_valid(cron):
        r.problem(("schedule", "cron"), f"not a cron expression: {cron!r}")
    return cron


def parse(text: str, source: str = "<campaign>", base: Path | None = None) -> Campaign:
    """Validate a campaign file's text; raises :class:`CampaignError` with every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = re.search(r"at line (\d+)", str(exc))
        line = int(at.group(1)) if at else None
        raise CampaignError(source, [Problem(line, "", f"not TOML: {exc}")]) from None
    r = _Reader(data, key_lines(text))
    r.table(())
    name = r.get(("name",), str, Path(source).stem)
    devices = _devices(r)
    models = _models(r, base or Path.cwd())
    bench = _bench(r)
    repetitions = r.get(("repetitions",), int, 1, 1, MAX_REPETITIONS)
    r.table(("order",))
    order_seed = r.get(("order", "seed"), int, 0, 0, 2**32 - 1)
    r.table(("thermal",))
    thermal = Thermal(
        r.get(("thermal", "cooldown_below_c"), float, None, 0.0, 150.0),
        r.get(("thermal", "pause_s"), float, 0.0, 0.0, 3600.0),
        r.get(("thermal", "max_wait_s"), float, 600.0, 0.0, 86400.0),
        r.get(("thermal", "retry_throttled"), bool, True),
    )
    r.table(("retries",))
    retries = Retries(
        r.get(("retries", "max"), int, 2, 0, 100),
        r.get(("retries", "backoff_s"), float, 30.0, 0.0, 86400.0),
        r.get(("retries", "factor"), float, 2.0, 1.0, 100.0),
    )
    cron = _cron(r)
    r.table(("canary",))
    canary = Canary(
        r.get(("canary", "models"), int, 0, 0, 10),
        r.get(("canary", "every"), int, 50, 1, 1_000_000),
        r.get(("canary", "threshold"), float, 0.10, 0.001, 10.0),
    )
    if r.problems:
        unique = list(dict.fromkeys(r.problems))
        raise CampaignError(source, sorted(unique, key=lambda p: (p.line is None, p.line or 0)))
    return Campaign(name, devices, models, bench, repetitions, order_seed, thermal, retries,
                    cron, canary, source)  # fmt: skip


def load(path: Path) -> Campaign:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read campaign file {path}: {exc}") from None
    return parse(text, str(path), path.parent)
