"""Message bodies as dataclasses, with JSON conversion and validation driven by their fields.

Each field carries its checker (see :mod:`protocol.fields`) in its metadata. ``from_dict``
rejects unknown keys, runs every checker with the field's dotted path and then the class's
cross-field rules; ``to_dict`` gives plain JSON data. A key may be left out of the JSON only
when the field has a default.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Dict, FrozenSet, List, Optional, Tuple, Type, TypeVar

from . import fields as f
from .packing import MAX_RAW_NS, check_packed_ns, pack_ns, unpack_ns

__all__ = [
    "CHUNK_MAX",
    "MAX_RAW_NS",
    "Ack",
    "AdaptResult",
    "AdaptSpec",
    "BenchResult",
    "BenchSpec",
    "BenchStats",
    "BlobChunk",
    "BlobRequest",
    "Body",
    "Caps",
    "Command",
    "Heartbeat",
    "MESSAGE_TYPES",
    "Progress",
    "Status",
    "pack_ns",
    "unpack_ns",
]

CHUNK_MAX = 128 * 1024
_CHUNK_B64_MAX = 4 * ((CHUNK_MAX + 2) // 3)
# A raw_ns string can never be longer than a whole message.
_RAW_NS_MAX_CHARS = 256 * 1024

B = TypeVar("B", bound="Body")


def wire(check: f.Checker, default: Any = MISSING, default_factory: Any = MISSING) -> Any:
    """A dataclass field validated on the wire by ``check``."""
    return field(default=default, default_factory=default_factory, metadata={"check": check})


def _nested(cls: Type[Body]) -> f.Checker:
    def check(value: Any, path: str) -> Body:
        return cls.from_dict(value, path)

    return check


def _plain(value: Any) -> Any:
    """JSON data for a field value; copies containers so callers cannot alias our state."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Body):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "dtype") and hasattr(value, "tolist"):
        # numpy scalars and arrays (the agent computes statistics with numpy), without
        # importing numpy: tolist() gives plain Python numbers.
        return _plain(value.tolist())
    return value


