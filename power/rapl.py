"""RAPL energy counters through the powercap class (Intel, and AMD on kernels that expose it).

Layout (kernel ``Documentation/power/powercap/powercap.rst``): ``/sys/class/powercap/`` holds
control types (``intel-rapl``, ``intel-rapl-mmio``, ``dtpm`` ...: no ``:`` in the name) and
zones ``<type>:<id>[:<sub>]`` -- ``intel-rapl:0`` is package 0, ``intel-rapl:0:0`` a subzone of
it. A zone has ``name`` (``package-0``, ``core``, ``uncore``, ``dram``, ``psys``),
``energy_uj`` (cumulative µJ) and ``max_energy_range_uj`` (the counter's range).

One source, every readable zone a rail (kind ``energy``): ``Reading.uj`` is the wrap-corrected
counter and ``Reading.mw`` the mean power since the previous read. Subzones are parts of their
parent package (``core`` is inside ``package-0``) and ``psys`` covers the packages too: never
add them up; :meth:`RaplSource.describe` lists ``parents``. An ``intel-rapl-mmio`` zone named like
an ``intel-rapl`` zone (``package-0`` on recent Intel laptops) reads the same package counter
through MMIO: it is listed under ``duplicates`` and is not a rail, so no package counts twice.

Since the 2020 PLATYPUS fix (CVE-2020-8694) ``energy_uj`` is mode 0400 on most kernels: a
non-root agent sees the zones but cannot read them. Such zones are listed in ``describe()``
under ``unreadable`` with the reason, and are not rails; :func:`scan_zones` gives the same
information when no zone is readable (and :func:`discover` returns []).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from power.errors import ReadError
from power.hwmon_generic import CounterReads, EnergyCounter, Unwrap
from power.source import PowerSource, Rail, Reading
from power.sysfs import Attr, find, read_text

CLASS_GLOB = "/sys/class/powercap/*"
RAPL_WRAP_RULE = (
    "delta = (new - old) mod (max_energy_range_uj + 1): the counter wraps to 0 after "
    "max_energy_range_uj (off by at most one energy unit, ~15-61 uJ, per wrap); one wrap per "
    "read at most"
)
NOT_ADDITIVE = (
    "subzones (parents) are inside their package and psys is the whole platform, which contains "
    "the packages: never sum these"
)
# Control types whose top-level zones repeat those of another type (same hardware counter).
REPEATS = {"intel-rapl-mmio": "intel-rapl"}


@dataclass
class Zone:
    """One powercap zone with an energy counter."""

    zone: str  # directory name, "intel-rapl:0:0"
    name: str  # "core"
    path: str
    parent: Optional[str]  # parent zone id for a subzone, "intel-rapl:0"
    max_range_uj: Optional[int]
    reason: Optional[str]  # why energy_uj cannot be read; None when it can
    rail: str = ""  # rail name, unique within the source ("" for a duplicate)
    duplicate_of: Optional[str] = None  # the zone whose counter this one repeats

    @property
    def is_rail(self) -> bool:
        return self.reason is None and self.duplicate_of is None


def zone_key(zone: str) -> Tuple[Any, ...]:
    """Natural order of zone ids: ``intel-rapl:2`` before ``intel-rapl:10``."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in zone.split(":"))


def parent_zone(zone: str) -> Optional[str]:
    """``intel-rapl:0:0`` -> ``intel-rapl:0``; a top-level zone has none (``intel-rapl`` is the
    control type, not a zone)."""
    return zone.rsplit(":", 1)[0] if zone.count(":") >= 2 else None


def unreadable_reason(err: OSError, path: str) -> str:
    """Why ``energy_uj`` could not be read, with what to do about it."""
    if err.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{path}: permission denied: energy_uj is root-only since the 2020 PLATYPUS fix "
            "(CVE-2020-8694); run the agent as root or grant read access with a udev rule"
        )
    return f"{path}: {err.strerror or err}"


def rapl_energy_delta(old: int, new: int, max_range_uj: Optional[int]) -> Tuple[Optional[int], str]:
    """µJ counted between two raw ``energy_uj`` values (the rule in :data:`RAPL_WRAP_RULE`).

    Without a known range a decrease cannot be unwrapped and is an error.
    """
    if max_range_uj is not None and max_range_uj > 0:
        return (new - old) % (max_range_uj + 1), ""
    if new >= old:
        return new - old, ""
    return None, (
        f"energy counter went back from {old} to {new} uJ and max_energy_range_uj is unknown; "
        "this interval is lost, counting restarts"
    )


def mark_duplicates(zones: List[Zone]) -> None:
    """Set ``duplicate_of`` on top-level zones of a repeating control type (:data:`REPEATS`)
    named like a top-level zone of the type they repeat."""
    top = {(z.zone.split(":", 1)[0], z.name): z.zone for z in zones if z.parent is None}
    for z in zones:
        original = REPEATS.get(z.zone.split(":", 1)[0])
        if original is not None and z.parent is None:
            z.duplicate_of = top.get((original, z.name))


