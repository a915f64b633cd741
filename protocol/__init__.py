"""halofarm wire protocol: topics, message envelope and bodies, validation. Stdlib only."""

from __future__ import annotations

from .bodies import (
    CHUNK_MAX,
    MESSAGE_TYPES,
    Ack,
    BenchResult,
    BenchSpec,
    BenchStats,
    BlobChunk,
    BlobRequest,
    Body,
    Caps,
    Command,
    Heartbeat,
    McuSpec,
    Progress,
    Status,
    pack_ns,
    unpack_ns,
)
from .envelope import (
    MAX_COMMAND_BYTES,
    MAX_MESSAGE_BYTES,
    SCHEMA_VERSION,
    Envelope,
    decode,
    encode,
    make,
)
from .errors import ProtocolError
from .topics import INGEST_SHARED, TopicRef, device_topic, filter_all, job_topic, parse_topic

__all__ = [
    "CHUNK_MAX",
    "INGEST_SHARED",
    "MAX_COMMAND_BYTES",
    "MAX_MESSAGE_BYTES",
    "MESSAGE_TYPES",
    "SCHEMA_VERSION",
    "Ack",
    "BenchResult",
    "BenchSpec",
    "BenchStats",
    "BlobChunk",
    "BlobRequest",
    "Body",
    "Caps",
    "Command",
    "Envelope",
    "Heartbeat",
    "McuSpec",
    "Progress",
    "ProtocolError",
    "Status",
    "TopicRef",
    "decode",
    "device_topic",
    "encode",
    "filter_all",
    "job_topic",
    "make",
    "pack_ns",
    "parse_topic",
    "unpack_ns",
]