class Body:
    """Base of all bodies. ``TYPE`` is the message type string (None for nested-only bodies)."""

    TYPE: Optional[str] = None
    # Fields added after the first release: left out of the JSON while None, so a receiver
    # that predates them still accepts what a newer sender sends in the common case.
    OMIT_NONE: FrozenSet[str] = frozenset()

    def to_dict(self) -> Dict[str, Any]:
        return {
            fl.name: _plain(getattr(self, fl.name))
            for fl in fields(self)
            if not (fl.name in self.OMIT_NONE and getattr(self, fl.name) is None)
        }

    @classmethod
    def from_dict(cls: Type[B], data: Any, path: str = "body") -> B:
        if not isinstance(data, dict):
            f.fail(path, f"must be an object, got {f.describe(data)}")
        names, plan = _plan(cls, path)
        if not names.issuperset(data):
            for name in data:
                if name not in names:
                    hint = difflib.get_close_matches(str(name), [p[0] for p in plan], n=1)
                    f.fail(
                        f.member(path, name),
                        "unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                    )
        if len(data) == len(plan):  # every field given, as encode() writes them
            values = {name: check(data[name], at) for name, check, at, _ in plan}
        else:
            values = {}
            for name, check, at, required in plan:
                if name in data:
                    values[name] = check(data[name], at)
                elif required:
                    f.fail(at, "is required")
        obj = cls(**values)
        obj.check_rules(path)
        return obj

    def check_rules(self, path: str) -> None:
        """Cross-field rules; the field checkers have already passed."""

    def validate(self, path: str = "body") -> None:
        """Raise :class:`ProtocolError` if this body would be rejected by the receiver."""
        type(self).from_dict(self.to_dict(), path)


# (field names, ((name, checker, dotted path, required), ...)) per body class and path:
# from_dict runs for every body of every message, and fields() plus a path string per field
# cost more than checking most fields. Paths come from code (nested fields), so this stays
# small; the bound only guards against a caller inventing paths.
_Plan = Tuple[FrozenSet[str], Tuple[Tuple[str, f.Checker, str, bool], ...]]
_PLANS: Dict[Tuple[type, str], _Plan] = {}
_MAX_PLANS = 256


def _plan(cls: type, path: str) -> _Plan:
    plan = _PLANS.get((cls, path))
    if plan is None:
        rows = tuple(
            (
                fl.name,
                fl.metadata["check"],
                f.sub(path, fl.name),
                fl.default is MISSING and fl.default_factory is MISSING,
            )
            for fl in fields(cls)
        )
        plan = (frozenset(r[0] for r in rows), rows)
        if len(_PLANS) < _MAX_PLANS:
            _PLANS[(cls, path)] = plan
    return plan


def _require(cond: bool, path: str, reason: str) -> None:
    if not cond:
        f.fail(path, reason)


@dataclass
class Status(Body):
    TYPE = "status"
    state: str = wire(f.one_of(("online", "offline")))
    agent_version: str = wire(f.text(64))
    started_at: Optional[float] = wire(f.optional(f.float_in(0.0)), default=None)
    # Why the agent rejects new jobs now (e.g. its outbox is full); None: it accepts them.
    refusing_jobs: Optional[str] = wire(f.optional(f.text(1000)), default=None)
    OMIT_NONE = frozenset({"refusing_jobs"})


@dataclass
class Caps(Body):
    TYPE = "caps"
    agent_version: str = wire(f.text(64))
    board: str = wire(f.text(256))
    soc: Optional[str] = wire(f.optional(f.text(256)))
    machine: str = wire(f.text(64))
    cores: int = wire(f.int_in(1, 4096))
    ram_bytes: int = wire(f.int_in(0))
    os: str = wire(f.text(256))
    kernel: str = wire(f.text(256))
    python: str = wire(f.text(64))
    runtime: Optional[str] = wire(f.optional(f.text(64)))
    runtime_version: Optional[str] = wire(f.optional(f.text(64)))
    numpy: str = wire(f.text(64))
    xnnpack: bool = wire(f.boolean)
    delegates: List[str] = wire(f.list_of(f.text(128), 64), default_factory=list)
    power_sources: List[str] = wire(f.list_of(f.text(128), 64), default_factory=list)
    tags: List[str] = wire(f.list_of(f.text(128), 64), default_factory=list)
    # MCU devices under test attached to the board ([[mcu.duts]] names: what an mcu job names)
    mcu_duts: List[str] = wire(f.list_of(f.text(128), 64), default_factory=list)


@dataclass
class Heartbeat(Body):
    TYPE = "hb"
    uptime_s: float = wire(f.float_in(0.0))
    load: List[float] = wire(f.list_of(f.float_in(0.0), 3, 3))
    temps_c: Dict[str, float] = wire(f.dict_of(f.float_in(-273.15, 1000.0)))
    cpu_freq_khz: Dict[str, int] = wire(f.dict_of(f.int_in(0)))
    throttled: Optional[bool] = wire(f.optional(f.boolean))
    outbox_depth: int = wire(f.int_in(0))
    queue_depth: int = wire(f.int_in(0))
    running_job: Optional[str] = wire(f.optional(f.ID))
    agent_version: str = wire(f.text(64))


_DAY = 86400.0
POWER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,63}")
DUT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")  # as firmware_bridge.resources


