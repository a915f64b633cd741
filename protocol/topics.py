"""MQTT topic names: build, parse and subscribe.

Every leaf name equals the message type carried on it, so ``device_topic(dev, env.type)`` is
the topic for a device-level message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from .errors import ProtocolError
from .fields import ID

PREFIX = "halo/v1"

# leaf -> path below halo/v1/dev/{dev}/
DEVICE_LEAVES: Dict[str, str] = {
    "status": "status",
    "caps": "caps",
    "hb": "hb",
    "cmd": "cmd",
    "ack": "ack",
    "blob_req": "blob/req",
    "blob_data": "blob/data",
}
# leaf -> path below halo/v1/dev/{dev}/job/{job}/
JOB_LEAVES: Dict[str, str] = {
    "progress": "progress",
    "result": "result",
    "adapt_result": "adapt_result",
}

QOS: Dict[str, int] = {
    "status": 1,
    "caps": 1,
    "hb": 0,
    "cmd": 1,
    "ack": 1,
    "progress": 0,
    "result": 1,
    "adapt_result": 1,
    "blob_req": 1,
    "blob_data": 1,
}
RETAINED = frozenset({"status", "caps"})

INGEST_SHARED = f"$share/ingest/{PREFIX}/dev/+/job/+/result"

_BY_PATH = {path: leaf for leaf, path in DEVICE_LEAVES.items()}


@dataclass(frozen=True)
class TopicRef:
    device: str
    leaf: str
    job_id: Optional[str] = None


def check_id(value: str, field: str = "device") -> str:
    """A device or job id: one topic level, no wildcards, safe as a file name."""
    return ID(value, field)


def device_topic(device: str, leaf: str) -> str:
    if leaf not in DEVICE_LEAVES:
        raise ProtocolError("leaf", _unknown_leaf(leaf, DEVICE_LEAVES))
    return f"{PREFIX}/dev/{check_id(device)}/{DEVICE_LEAVES[leaf]}"


def job_topic(device: str, job_id: str, leaf: str) -> str:
    if leaf not in JOB_LEAVES:
        raise ProtocolError("leaf", _unknown_leaf(leaf, JOB_LEAVES))
    return "{}/dev/{}/job/{}/{}".format(
        PREFIX, check_id(device), check_id(job_id, "job_id"), JOB_LEAVES[leaf]
    )


def filter_all(leaf: str) -> str:
    """Subscription filter for ``leaf`` from every device (and every job)."""
    if leaf in DEVICE_LEAVES:
        return f"{PREFIX}/dev/+/{DEVICE_LEAVES[leaf]}"
    if leaf in JOB_LEAVES:
        return f"{PREFIX}/dev/+/job/+/{JOB_LEAVES[leaf]}"
    raise ProtocolError("leaf", _unknown_leaf(leaf, {**DEVICE_LEAVES, **JOB_LEAVES}))


def parse_topic(topic: str) -> TopicRef:
    """Split a received topic into device, leaf and job id; anything else is rejected."""
    if not isinstance(topic, str):
        raise ProtocolError("topic", f"must be a string, got {type(topic).__name__}")
    head = PREFIX + "/dev/"
    if not topic.startswith(head):
        raise ProtocolError("topic", f"{topic[:200]!r} does not start with {head!r}")
    parts = topic[len(head) :].split("/")
    device = check_id(parts[0])
    rest = "/".join(parts[1:])
    if rest in _BY_PATH:
        return TopicRef(device, _BY_PATH[rest])
    if len(parts) == 4 and parts[1] == "job" and parts[3] in JOB_LEAVES:
        return TopicRef(device, parts[3], check_id(parts[2], "job_id"))
    raise ProtocolError("topic", f"unknown halofarm topic {topic[:200]!r}")


def _unknown_leaf(leaf: object, known: Dict[str, str]) -> str:
    return "unknown leaf {!r}; expected one of {}".format(leaf, ", ".join(sorted(known)))
