"""Where a key sits in a TOML file: TOML parsers give values, not line numbers, and a campaign
file's errors must name their line."""

from __future__ import annotations

import re

_HEADER = re.compile(r"\s*\[\s*([^\]\[]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"\s*([A-Za-z0-9_\-\"'.]+)\s*=")


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(p.strip().strip("\"'") for p in dotted.split("."))


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """(table..., key) -> 1-based line of every ``key =`` and every ``[table]`` header. Keys
    inside an inline table are not listed: their line is that of the key holding the table."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            table = _parts(header.group(1))
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault(table + _parts(key.group(1)), number)
    return lines


def line_of(lines: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    """The line of ``path``, else of its nearest listed parent."""
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None
