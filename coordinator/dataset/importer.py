"""Latency tables in: parse, validate every row, then write them to `imported` in one transaction.

Two layouts. Long: one row per (device configuration, arch), the columns of our own CSV export
(so an export imports back). Wide: HELP's public tables, `index,arch_str|arch,<one column per
device>`. Validation reports every bad value as ``FILE:LINE: column: message`` with the file's
own line numbers (header = line 1) and nothing is written unless the caller skips the bad rows.
"""

from __future__ import annotations

import csv
import itertools
import math
import operator
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.dataset.rows import Aggregate, DatasetKey
from coordinator.dataset.select import EXTRA_IMPORTED
from coordinator.errors import UserError
from coordinator.store import Store
from coordinator.zoo.spaces import SPACES, fbnet, nb201

LONG, WIDE, AUTO = "long", "wide", "auto"
DEVICE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
TOKEN_RE = re.compile(r"[A-Za-z0-9_.+-]{1,32}")
REQUIRED = ("device", "space", "arch", "latency_ms")
ALIASES = {"latency_p50_ms": "latency_ms"}
OPTIONAL = (
    "index",
    "dataset",
    "energy_mj",
    "energy_dyn_mj",
    "power_mw",
    "runtime",
    "runtime_version",
    "threads",
    "dtype",
    "delegate",
    "latency_p90_ms",
    "latency_mean_ms",
    "latency_std_ms",
    "n_runs",
    "n_results",
)
# What a file does not say about the configuration its numbers were measured in.
DEFAULT_RUNTIME = "unknown"
DEFAULT_RUNTIME_VERSION = ""
DEFAULT_THREADS = 0
DEFAULT_DTYPE = "unknown"
DEFAULT_DELEGATE = "unknown"
BAD_DEVICE = "?"  # where a row whose device id is invalid is counted as skipped
INT64_MAX = 2**63 - 1  # the largest INTEGER the store holds
_KEY_COLUMNS = (
    "device", "space", "arch", "dataset", "runtime", "runtime_version", "threads", "dtype",
    "delegate",
)  # fmt: skip
_VALUE_COLUMNS = (
    "arch_index", "latency_ms", "latency_p90_ms", "latency_mean_ms", "latency_std_ms", "n_runs",
    "n_results", "energy_mj", "energy_dyn_mj", "power_mw", "source", "line", "imported_at",
)  # fmt: skip


@dataclass(frozen=True)
class Problem:
    line: int
    column: str
    message: str

    def render(self, source: str | Path) -> str:
        # A column is named by the file: quoted if it holds a line break or other control.
        column = self.column if self.column.isprintable() else repr(self.column)
        return f"{source}:{self.line}: {column}: {self.message}"


@dataclass
class ImportRow:
    key: DatasetKey
    arch: str
    index: int | None
    figures: Aggregate
    line: int
    macs: int | None = None
    params: int | None = None
    drift_flagged: bool | None = None


@dataclass
class Parsed:
    layout: str
    space: str | None  # wide: the space of every row
    rows: list[ImportRow]
    problems: list[Problem]
    ignored: list[str]  # columns not used
    skipped: Counter[str] = field(default_factory=Counter)  # bad values per device


@dataclass
class Counts:
    imported: int = 0  # rows new to the store
    replaced: int = 0  # rows that replaced an earlier import of the same key and arch
    skipped: int = 0  # bad rows left out (--skip-bad)

    def to_dict(self) -> dict[str, int]:
        return {"imported": self.imported, "replaced": self.replaced, "skipped": self.skipped}


class _Bad(Exception):
    """A value that does not validate; its message is the problem."""