def rail_names(zones: List[Zone]) -> List[str]:
    """The zone's name; a name used by two zones (``core`` under two packages) becomes
    ``<name>:<zone>`` on each, so two packages' cores never merge into one series."""
    names = [z.name for z in zones]
    return [f"{z.name}:{z.zone}" if names.count(z.name) > 1 else z.name for z in zones]


def _probe(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            f.read(64)
    except OSError as e:
        return unreadable_reason(e, path)
    return None


def _int_or_none(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def scan_zones(sysfs_root: str = "/") -> List[Zone]:
    """Every powercap zone with an ``energy_uj`` file, readable or not, in natural order, each
    with its unique rail name (duplicates marked, not named). Zones without a counter (``dtpm``
    power-only zones) are left out."""
    zones: List[Zone] = []
    for path in find(sysfs_root, CLASS_GLOB):
        zone = os.path.basename(path)
        energy = os.path.join(path, "energy_uj")
        if ":" not in zone or not os.path.lexists(energy):
            continue
        zones.append(
            Zone(
                zone=zone,
                name=read_text(os.path.join(path, "name")) or zone,
                path=path,
                parent=parent_zone(zone),
                max_range_uj=_int_or_none(read_text(os.path.join(path, "max_energy_range_uj"))),
                reason=_probe(energy),
            )
        )
    zones.sort(key=lambda z: zone_key(z.zone))
    mark_duplicates(zones)
    # Named over every zone, readable or not, so a name does not change with permissions.
    named = [z for z in zones if z.duplicate_of is None]
    for z, name in zip(named, rail_names(named)):
        z.rail = name
    return zones


class RaplSource(PowerSource):
    """The readable RAPL zones as energy-counter rails."""

    kind = "rapl"
    name = "rapl"
    method = "measured"
    tau_s = 0.0

    def __init__(self, zones: List[Zone]) -> None:
        self.zones = zones
        self._readable = [z for z in zones if z.is_rail]
        self.rails = [Rail(z.rail, z.zone, "energy") for z in self._readable]
        self._attrs = [Attr(os.path.join(z.path, "energy_uj")) for z in self._readable]
        self._counts = CounterReads()
        for k, z in enumerate(self._readable):
            self._counts.counters[k] = EnergyCounter(_unwrapper(z.max_range_uj))

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        by_zone = {z.zone: z for z in self.zones}
        d.update(
            {
                "zones": [
                    {
                        "zone": z.zone,
                        "name": z.name,
                        "rail": z.rail if z.is_rail else None,
                        "parent": z.parent,
                        "max_energy_range_uj": z.max_range_uj,
                        "enabled": read_text(os.path.join(z.path, "enabled")),
                    }
                    for z in self.zones
                ],
                # rail -> the rail (or zone, if unreadable) it is part of
                "parents": {
                    z.rail: (
                        by_zone[z.parent].rail
                        if z.parent in by_zone and by_zone[z.parent].is_rail
                        else z.parent
                    )
                    for z in self._readable
                    if z.parent is not None
                },
                "unreadable": {z.zone: z.reason for z in self.zones if z.reason is not None},
                "duplicates": {z.zone: z.duplicate_of for z in self.zones if z.duplicate_of},
                "energy_wrap": RAPL_WRAP_RULE,
                "not_additive": NOT_ADDITIVE,
            }
        )
        return d

    def read(self, full: bool = False) -> Reading:
        reading = super().read(full)
        self._counts.settle(reading, self.rails)
        return reading

    def _read_rails(self, full: bool) -> Reading:
        mw: List[Optional[float]] = [None] * len(self.rails)
        errors: Dict[str, str] = {}
        for k, (zone, attr) in enumerate(zip(self._readable, self._attrs)):
            try:
                value = attr.read_int()
            except ReadError as e:
                errors[zone.rail] = str(e)
                continue
            top = zone.max_range_uj
            if value < 0 or (top is not None and top > 0 and value > top):
                errors[zone.rail] = f"{attr.path}: {value} is outside 0..max_energy_range_uj"
                continue
            self._counts.pending[k] = value
        return Reading(0, 0, mw, errors, uj=[None] * len(mw))

    def close(self) -> None:
        for attr in self._attrs:
            attr.close()


def _unwrapper(max_range_uj: Optional[int]) -> Unwrap:
    def unwrap(old: int, new: int, dt_ns: int) -> Tuple[Optional[int], str]:
        return rapl_energy_delta(old, new, max_range_uj)

    return unwrap


def discover(sysfs_root: str = "/", **options: Any) -> List[PowerSource]:
    """The RAPL source, or [] when no zone's counter is readable (see :func:`scan_zones` for
    why). Options are for other backends and ignored."""
    zones = scan_zones(sysfs_root)
    if not any(z.is_rail for z in zones):
        return []
    return [RaplSource(zones)]