@dataclass
class BenchSpec(Body):
    """What to measure and how; the args of a ``bench`` command, echoed in its result."""

    model_sha256: str = wire(f.SHA256)
    model_name: str = wire(f.text(128))
    xnnpack: bool = wire(f.boolean, default=True)
    threads: int = wire(f.int_in(1, 64), default=1)
    affinity: Optional[List[int]] = wire(
        f.optional(f.unique(f.list_of(f.int_in(0, 1023), 1024, 1))), default=None
    )
    seed: int = wire(f.int_in(0), default=0)
    warmup_runs: int = wire(f.int_in(0, 1000000), default=1)
    warmup_seconds: float = wire(f.float_in(0.0, 3600.0), default=0.5)
    min_runs: int = wire(f.int_in(1, 1000000), default=50)
    min_seconds: float = wire(f.float_in(0.0, _DAY), default=1.0)
    max_seconds: float = wire(f.float_in(0.0, _DAY, lo_open=True), default=150.0)
    timeout_s: Optional[float] = wire(
        f.optional(f.float_in(0.0, 2 * _DAY, lo_open=True)), default=None
    )
    keep_raw: bool = wire(f.boolean, default=True)
    # Energy: "none", "auto" (the board's best source) or a source name or kind from
    # Caps.power_sources. The three settings below default to the agent's [power] config.
    power: str = wire(f.matching(POWER_RE, "'none', 'auto' or a power source name"), default="none")
    power_period_ms: Optional[float] = wire(f.optional(f.float_in(0.5, 10000.0)), default=None)
    idle_seconds: Optional[float] = wire(f.optional(f.float_in(0.0, 3600.0)), default=None)
    # The measured window in energy mode; None: at least max(10 s, 20 sensor time constants).
    energy_seconds: Optional[float] = wire(
        f.optional(f.float_in(0.0, _DAY, lo_open=True)), default=None
    )

    def check_rules(self, path: str) -> None:
        _require(
            self.min_seconds <= self.max_seconds,
            f.sub(path, "min_seconds"),
            f"must not exceed max_seconds ({self.max_seconds}), got {self.min_seconds}",
        )


@dataclass
class McuSpec(Body):
    """The args of an ``mcu`` command: benchmark an MLPerf Tiny / EEMBC device under test that
    the agent's config names (never a port: a port URL only comes from the board's own
    config), by the benchmark's rules unless told otherwise."""

    dut: str = wire(f.matching(DUT_RE, "a DUT name from the agent's [[mcu.duts]]"))
    windows: int = wire(f.int_in(1, 100), default=5)
    min_window_s: float = wire(f.float_in(0.0, 3600.0, lo_open=True), default=10.0)
    warmups: int = wire(f.int_in(0, 1000), default=1)
    # An input tensor for `db load`, fetched as a blob like a model; None: the DUT's own.
    input_sha256: Optional[str] = wire(f.optional(f.SHA256), default=None)
    # "none", "auto" (the DUT's configured meter) or a meter name.
    power: str = wire(f.matching(POWER_RE, "'none', 'auto' or a meter name"), default="auto")
    timeout_s: Optional[float] = wire(
        f.optional(f.float_in(0.0, 2 * _DAY, lo_open=True)), default=None
    )


ADAPT_TASKS = ("thyroid", "digits", "drift")
ADAPT_OPTIMIZERS = ("halo", "sgd", "momentum", "adam", "adagrad", "rmsprop")
# As halo.optimizees.zoo.parse_model takes it: a kind and optionally 1-8 layer sizes.
MODEL_RE = re.compile(r"(mlp|cnn1d|cnn2d)(:[1-9][0-9]{0,4}(,[1-9][0-9]{0,4}){0,7})?")
SPARSITY_RE = re.compile(r"[0-9.]{1,8}(,[0-9.]{1,8}){0,15}")
# A result carries one curve point per evaluation: this many at most (the message size).
MAX_ADAPT_EVALS = 1000