# -- value parsers: text in, value out or _Bad -----------------------------------------------


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _Bad(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise _Bad(f"{text!r} is not a finite number")
    return value


def positive(text: str) -> float:
    value = number(text)
    if value <= 0:
        raise _Bad(f"must be > 0, got {text}")
    return value


def non_negative(text: str) -> float:
    value = number(text)
    if value < 0:
        raise _Bad(f"must be >= 0, got {text}")
    return value


def integer(lo: int, hi: int = INT64_MAX) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _Bad(f"{text!r} is not an integer") from None
        if value < lo or value > hi:
            raise _Bad(f"{value} out of range {lo}..{hi}")
        return value

    return parse


def text_of(limit: int) -> Callable[[str], str]:
    """Free text that stays readable inside a dataset id (no '/', no control characters)."""

    def parse(text: str) -> str:
        if len(text) > limit or "/" in text or not text.isprintable():
            raise _Bad(f"{text!r} must be at most {limit} printable characters without '/'")
        return text

    return parse


def token(text: str) -> str:
    if not TOKEN_RE.fullmatch(text):
        raise _Bad(f"{text!r} must be 1-32 of A-Z a-z 0-9 _ . + -")
    return text


def device_id(text: str) -> str:
    if not DEVICE_RE.fullmatch(text):
        raise _Bad(f"device id {text!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    return text


def boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise _Bad(f"{text!r} is not true or false")


def space_name(text: str) -> str:
    if text not in SPACES:
        raise _Bad(f"unknown space {text!r} (spaces: {', '.join(SPACES)})")
    return text


def dataset_of(space: str, text: str) -> str:
    """The space's own spelling of an input dataset, matched without regard to case."""
    datasets = SPACES[space].DATASETS
    if not text:
        return SPACES[space].DEFAULT_DATASET
    for name in datasets:
        if name.lower() == text.lower():
            return name
    raise _Bad(f"space {space} has no dataset {text!r} (datasets: {', '.join(datasets)})")


class Archs:
    """Canonical arch and its index per (space, text), each text canonicalised once: a public
    table repeats every arch once per device."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[str, int | None] | str] = {}

    def canonical(self, space: str, text: str) -> tuple[str, int | None]:
        hit = self._cache.get((space, text))
        if hit is None:
            try:
                arch = SPACES[space].canonical(text)
                hit = (arch, nb201.index_of(arch) if space == nb201.NAME else None)
            except ValueError as exc:  # ArchError, or a space's own parse error
                hit = str(exc)
            self._cache[(space, text)] = hit
        if isinstance(hit, str):
            raise _Bad(hit)
        return hit


def check_index(arch_index: int | None, given: str) -> int | None:
    """The row's index: an nb201 arch's own (a given one must agree), else the given one."""
    if not given:
        return arch_index
    value = integer(0)(given)
    if arch_index is not None and value != arch_index:
        raise _Bad(f"{value} is not the index of the arch (that is {arch_index})")
    return value


# -- reading -----------------------------------------------------------------------------------


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line of the record, fields) of each non-blank record; the header is line 1."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            last = 0
            for record in reader:
                line, last = last + 1, reader.line_num
                if len(record) > 1 or (record and record[0].strip()):
                    yield line, record
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise UserError(f"{path}: not a CSV file ({exc})") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None


def detect(header: list[str]) -> str:
    names = [h.strip().lower() for h in header]
    if names[:2] in (["index", "arch_str"], ["index", "arch"]) and "device" not in names:
        return WIDE
    return LONG


def parse(
    path: Path,
    *,
    layout: str = AUTO,
    space: str | None = None,
    device_columns: list[str] | None = None,
) -> Parsed:
    """Every row of the file and every problem in it.
    A file that cannot be read at all, or whose header does not fit, is a UserError."""
    if space is not None and space not in SPACES:
        raise UserError(f"--space: unknown space {space!r} (spaces: {', '.join(SPACES)})")
    records = _records(path)
    first = next(records, None)
    if first is None:
        raise UserError(f"{path}: empty file; a header line is needed")
    header_line, header = first
    if header_line != 1:
        raise UserError(f"{path}:1: header: the first line is blank; the header must be line 1")
    chosen = detect(header) if layout == AUTO else layout
    if chosen == WIDE:
        return _Wide(path, header, space, device_columns).parse(records)
    if device_columns is not None:
        raise UserError("--device-columns is for wide files; a long file has a device column")
    return _Long(path, header, space).parse(records)


def _header_names(path: Path, header: list[str]) -> list[str]:
    names = [h.strip() for h in header]
    seen = set()
    for name in names:
        if name.lower() in seen:
            raise UserError(f"{path}:1: header: column {name!r} appears twice")
        seen.add(name.lower())
    return names


# Per-row columns of a long file: (our name, the Aggregate/ImportRow field, parser).
_FIGURES = (
    ("latency_ms", "latency_p50_ms", positive),
    ("latency_p90_ms", "latency_p90_ms", positive),
    ("latency_mean_ms", "latency_mean_ms", positive),
    ("latency_std_ms", "latency_std_ms", non_negative),
    ("latency_rep_cv", "latency_rep_cv", non_negative),
    ("energy_mj", "energy_mj", non_negative),
    # Dynamic energy is total minus idle: noise can make it slightly negative.
    ("energy_dyn_mj", "energy_dyn_mj", number),
    ("power_mw", "power_mw", non_negative),
    ("energy_method", "energy_method", text_of(64)),
    ("n_runs", "n_runs", integer(1)),
    ("n_results", "n_results", integer(1)),
)
_EXTRAS = (("macs", integer(0)), ("params", integer(0)), ("drift_flagged", boolean))
# The configuration columns (with their defaults); few distinct values in a file, so each
# combination is validated once.
_CONFIG = (
    ("runtime", text_of(64), DEFAULT_RUNTIME),
    ("runtime_version", text_of(64), DEFAULT_RUNTIME_VERSION),
    ("threads", integer(0, 1024), DEFAULT_THREADS),
    ("dtype", token, DEFAULT_DTYPE),
    ("delegate", token, DEFAULT_DELEGATE),
)


class _Long:
    def __init__(self, path: Path, header: list[str], space: str | None):
        self.path = path
        self.space = space
        self.names = _header_names(path, header)
        wanted = set(REQUIRED) | set(OPTIONAL) | set(EXTRA_IMPORTED)
        self.col: dict[str, int] = {}  # our name -> position
        self.label: dict[str, str] = {}  # our name -> the file's name, for problems
        self.ignored = []
        for i, name in enumerate(self.names):
            ours = ALIASES.get(name.lower(), name.lower())
            if ours in wanted and ours not in self.col:
                self.col[ours], self.label[ours] = i, name
            else:
                self.ignored.append(name)
        missing = [c for c in REQUIRED if c not in self.col and not (c == "space" and space)]
        if missing:
            raise UserError(
                f"{path}:1: header: missing required column{'s' * (len(missing) > 1)} "
                f"{', '.join(missing)} (a long file needs device, space, arch and latency_ms "
                "or latency_p50_ms; a wide file starts with index,arch_str or index,arch)"
            )
        self.figures = [
            (self.col[ours], self.label[ours], attr, parse)
            for ours, attr, parse in _FIGURES
            if ours in self.col
        ]
        self.extras = [
            (self.col[ours], self.label[ours], ours, parse)
            for ours, parse in _EXTRAS
            if ours in self.col
        ]
        self.key_names = [
            name for name in ("device", "space", "dataset", *(c[0] for c in _CONFIG))
            if name in self.col
        ]  # fmt: skip
        self.key_positions = [self.col[name] for name in self.key_names]
        self.archs = Archs()
        self._keys: dict[tuple[str, ...], tuple[DatasetKey | None, list[tuple[str, str]]]] = {}

    def parse(self, records: Iterator[tuple[int, list[str]]]) -> Parsed:
        rows: list[ImportRow] = []
        problems: list[Problem] = []
        skipped: Counter[str] = Counter()
        seen: dict[tuple[DatasetKey, str], int] = {}
        for line, record in records:
            row, bad = self.row(line, record)
            if row is not None:
                earlier = seen.setdefault((row.key, row.arch), line)
                if earlier != line:
                    bad.append(Problem(line, self.label["arch"], f"duplicate of line {earlier}"))
                    row = None
            if row is None:
                problems.extend(bad)
                device = self.get(record, "device")
                skipped[device if DEVICE_RE.fullmatch(device) else BAD_DEVICE] += 1
            else:
                rows.append(row)
        return Parsed(LONG, None, rows, problems, self.ignored, skipped)

    def get(self, record: list[str], name: str) -> str:
        i = self.col.get(name)
        return record[i].strip() if i is not None and i < len(record) else ""

    def key(self, record: list[str]) -> tuple[DatasetKey | None, list[tuple[str, str]]]:
        """The row's dataset key, or the (column, message) problems of its configuration."""
        texts = tuple(record[i] for i in self.key_positions)
        hit = self._keys.get(texts)
        if hit is None:
            given = dict(zip(self.key_names, (t.strip() for t in texts), strict=True))
            hit = self._keys[texts] = self._key(given)
        return hit

    def _key(self, given: dict[str, str]) -> tuple[DatasetKey | None, list[tuple[str, str]]]:
        bad: list[tuple[str, str]] = []

        def check(name: str, parse: Callable[[str], Any], default: Any = None):
            text = given.get(name, "")
            if not text:
                if name in REQUIRED:
                    bad.append((self.label.get(name, name), "missing value"))
                return default
            try:
                return parse(text)
            except _Bad as exc:
                bad.append((self.label.get(name, name), str(exc)))
                return None

        device = check("device", device_id)
        space = self.space
        if "space" in self.col:
            space = check("space", space_name)
            if space and self.space and space != self.space:
                bad.append((self.label["space"], f"{space} is not --space {self.space}"))
                space = None
        dataset = None
        if space:
            default = SPACES[space].DEFAULT_DATASET
            dataset = check("dataset", lambda t: dataset_of(space, t), default)
        config = [check(name, parse, default) for name, parse, default in _CONFIG]
        if bad or space is None or dataset is None:
            return None, bad
        return DatasetKey(space, dataset, device, *config), bad

    def row(self, line: int, record: list[str]) -> tuple[ImportRow | None, list[Problem]]:
        if len(record) > len(self.names):
            return None, [
                Problem(line, "row", f"has {len(record)} fields, the header {len(self.names)}")
            ]
        if len(record) < len(self.names):
            record = record + [""] * (len(self.names) - len(record))
        key, bad = self.key(record)
        problems = [Problem(line, column, message) for column, message in bad]
        arch = index = None
        space = key.space if key else self.space or self.get(record, "space")
        if space in SPACES:
            text = self.get(record, "arch")
            try:
                if not text:
                    raise _Bad("missing value")
                arch, index = self.archs.canonical(space, text)
                index = check_index(index, self.get(record, "index"))
            except _Bad as exc:
                column = "arch" if arch is None else "index"
                problems.append(Problem(line, self.label[column], str(exc)))
        figures: dict[str, Any] = {}
        for i, label, attr, parse in self.figures:
            text = record[i].strip()
            if text:
                try:
                    figures[attr] = parse(text)
                except _Bad as exc:
                    problems.append(Problem(line, label, str(exc)))
            elif attr == "latency_p50_ms":
                problems.append(Problem(line, label, "missing value"))
        extras: dict[str, Any] = {}
        for i, label, name, parse in self.extras:
            text = record[i].strip()
            if text:
                try:
                    extras[name] = parse(text)
                except _Bad as exc:
                    problems.append(Problem(line, label, str(exc)))
        if problems or key is None or arch is None:
            return None, problems
        return ImportRow(key, arch, index, Aggregate(**figures), line, **extras), problems


class _Wide:
    def __init__(
        self, path: Path, header: list[str], space: str | None, device_columns: list[str] | None
    ):
        self.path = path
        names = _header_names(path, header)
        if len(names) < 3 or names[0].lower() != "index":
            raise UserError(
                f"{path}:1: header: a wide file starts with index,arch_str or index,arch and "
                "has one column per device"
            )
        self.arch_label = names[1]
        if names[1].lower() not in ("arch", "arch_str"):
            raise UserError(f"{path}:1: header: the second column must be arch_str or arch")
        available = names[2:]
        if device_columns is None:
            chosen = available
        else:
            unknown = [c for c in device_columns if c not in available]
            if unknown:
                raise UserError(
                    f"--device-columns: {', '.join(unknown)} not in {path} "
                    f"(its device columns: {', '.join(available)})"
                )
            chosen = list(dict.fromkeys(device_columns))
        self.columns = [(names.index(c), c) for c in chosen]
        self.space = space
        self.archs = Archs()

    def infer_space(self, first: list[str] | None) -> str:
        if self.arch_label.lower() == "arch_str":
            return nb201.NAME
        sample = first[1].strip() if first and len(first) > 1 else ""
        parts = sample.split("-")
        if len(parts) == fbnet.N_LAYERS and all(p.isdigit() for p in parts):
            return fbnet.NAME
        raise UserError(f"cannot tell the search space of {self.path}; pass --space")

    def parse(self, records: Iterator[tuple[int, list[str]]]) -> Parsed:
        first = next(records, None)
        space = self.space or self.infer_space(first[1] if first else None)
        problems: list[Problem] = []
        skipped: Counter[str] = Counter()
        keys = {}
        for _, name in self.columns:
            try:
                keys[name] = DatasetKey(
                    space, SPACES[space].DEFAULT_DATASET, device_id(name), DEFAULT_RUNTIME,
                    DEFAULT_RUNTIME_VERSION, DEFAULT_THREADS, DEFAULT_DTYPE, DEFAULT_DELEGATE,
                )  # fmt: skip
            except _Bad as exc:
                problems.append(Problem(1, name, str(exc)))
        columns = [(i, name) for i, name in self.columns if name in keys]
        rows: list[ImportRow] = []
        seen: dict[str, int] = {}
        for line, record in itertools.chain([first] if first else [], records):
            bad_before = len(problems)
            arch = index = None
            try:
                arch, index = self.archs.canonical(
                    space, record[1].strip() if len(record) > 1 else ""
                )
            except _Bad as exc:
                problems.append(Problem(line, self.arch_label, str(exc)))
            if arch is not None:
                try:
                    index = check_index(index, record[0].strip())
                except _Bad as exc:
                    problems.append(Problem(line, "index", str(exc)))
                earlier = seen.setdefault(arch, line)
                if earlier != line:
                    problems.append(Problem(line, self.arch_label, f"duplicate of line {earlier}"))
            if len(problems) > bad_before:  # the arch is unusable: so is every cell
                skipped.update(name for _, name in columns)
                continue
            for i, name in columns:
                text = record[i].strip() if i < len(record) else ""
                if not text:  # not measured on this device
                    continue
                try:
                    latency = positive(text)
                except _Bad as exc:
                    problems.append(Problem(line, name, str(exc)))
                    skipped[name] += 1
                    continue
                rows.append(ImportRow(keys[name], arch, index, Aggregate(latency), line))
        return Parsed(WIDE, space, rows, problems, [], skipped)


# -- writing -----------------------------------------------------------------------------------


def write(store: Store, rows: list[ImportRow], source: str) -> dict[str, Counts]:
    """Upsert the rows into `imported` in one transaction (a re-import replaces); per device,
    how many were new and how many replaced earlier rows."""
    columns = (*_KEY_COLUMNS, *_VALUE_COLUMNS, *EXTRA_IMPORTED)
    sql = (
        f"INSERT INTO imported ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT ({', '.join(_KEY_COLUMNS)}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in (*_VALUE_COLUMNS, *EXTRA_IMPORTED))
    )
    now = time.time()
    counts: dict[str, Counts] = {}
    with store.transaction():
        existing = _existing_keys(store, sorted({r.key.device for r in rows}))
        params = []
        for r in rows:
            k, f = r.key, r.figures
            key = (k.device, k.space, r.arch, k.dataset, k.runtime, k.runtime_version,
                   k.threads, k.dtype, k.delegate)  # fmt: skip
            c = counts.setdefault(k.device, Counts())
            if key in existing:
                c.replaced += 1
            else:
                c.imported += 1
                existing.add(key)
            carried = {
                "latency_rep_cv": f.latency_rep_cv,
                "energy_method": f.energy_method,
                "macs": r.macs,
                "params": r.params,
                "drift_flagged": None if r.drift_flagged is None else int(r.drift_flagged),
            }
            params.append(
                (*key, r.index, f.latency_p50_ms, f.latency_p90_ms, f.latency_mean_ms,
                 f.latency_std_ms, f.n_runs, f.n_results, f.energy_mj, f.energy_dyn_mj,
                 f.power_mw, source, r.line, now, *(carried[c] for c in EXTRA_IMPORTED))
            )  # fmt: skip
        # In primary-key order the index's B-tree is written page by page, not all over:
        # about a third faster for a 300k-row public table.
        params.sort(key=operator.itemgetter(0, 2))
        store.executemany(sql, params)
    return counts


def _existing_keys(store: Store, devices: list[str]) -> set[tuple]:
    out: set[tuple] = set()
    for start in range(0, len(devices), 500):
        chunk = devices[start : start + 500]
        out.update(
            store.query(
                f"SELECT {', '.join(_KEY_COLUMNS)} FROM imported "
                f"WHERE device IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
        )
    return out
