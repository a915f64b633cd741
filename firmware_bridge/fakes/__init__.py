"""Faithful fakes of the serial devices we drive, for tests and demos where the hardware is not
attached: an MLPerf Tiny / EEMBC DUT (:mod:`.dut`), the energy-mode interface board
(:mod:`.iface`), the LPM01A (:mod:`.lpm01a`), the PPK2 (:mod:`.ppk2`) and the halofarm DIY meter
(:mod:`.inameter`).

Each fake is a :class:`~firmware_bridge.fakes.core.FakeDevice` -- bytes in, bytes out, its own
thread -- reachable two ways:

* as a pyserial URL (``fake-dut://ic01?infer_us=2500``), in this process
  (:mod:`firmware_bridge.fakes.serial_port`);
* over a real pty pair with a stable symlink that survives a simulated unplug
  (:class:`firmware_bridge.fakes.pty_port.PtyPort`; ``python -m firmware_bridge.fakes``).

Fault injection (latency, garbage bytes, errors, noise, sample drops, unplug/replug) is set by
URL query parameters or keyword arguments: see :class:`~firmware_bridge.fakes.core.Faults`.
"""
