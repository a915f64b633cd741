"""Serial power meters: drivers that stream a meter's samples, integrate them into energy at
the meter's full rate, and keep the timestamp events the DUT marks windows with.

* :mod:`.base` -- what every meter offers (the protocol callers rely on): :class:`~.base.Meter`,
  :class:`~.base.MeterSnapshot`, :class:`~.base.MeterEvent`, the meter-to-host clock map;
* :mod:`.lpm01a`, :mod:`.ppk2`, :mod:`.inameter` -- the drivers;
* :mod:`.factory` -- :func:`~.factory.open_meter` by kind or by URL.
"""