@dataclass
class AdaptSpec(Body):
    """The args of an ``adapt`` command: HALO-style on-device adaptation (``halo-agent adapt``).

    The data is a built-in ``task`` or three CSV blobs (source-domain rows, target training
    rows, target test rows; columns as ``halo.tasks.csv_files_task`` reads them, the class in
    ``label``), each fetched by sha256 like a model. ``optimizer_sha256`` is a learned-optimizer
    checkpoint (.npz) blob for ``optimizer`` halo; None: the agent's shipped one. Energy is
    always modelled; ``power`` also measures it ("none", "auto" or a source name).
    """

    task: Optional[str] = wire(f.optional(f.one_of(ADAPT_TASKS)), default=None)
    source_sha256: Optional[str] = wire(f.optional(f.SHA256), default=None)
    target_sha256: Optional[str] = wire(f.optional(f.SHA256), default=None)
    target_test_sha256: Optional[str] = wire(f.optional(f.SHA256), default=None)
    label: str = wire(f.text(128), default="label")
    model: Optional[str] = wire(
        f.optional(f.matching(MODEL_RE, "a model like mlp:30,30, cnn1d:8,8 or cnn2d:8,8")),
        default=None,
    )
    optimizer: str = wire(f.one_of(ADAPT_OPTIMIZERS), default="halo")
    optimizer_sha256: Optional[str] = wire(f.optional(f.SHA256), default=None)
    lr: Optional[float] = wire(f.optional(f.float_in(0.0, 100.0, lo_open=True)), default=None)
    tune_lr: bool = wire(f.boolean, default=False)
    steps: int = wire(f.int_in(1, 1000000), default=300)
    batch: int = wire(f.int_in(1, 65536), default=64)
    sparsity: Optional[str] = wire(
        f.optional(f.matching(SPARSITY_RE, "update probabilities like 0.1,0.3,0.5")),
        default=None,
    )
    seed: int = wire(f.int_in(0, 2**31 - 1), default=0)
    eval_every: int = wire(f.int_in(0, 1000000), default=10)
    pretrain_steps: int = wire(f.int_in(0, 1000000), default=500)
    power: str = wire(f.matching(POWER_RE, "'none', 'auto' or a power source name"), default="none")
    timeout_s: Optional[float] = wire(
        f.optional(f.float_in(0.0, 2 * _DAY, lo_open=True)), default=None
    )
    # True: train on class-balanced minibatches (halo.adapt.training_batches); None: the
    # task's own choice (thyroid: balanced; CSV files: as they come). Added after the first
    # release, so left off the wire while None.
    class_balanced: Optional[bool] = wire(f.optional(f.boolean), default=None)

    OMIT_NONE = frozenset({"class_balanced"})

    def data_blobs(self) -> List[str]:
        """The CSV blobs to fetch (none for a built-in task)."""
        blobs = (self.source_sha256, self.target_sha256, self.target_test_sha256)
        return [b for b in blobs if b is not None]

    def check_rules(self, path: str) -> None:
        blobs = (self.source_sha256, self.target_sha256, self.target_test_sha256)
        if self.task is not None:
            _require(
                all(b is None for b in blobs),
                f.sub(path, "source_sha256"),
                "must be null with a task: give either task or the three CSV blobs",
            )
        else:
            for name, blob in zip(("source_sha256", "target_sha256", "target_test_sha256"), blobs):
                _require(
                    blob is not None,
                    f.sub(path, name),
                    "is required without a task: give either task or the three CSV blobs",
                )
        _require(
            not (self.lr is not None and self.tune_lr),
            f.sub(path, "lr"),
            "must be null when tune_lr is true: give a learning rate or let it be tuned",
        )
        if self.optimizer == "halo":
            _require(
                self.lr is None and not self.tune_lr,
                f.sub(path, "lr" if self.lr is not None else "tune_lr"),
                "applies to the hand-written optimizers; halo learns its own",
            )
        else:
            _require(
                self.optimizer_sha256 is None,
                f.sub(path, "optimizer_sha256"),
                f"applies to optimizer 'halo', not {self.optimizer!r}",
            )
        if self.eval_every:
            evals = self.steps // self.eval_every
            _require(
                evals <= MAX_ADAPT_EVALS,
                f.sub(path, "eval_every"),
                f"gives {evals} evaluations of {self.steps} steps; at most {MAX_ADAPT_EVALS}",
            )


COMMAND_KINDS = ("bench", "cancel", "ping", "adapt", "mcu")


