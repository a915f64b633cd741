"""Protocols: what callers of the drivers may rely on (labgrid's third leg, next to resources
and drivers). The agent's ``mcu`` job and ``power.serial_meter`` use only these methods; a new
DUT transport or meter driver that offers them plugs in unchanged.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Protocol

from firmware_bridge.dut import DutIdentity, InferReply
from firmware_bridge.meters.base import MeterEvent, MeterSnapshot


class DutProtocol(Protocol):
    def identify(self) -> DutIdentity: ...

    def load(self, data: bytes, chunk: Optional[int] = None) -> None: ...

    def infer(
        self,
        n: int,
        warmups: int,
        expected_s: Optional[float] = None,
        timeout_s: Optional[float] = None,
    ) -> InferReply: ...

    def results(self) -> List[float]: ...

    def wait_back(self, timeout_s: Optional[float] = None) -> bool: ...

    def close(self) -> None: ...


class MeterProtocol(Protocol):
    channels: List[str]

    def open(self) -> Any: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def snapshot(self) -> MeterSnapshot: ...

    def events(self, since_ns: Optional[int] = None) -> List[MeterEvent]: ...

    def energy_at(self, t_ns: int) -> Optional[List[float]]: ...

    def wait_until(self, t_ns: int, timeout_s: float) -> bool: ...

    def describe(self) -> Dict[str, Any]: ...

    def close(self) -> None: ...
