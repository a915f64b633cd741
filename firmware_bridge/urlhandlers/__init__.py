"""pyserial URL handlers for our fake devices (see :mod:`firmware_bridge.urlschemes`).

pyserial imports ``<this package>.protocol_<scheme>``; for ``fake-dut://`` that is the module
name ``protocol_fake-dut``, which no file can be imported as. Each handler module is therefore
also entered in ``sys.modules`` under its hyphenated name here -- importlib looks there first.
The handlers themselves are tiny; the fakes load only when a URL is opened.
"""

import sys

from . import (
    protocol_fake_dut,
    protocol_fake_iface,
    protocol_fake_inameter,
    protocol_fake_lpm01a,
    protocol_fake_ppk2,
)

for _module in (
    protocol_fake_dut,
    protocol_fake_iface,
    protocol_fake_inameter,
    protocol_fake_lpm01a,
    protocol_fake_ppk2,
):
    sys.modules.setdefault(_module.__name__.replace("_fake_", "_fake-"), _module)
