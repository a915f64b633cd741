"""Finding a board's power sources and choosing one: the entry point callers use.

:func:`discover` asks every backend in a fixed order -- INA3221 (JetPack 4 IIO, then hwmon),
RAPL, other hwmon devices, the serial meters the configuration names (``meters``; no port is
opened to list them), then the model estimate if the configuration gives one -- and marks
sources read from a tree written by :mod:`power.simboard` as ``simulated``. :func:`open_source`
picks one by name (``auto`` = the first source with a total-power rail set, measured before
modelled).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from power import estimate, hwmon_generic, ina3221_hwmon, ina3221_iio, rapl, serial_meter
from power.boards import RailPolicy, board_key, rail_policy, read_model
from power.errors import PowerError, SourceNotFound
from power.serial_meter import MeterConfig
from power.source import PowerSource
from power.sysfs import SIM_MARKER, under

AUTO = "auto"
NONE = "none"


@dataclass(frozen=True)
class PowerOptions:
    """How this board's power is read; the agent builds it from its ``[power]`` config."""

    sysfs_root: str = "/"
    board: Optional[str] = None  # a board key (tx2, nano, ...) when the device tree is silent
    rail_names: Dict[str, List[str]] = field(default_factory=dict)  # chip ("0-0041") -> names
    total_rails: Optional[List[str]] = None
    include_carrier: bool = False
    fix_running_mode: bool = False
    tau_s: Optional[float] = None
    estimate_idle_mw: Optional[float] = None
    estimate_busy_mw: Optional[float] = None
    # Serial meters ([[power.meters]]: power.serial_meter.meter_config); measured, not simulated
    # by the sysfs tree (a fake meter says so itself).
    meters: Tuple[MeterConfig, ...] = ()


def is_simulated(sysfs_root: str) -> bool:
    return os.path.exists(under(sysfs_root, SIM_MARKER))


def discover(options: PowerOptions = PowerOptions()) -> List[PowerSource]:
    """Every source this board has, most trustworthy first. Never raises for missing sysfs."""
    root = options.sysfs_root
    board = options.board or board_key(read_model(root))
    sources: List[PowerSource] = []
    sources += ina3221_iio.discover(
        root, options.rail_names, board, options.fix_running_mode, options.tau_s
    )
    sources += ina3221_hwmon.discover(root, options.rail_names, options.tau_s)
    sources += rapl.discover(root)
    sources += hwmon_generic.discover(root)
    if is_simulated(root):
        for source in sources:
            source.method = "simulated"
    sources += serial_meter.discover(options.meters)
    if options.estimate_idle_mw is not None and options.estimate_busy_mw is not None:
        sources += estimate.discover(
            idle_mw=options.estimate_idle_mw, busy_mw=options.estimate_busy_mw
        )
    return sources


def policy_for(source: PowerSource, options: PowerOptions) -> RailPolicy:
    return rail_policy(
        source.rail_names(), options.total_rails, options.include_carrier, source.kind
    )


def _has_total(source: PowerSource, options: PowerOptions) -> bool:
    try:
        return bool(policy_for(source, options).total)
    except PowerError:
        return False


def _close_all(sources: Sequence[PowerSource]) -> None:
    for source in sources:
        source.close()


def open_source(
    wanted: str = AUTO, options: PowerOptions = PowerOptions()
) -> Tuple[PowerSource, RailPolicy]:
    """The source called ``wanted`` (a name or kind, or ``auto``) and its total-power rule.
    Raises :class:`SourceNotFound` naming the sources there are."""
    sources = discover(options)
    chosen: Optional[PowerSource] = None
    if wanted == AUTO:
        ranked = sorted(sources, key=lambda s: (s.method == "model", not _has_total(s, options)))
        chosen = ranked[0] if ranked else None
    else:
        chosen = next((s for s in sources if wanted in (s.name, s.kind)), None)
    if chosen is None:
        _close_all(sources)
        there = ", ".join(s.name for s in sources) or "none"
        what = "no power source found" if wanted == AUTO else f"no power source {wanted!r}"
        raise SourceNotFound(
            f"{what} under {options.sysfs_root!r} (sources: {there}); check the board's "
            "sysfs, [power] in the agent config, or use --power none"
        )
    _close_all([s for s in sources if s is not chosen])
    try:
        return chosen, policy_for(chosen, options)
    except PowerError:
        chosen.close()
        raise


def open_for_sampler(wanted: str, options: PowerOptions) -> PowerSource:
    """:func:`open_source` without the policy: what a sampler process calls."""
    return open_source(wanted, options)[0]
