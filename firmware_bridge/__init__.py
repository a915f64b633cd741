"""halofarm firmware_bridge: serial devices on the board's USB ports.

* resources (:mod:`.resources`: ports, DUTs, meters as configured; :mod:`.discovery`: what
  is attached, by USB identity), drivers, and the protocols callers rely on (:mod:`.protocols`);
* transport -- one pyserial URL opened robustly (lock, DTR/RTS, stale flush, reader thread,
  reconnect after an unplug, transcript);
* the MLPerf Tiny / EEMBC device-under-test driver (:mod:`firmware_bridge.dut`) and the MCU
  benchmark built on it (:mod:`firmware_bridge.mcu_bench`);
* serial power meters (:mod:`firmware_bridge.meters`): STM32 LPM01A, Nordic PPK2 and the
  halofarm line protocol for a DIY INA219/INA3221 meter;
* faithful fakes of all of them (:mod:`firmware_bridge.fakes`), reachable as pyserial URL
  schemes (``fake-dut://``, ``fake-lpm01a://`` ...) and over real pty pairs.

Python 3.8 compatible; depends on pyserial and numpy only, imports nothing of ours. This
module stays light: import the submodule you need.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
