"""What every power source offers (the protocol callers rely on), and the reading it returns.

A source is one way of knowing a board's power: all INA3221 chips under one driver, the RAPL
domains, a serial meter, a CPU-load model. It names its rails once (:attr:`PowerSource.rails`),
and each :meth:`PowerSource.read` returns one :class:`Reading`: a power value in mW per rail
(``None`` where that rail failed this time, with the reason in ``errors``), all timestamped
at the midpoint of the read on ``time.monotonic_ns`` -- the clock the benchmark marks its
window with.

``method`` says how a number came to be: ``measured`` (a sensor), ``simulated`` (a sensor
tree written by :mod:`power.simboard`) or ``model`` (an estimate). It travels with every
energy figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

METHODS = ("measured", "simulated", "model")


@dataclass(frozen=True)
class Rail:
    """One measured supply: its name (``VDD_IN``) and where it is read (``0-0041/ch0``)."""

    name: str
    where: str
    # "power" for a direct mW file, "vi" for mV x mA, "energy" for a cumulative counter.
    kind: str = "power"


@dataclass
class Reading:
    t_ns: int  # midpoint of the read, time.monotonic_ns
    span_ns: int  # how long the read took (a blocking driver shows up here)
    mw: List[Optional[float]]  # aligned with the source's rails
    errors: Dict[str, str] = field(default_factory=dict)  # rail name -> why it has no value
    mv: Optional[List[Optional[float]]] = None  # bus voltage where the source has it
    ma: Optional[List[Optional[float]]] = None  # current where the source has it
    # Cumulative energy in uJ, wrap-corrected, for counter rails (kind "energy"); their ``mw``
    # is the mean power since the previous read (None on the first read, which is no error).
    uj: Optional[List[Optional[float]]] = None


class PowerSource:
    """Base of every source. Subclasses set ``kind``, ``name``, ``method``, ``rails`` and
    implement :meth:`_read_rails`; :meth:`read` adds the timestamps."""

    kind = "abstract"
    name = "abstract"
    method = "measured"
    rails: List[Rail] = []
    # Time constant of the sensor's own smoothing, in seconds (0 for counters and models):
    # energy windows are made at least 20 times longer.
    tau_s = 0.0

    def describe(self) -> Dict[str, Any]:
        """Sensor configuration and provenance, logged with every energy figure."""
        return {"kind": self.kind, "name": self.name, "method": self.method}

    def rail_names(self) -> List[str]:
        return [r.name for r in self.rails]

    def read(self, full: bool = False) -> Reading:
        """One reading of every rail. ``full`` also reads voltage and current where that costs
        extra file reads (the sampler does not; ``power probe`` does)."""
        t0 = time.monotonic_ns()
        reading = self._read_rails(full)
        t1 = time.monotonic_ns()
        reading.t_ns = (t0 + t1) // 2
        reading.span_ns = t1 - t0
        return reading

    def _read_rails(self, full: bool) -> Reading:
        raise NotImplementedError

    def close(self) -> None:
        """Release kept-open files; the source is not read again."""

    def __enter__(self) -> PowerSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_rail_names_unique(owned: Sequence[Tuple[str, Any]]) -> None:
    """``owned`` holds (owner, channel) pairs, each channel with a ``rail``. Where two owners
    (chips) gave the same name -- a misconfiguration that must not merge two supplies into one
    series -- both channels' rails are renamed ``NAME@owner``."""
    counts: Dict[str, int] = {}
    for _, channel in owned:
        counts[channel.rail.name] = counts.get(channel.rail.name, 0) + 1
    for owner, channel in owned:
        rail = channel.rail
        if counts[rail.name] > 1:
            channel.rail = Rail(f"{rail.name}@{owner}", rail.where, rail.kind)