@dataclass
class Command(Body):
    TYPE = "cmd"
    cmd_id: str = wire(f.HEX32)
    kind: str = wire(f.one_of(COMMAND_KINDS))
    expires_at: Optional[float] = wire(f.optional(f.float_in(0.0)), default=None)
    bench: Optional[BenchSpec] = wire(f.optional(_nested(BenchSpec)), default=None)
    target_cmd_id: Optional[str] = wire(f.optional(f.HEX32), default=None)
    mcu: Optional[McuSpec] = wire(f.optional(_nested(McuSpec)), default=None)
    adapt: Optional[AdaptSpec] = wire(f.optional(_nested(AdaptSpec)), default=None)
    # HMAC-SHA256 by the device's key (protocol.auth); unsigned commands are byte-for-byte
    # what agents without command signing expect.
    sig: Optional[str] = wire(
        f.optional(f.matching(f.SHA256_RE, "an HMAC-SHA256 as 64 lowercase hex digits")),
        default=None,
    )
    OMIT_NONE = frozenset({"sig"})

    def check_rules(self, path: str) -> None:
        kinds = (
            ("bench", "bench"),
            ("target_cmd_id", "cancel"),
            ("mcu", "mcu"),
            ("adapt", "adapt"),
        )
        for name, kind in kinds:
            present = getattr(self, name) is not None
            if self.kind == kind:
                _require(present, f.sub(path, name), f"is required when kind is {kind!r}")
            else:
                _require(
                    not present,
                    f.sub(path, name),
                    f"must be null unless kind is {kind!r} (kind is {self.kind!r})",
                )


ACK_STATES = ("accepted", "rejected", "running", "done", "failed", "cancelled", "pong")


@dataclass
class Ack(Body):
    TYPE = "ack"
    cmd_id: str = wire(f.HEX32)
    state: str = wire(f.one_of(ACK_STATES))
    reason: Optional[str] = wire(f.optional(f.text()), default=None)
    job_id: Optional[str] = wire(f.optional(f.ID), default=None)


@dataclass
class Progress(Body):
    TYPE = "progress"
    job_id: str = wire(f.ID)
    phase: str = wire(f.one_of(("fetch", "init", "idle", "warmup", "measure")))
    done: int = wire(f.int_in(0))
    total: Optional[int] = wire(f.optional(f.int_in(0)), default=None)


_NS = f.float_in(0.0)


@dataclass
class BenchStats(Body):
    """Summary of the measured runs, in nanoseconds; ``cv`` is std/mean."""

    count: int = wire(f.int_in(1))
    min: float = wire(_NS)
    p5: float = wire(_NS)
    p50: float = wire(_NS)
    p90: float = wire(_NS)
    p95: float = wire(_NS)
    p99: float = wire(_NS)
    max: float = wire(_NS)
    mean: float = wire(_NS)
    std: float = wire(_NS)
    cv: float = wire(_NS)


_RAW_NS_TEXT = f.text(_RAW_NS_MAX_CHARS)


def _check_outcome(status: str, reason: Optional[str], name: str, value: Any, path: str) -> None:
    """A result says why it failed, or carries what it produced (``name``) when it is ok."""
    if status == "failed":
        _require(reason is not None, f.sub(path, "reason"), "is required when status is 'failed'")
    else:
        _require(value is not None, f.sub(path, name), "is required when status is 'ok'")


def _raw_ns(value: Any, path: str) -> str:
    text = _RAW_NS_TEXT(value, path)
    check_packed_ns(text, path)  # validated at the boundary, not first at analysis time
    return text


