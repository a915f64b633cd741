"""Test hook, loaded by every Python process started with this directory on PYTHONPATH (the
process under test, its fork server and its benchmark children): the wall clock (time.time,
time.time_ns) steps by HALOFARM_CHAOS_CLOCK_STEP_S seconds once the real clock passes
HALOFARM_CHAOS_CLOCK_STEP_AT, in all of them at once, as an NTP step does. Monotonic and
perf counters are left alone, as the kernel leaves them."""

import os
import time

_STEP_S = float(os.environ.get("HALOFARM_CHAOS_CLOCK_STEP_S") or 0.0)
_AT = float(os.environ.get("HALOFARM_CHAOS_CLOCK_STEP_AT") or 0.0)

if _STEP_S:
    _real_time, _real_time_ns = time.time, time.time_ns

    def _time() -> float:
        now = _real_time()
        return now + _STEP_S if now >= _AT else now

    def _time_ns() -> int:
        now = _real_time_ns()
        return now + int(_STEP_S * 1e9) if now >= _AT * 1e9 else now

    time.time, time.time_ns = _time, _time_ns
