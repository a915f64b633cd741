"""A back-to-front flatbuffer builder that lays out bytes exactly as `flatbuffers.Builder` does
(same alignment padding, same vtable sharing, same finish), checked byte for byte against it in
the tests.

Why not the package's builder: it spends a chain of Python calls on every scalar, and a model has
hundreds of tables, so it dominated zoo generation. Here a table with a given field layout is
packed by one precompiled `struct.Struct`, and the pieces are joined once at the end, so
constant data is copied a single time, into the output.

Offsets are counted from the end of the buffer, as `flatbuffers.Builder.Offset()` counts them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from operator import ne

# Scalar kinds of table fields: struct code and width. "off" is a uoffset to an earlier object.
_FIELDS = {
    "i8": ("b", 1),
    "u8": ("B", 1),
    "bool": ("?", 1),
    "i32": ("i", 4),
    "u32": ("I", 4),
    "f32": ("f", 4),
    "off": ("I", 4),
}
_U32 = struct.Struct("<I")


@lru_cache(maxsize=256)
def _ints_struct(n: int, pad: int) -> struct.Struct:
    """Length, n int32, then the padding that aligned them."""
    return struct.Struct(f"<I{n}i{pad}x")


@dataclass(frozen=True)
class _Layout:
    """Where a table's present fields land, given the buffer's alignment on entry."""

    body: struct.Struct  # soffset to the vtable, then the fields in address order
    picks: tuple[tuple[int, int], ...]  # per packed field: (value index, end if an offset else 0)
    vtable_key: tuple[int, ...]  # as `flatbuffers.Builder.vtables` keys it
    vtable: bytes
    object_size: int  # from the entry offset to the soffset, padding included
    align: int


class Table:
    """A table type: its vtable slot count and its fields as (kind, slot) or (kind, slot, schema
    default), in the order they are prepended. A value equal to its default (0 unless given) is
    left out of the file, as `Builder.Prepend*Slot` leaves it out."""

    __slots__ = ("n_slots", "fields", "defaults", "layouts")

    def __init__(self, n_slots: int, *fields: tuple):
        self.n_slots = n_slots
        self.fields = tuple((kind, slot) for kind, slot, *_ in fields)
        self.defaults = tuple(f[2] if len(f) > 2 else 0 for f in fields)
        # By (entry offset mod 8, which fields are present); filled as layouts occur.
        self.layouts: dict[tuple, _Layout] = {}

    def compile(self, key: tuple) -> _Layout:
        """Replays `StartObject`/`Prepend*Slot`/`EndObject` on sizes alone."""
        entry, *present = key
        size = entry
        slots = [0] * self.n_slots
        items: list[str] = []  # struct codes, first written first
        picks = []
        align = 4
        for index, ((kind, slot), keep) in enumerate(zip(self.fields, present, strict=True)):
            if not keep:
                continue
            code, width = _FIELDS[kind]
            align = max(align, width)  # wider than 8 would need more of the entry offset in the key
            pad = -size & (width - 1)
            items += [f"{pad}x", code]
            size += pad + width
            slots[slot] = size
            picks.append((index, size - entry if kind == "off" else 0))
        pad = -size & 3
        items += [f"{pad}x", "i"]
        size += pad + 4
        used = self.n_slots
        while used and not slots[used - 1]:
            used -= 1
        entries = [size - s if s else 0 for s in slots[:used]]
        object_size = size - entry
        self.layouts[key] = layout = _Layout(
            body=struct.Struct("<" + "".join(reversed(items))),
            picks=tuple(reversed(picks)),
            vtable_key=(*reversed(entries), object_size),
            vtable=struct.pack(f"<{used + 2}H", 2 * (used + 2), object_size, *entries),
            object_size=object_size,
            align=align,
        )
        return layout


class Builder:
    __slots__ = ("_parts", "_size", "_minalign", "_vtables")

    def __init__(self) -> None:
        self._parts: list = []  # pieces in writing order; the file is their reverse
        self._size = 0  # bytes written so far == `flatbuffers.Builder.Offset()`
        self._minalign = 1
        self._vtables: dict[tuple[int, ...], int] = {}

    def _prep(self, align: int, additional: int) -> None:
        """Pad so that `align` holds after `additional` more bytes (`Builder.Prep`)."""
        if align > self._minalign:
            self._minalign = align
        pad = -(self._size + additional) & (align - 1)
        if pad:
            self._parts.append(bytes(pad))
            self._size += pad

    def table(self, table: Table, *values) -> int:
        """A table of `table`'s type; values in the order of its fields."""
        entry = self._size
        key = (entry & 7, *map(ne, values, table.defaults))
        layout = table.layouts.get(key) or table.compile(key)
        fields = [entry + end - values[i] if end else values[i] for i, end in layout.picks]
        obj = entry + layout.object_size
        shared = self._vtables.get(layout.vtable_key)
        if shared is None:
            vtable = layout.vtable
            self._parts.append(layout.body.pack(len(vtable), *fields))
            self._parts.append(vtable)
            self._size = obj + len(vtable)
            self._vtables[layout.vtable_key] = self._size
        else:
            self._parts.append(layout.body.pack(shared - obj, *fields))
            self._size = obj
        if layout.align > self._minalign:
            self._minalign = layout.align
        return obj

    def ints(self, values: list[int]) -> int:
        """A vector of int32."""
        n = len(values)
        pad = -self._size & 3
        if self._minalign < 4:
            self._minalign = 4
        self._parts.append(_ints_struct(n, pad).pack(n, *values))
        self._size += 4 + 4 * n + pad
        return self._size

    def offsets(self, targets: list[int]) -> int:
        """A vector of uoffsets, each relative to its own position."""
        n = len(targets)
        self._prep(4, 4 * n)
        last = self._size + 4 * n  # end of the first element, which is written last
        rel = [last - 4 * i - t for i, t in enumerate(targets)]
        self._parts.append(struct.pack(f"<{n + 1}I", n, *rel))
        self._size += 4 + 4 * n
        return self._size

    def blob(self, data, alignment: int = 1, count: int | None = None) -> int:
        """A vector of little-endian elements given as any C-contiguous buffer (an ndarray is
        kept by reference until `finish`, not copied): `CreateNumpyVector`, or
        `CreateByteVector` with an alignment. The length field is `count`, else the bytes."""
        nbytes = memoryview(data).nbytes
        self._prep(4, nbytes)
        self._prep(alignment, nbytes)
        self._parts.append(data)
        self._parts.append(_U32.pack(nbytes if count is None else count))
        self._size += nbytes + 4
        return self._size

    def string(self, text: str) -> int:
        raw = text.encode()
        n = len(raw)
        if self._minalign < 4:
            self._minalign = 4
        # The terminating zero and the alignment padding after it, in one piece.
        zeros = 1 + (-(self._size + n + 1) & 3)
        self._parts.append(_U32.pack(n) + raw + bytes(zeros))
        self._size += n + 4 + zeros
        return self._size

    def finish(self, root: int, file_identifier: bytes) -> bytes:
        self._prep(self._minalign, 8)
        self._prep(4, 4)
        self._parts.append(file_identifier)
        self._size += 4
        self._prep(4, 0)
        self._parts.append(_U32.pack(self._size + 4 - root))
        self._size += 4
        return b"".join(reversed(self._parts))