@dataclass
class BenchResult(Body):
    TYPE = "result"
    result_id: str = wire(f.HEX32)
    job_id: str = wire(f.ID)
    cmd_id: str = wire(f.HEX32)
    status: str = wire(f.one_of(("ok", "failed")))
    reason: Optional[str] = wire(f.optional(f.text()))
    spec: BenchSpec = wire(_nested(BenchSpec))
    model_bytes: Optional[int] = wire(f.optional(f.int_in(0)))
    runtime: str = wire(f.text(64))
    runtime_version: str = wire(f.text(64))
    init_ns: Optional[int] = wire(f.optional(f.int_in(0)))
    first_ns: Optional[int] = wire(f.optional(f.int_in(0)))
    warmup_count: int = wire(f.int_in(0))
    warmup_mean_ns: Optional[float] = wire(f.optional(_NS))
    stats: Optional[BenchStats] = wire(f.optional(_nested(BenchStats)))
    raw_ns: Optional[str] = wire(f.optional(_raw_ns))
    env_pre: Dict[str, Any] = wire(f.json_object)
    env_post: Dict[str, Any] = wire(f.json_object)
    ops: Dict[str, int] = wire(f.dict_of(f.int_in(0), max_keys=1024))
    delegated: bool = wire(f.boolean)
    peak_rss_bytes: Optional[int] = wire(f.optional(f.int_in(0)))
    started_at: float = wire(f.float_in(0.0))
    finished_at: float = wire(f.float_in(0.0))
    energy: Optional[Dict[str, Any]] = wire(f.optional(f.json_object), default=None)

    def check_rules(self, path: str) -> None:
        _check_outcome(self.status, self.reason, "stats", self.stats, path)

    def raw(self) -> Optional[List[int]]:
        """The raw per-run nanoseconds, or None if they were not kept."""
        return None if self.raw_ns is None else unpack_ns(self.raw_ns)


@dataclass
class AdaptResult(Body):
    """What an ``adapt`` job gives: its spec echoed and the adaptation document (as
    ``halo-agent adapt --json`` prints it: settings, curve, final accuracies, energy ...).
    Published on ``job/{job}/adapt_result``, never on ``job/{job}/result``: it is no latency
    measurement and must not reach latency datasets."""

    TYPE = "adapt_result"
    result_id: str = wire(f.HEX32)
    job_id: str = wire(f.ID)
    cmd_id: str = wire(f.HEX32)
    status: str = wire(f.one_of(("ok", "failed")))
    reason: Optional[str] = wire(f.optional(f.text()))
    spec: AdaptSpec = wire(_nested(AdaptSpec))
    document: Optional[Dict[str, Any]] = wire(f.optional(f.json_object))
    started_at: float = wire(f.float_in(0.0))
    finished_at: float = wire(f.float_in(0.0))

    def check_rules(self, path: str) -> None:
        _check_outcome(self.status, self.reason, "document", self.document, path)


@dataclass
class BlobRequest(Body):
    TYPE = "blob_req"
    sha256: str = wire(f.SHA256)
    offset: int = wire(f.int_in(0))
    length: int = wire(f.int_in(1, CHUNK_MAX))


def _chunk_data(value: Any, path: str) -> str:
    text = f.text(_CHUNK_B64_MAX)(value, path)
    try:
        base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        f.fail(path, "must be base64")
    return text


@dataclass
class BlobChunk(Body):
    """One piece of a blob; ``error`` (e.g. "unknown blob") comes with empty ``data``."""

    TYPE = "blob_data"
    sha256: str = wire(f.SHA256)
    offset: int = wire(f.int_in(0))
    total: int = wire(f.int_in(0))
    data: str = wire(_chunk_data)
    error: Optional[str] = wire(f.optional(f.text(256)), default=None)

    @classmethod
    def of(cls, sha256: str, offset: int, total: int, payload: bytes) -> BlobChunk:
        return cls(sha256, offset, total, base64.b64encode(payload).decode("ascii"))

    def payload(self) -> bytes:
        return base64.b64decode(self.data)

    def check_rules(self, path: str) -> None:
        if self.error is not None:
            _require(self.data == "", f.sub(path, "data"), "must be empty when error is set")
            return
        size = len(self.payload())
        _require(
            size <= CHUNK_MAX,
            f.sub(path, "data"),
            f"must hold at most {CHUNK_MAX} bytes, got {size}",
        )
        _require(
            self.offset + size <= self.total,
            f.sub(path, "data"),
            f"chunk at offset {self.offset} with {size} bytes runs past total {self.total}",
        )


MESSAGE_TYPES: Dict[str, Type[Body]] = {
    cls.TYPE: cls
    for cls in (
        Status,
        Caps,
        Heartbeat,
        Command,
        Ack,
        Progress,
        BenchResult,
        AdaptResult,
        BlobRequest,
        BlobChunk,
    )
    if cls.TYPE is not None
}
