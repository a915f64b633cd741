"""Output every benchmark shares: a plain text table and the JSON results file."""

from __future__ import annotations

import json
from pathlib import Path


def print_rows(lines: list[tuple[str, ...]], left: int = 1) -> None:
    """Print rows of cells (the first row is the header); the first `left` columns are
    left-aligned, the numbers after them right-aligned."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        cells = enumerate(zip(line, widths, strict=True))
        print("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in cells))


def write_json(path: Path, out: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
