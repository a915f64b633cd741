"""The campaign's rules between jobs, as pure functions of what the store knows and the time:
may the next job start on a device (thermal guard), was a result measured while throttling,
and when is a failed job tried again (backoff).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coordinator.campaign.spec import Retries, Thermal


@dataclass(frozen=True)
class Gate:
    """Whether the next job may start; if not, why (shown in `campaign status`)."""

    ok: bool
    reason: str = ""


def hottest(temps_c: dict[str, float] | None) -> float | None:
    return max(temps_c.values()) if temps_c else None


def thermal_gate(
    rules: Thermal,
    now: float,
    last_finished_at: float | None,
    hb: dict[str, Any] | None,
    hb_at: float | None,
) -> Gate:
    """May a device start its next job?

    The fixed pause counts from the end of its previous job. The cool-down needs a heartbeat
    sent after that job ended (an older one says nothing about the heat the job left), whose
    hottest zone is below the limit and which does not report throttling. After max_wait_s
    the job starts anyway, so one hot board cannot stall a campaign forever.
    """
    if last_finished_at is None:
        return Gate(True)
    waited = now - last_finished_at
    if waited < rules.pause_s:
        return Gate(False, f"pause {rules.pause_s - waited:.0f} s")
    if rules.cooldown_below_c is None and not rules.retry_throttled:
        return Gate(True)
    if waited >= rules.max_wait_s:
        return Gate(True)
    if hb is None or hb_at is None or hb_at <= last_finished_at:
        if rules.cooldown_below_c is None:
            return Gate(True)
        return Gate(False, "waiting for a heartbeat to read the temperature")
    if rules.retry_throttled and hb.get("throttled"):
        return Gate(False, "device reports throttling")
    if rules.cooldown_below_c is not None:
        temp = hottest(hb.get("temps_c"))
        if temp is not None and temp >= rules.cooldown_below_c:
            return Gate(False, f"cooling down: {temp:.1f} C >= {rules.cooldown_below_c:g} C")
    return Gate(True)


def _throttle_active(snap: Any) -> bool:
    return isinstance(snap, dict) and bool(snap.get("active"))


def throttled(env_pre: dict[str, Any] | None, env_post: dict[str, Any] | None) -> bool:
    """Whether the board throttled during a measurement: throttling active before or after,
    or a "has occurred since boot" bit that was clear before and set after."""
    pre = (env_pre or {}).get("throttled")
    post = (env_post or {}).get("throttled")
    if _throttle_active(pre) or _throttle_active(post):
        return True
    if not isinstance(post, dict):
        return False
    pre = pre if isinstance(pre, dict) else {}
    return any(
        value is True and not pre.get(key)
        for key, value in post.items()
        if key.endswith("_occurred")
    )


def backoff_s(rules: Retries, attempt: int) -> float:
    """Delay before attempt `attempt + 1` after attempt `attempt` (1-based) failed."""
    return rules.backoff_s * rules.factor ** max(0, attempt - 1)


def may_retry(rules: Retries, attempt: int) -> bool:
    """`max` retries means at most 1 + max attempts."""
    return attempt <= rules.max
