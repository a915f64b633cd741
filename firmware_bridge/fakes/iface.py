"""A fake EEMBC/MLPerf Tiny interface board ("IO manager") with an energy-mode DUT behind it.

Wire format, after the runner's transcripts (mlcommons/tiny ``benchmark/runner/README.md``,
``io_manager.py``)::

    host: dut name%
    RX:   m-dut-passthrough(name)
    RX:   m-ready                      <- the interface board is done: it answers first
    RX:   [dut]: m-name-dut-[...]      <- then the DUT's own reply, relayed line by line
    RX:   [dut]: m-ready

The host side runs at 115200 baud; the DUT side at 9600 (the relay adds ~1 ms per character,
modelled when ``dut_baud_delay`` is on). The board's own commands: ``name`` (``tinyML Enhanced
Interface Board``), ``help``, ``dut <command>``; anything else is an unknown command. Its
command buffer is assumed to hold 64 characters: the runner's 26-byte ``db`` chunks via the
interface (``dut db `` + 52 hex = 59 chars) fit, its 31-byte direct chunks (69) would not.
"""

from __future__ import annotations

from typing import Optional

from firmware_bridge.fakes.core import FakeDevice, Faults
from firmware_bridge.fakes.dut import DutOptions, FakeDut, strtok

IFACE_CMD_SIZE = 64
IFACE_NAME = "tinyML Enhanced Interface Board"


class _DutLink:
    """The interface board's UART to the DUT: relays complete lines with ``[dut]: ``."""

    def __init__(self, board: FakeIface) -> None:
        self.board = board
        self.partial = bytearray()

    def deliver(self, data: bytes) -> None:
        self.partial += data
        while True:
            end = self.partial.find(b"\n")
            if end < 0:
                return
            line = bytes(self.partial[:end]).rstrip(b"\r")
            del self.partial[: end + 1]
            self.board.relay(line)

    def hangup(self) -> None:
        pass


class FakeIface(FakeDevice):
    def __init__(
        self,
        dut_options: Optional[DutOptions] = None,
        faults: Optional[Faults] = None,
        dut_baud_delay: bool = True,
    ) -> None:
        super().__init__(faults)
        options = dut_options or DutOptions(energy=True)
        dut_faults = Faults(
            seed=self.faults.seed,
            error_at=self.faults.error_at,
            baud_delay=dut_baud_delay,
        )
        self.dut = FakeDut(options, dut_faults)
        self.dut.baudrate = 9600
        self._cmd = bytearray()
        self._link = _DutLink(self)
        self.dut.attach(self._link)

    def on_boot(self) -> None:
        self._cmd.clear()
        if not self.dut.running:  # the DUT is powered by the meter, not by us: it keeps running
            self.dut.start()
        self.emit_line(IFACE_NAME)
        self.emit_line("m-ready")

    def stop(self) -> None:
        self.dut.stop()
        super().stop()

    def on_bytes(self, data: bytes) -> None:
        for c in data:
            if c == ord("%"):
                command = bytes(self._cmd).decode("latin-1")
                self._cmd.clear()
                self.parse(command)
            elif len(self._cmd) < IFACE_CMD_SIZE:
                self._cmd.append(c)
            else:
                self._cmd[-1] = c

    def parse(self, command: str) -> None:
        self.reply_delay()
        tokens = strtok(command)
        tok = tokens[0] if tokens else ""
        if tok == "name":
            self.emit_line(IFACE_NAME)
        elif tok == "help":
            for line in (
                "help",
                "name              device name",
                "dut               DUT passthrough",
            ):
                self.emit_line(line)
        elif tok == "dut":
            inner = command.split("dut", 1)[1].lstrip(" ")
            self.emit_line(f"m-dut-passthrough({inner})")
            self.emit_line("m-ready")
            self.dut.receive(inner.encode("latin-1") + b"%")
            return
        else:
            self.emit_line(f"e-[Unknown command: {tok}]")
        self.emit_line("m-ready")

    def relay(self, line: bytes) -> None:
        if line:
            self.emit_line("[dut]: " + line.decode("latin-1"))
