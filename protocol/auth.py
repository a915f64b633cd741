"""End-to-end authentication of commands: HMAC-SHA256 with a per-device key.

The broker only moves bytes; a stolen broker account (or a compromised broker) must not make a
board run arbitrary models. So the coordinator signs every command for a device that has a key
(``halo-coord device add`` makes one and prints it once for the agent's config), and an agent
configured with that key runs only commands whose signature verifies and whose ``expires_at``
has not passed.

What is signed: :func:`signing_bytes` -- a domain tag, the device id the command is for, and
the command body (without ``sig``) as canonical JSON (sorted keys, no spaces, UTF-8, floats in
Python's shortest round-trip form). ``expires_at`` lives in the body, so it is covered too, and
a signed command must have one: together with the agent's cmd_id deduplication that bounds how
long a recorded command can be replayed.

Compatibility: an unsigned command has no ``sig`` key at all on the wire (see
``Command.to_dict``), so agents that predate signing, and agents without a key, see exactly the
bytes they always did. An agent with a key refuses unsigned commands.

Clock skew: a command counts as expired only ``skew_s`` seconds (default 120) after its
``expires_at`` on the agent's clock, so a board whose clock lags or leads a little still runs
fresh commands. Boards need roughly correct time (NTP) for signed commands.

Python 3.8 compatible; stdlib only.
"""

from __future__ import annotations

import binascii
import dataclasses
import hashlib
import hmac
import json
import os
import time
from typing import Any, Dict, Optional

from .bodies import Command

KEY_BYTES = 32
DOMAIN = b"halofarm-cmd-v1\x00"
DEFAULT_SKEW_S = 120.0


class AuthError(Exception):
    """A command failed authentication; the message is the reason acked to the sender."""


class Expired(AuthError):
    """Correctly signed, but past its expires_at (plus the allowed skew)."""


def new_key() -> str:
    """A fresh device key as 64 lowercase hex digits (what the configs hold)."""
    return binascii.hexlify(os.urandom(KEY_BYTES)).decode("ascii")


def parse_key(text: str) -> bytes:
    """The key bytes from its hex form; ValueError says what is wrong."""
    text = text.strip()
    try:
        key = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise ValueError(
            "a command key is 64 hex digits (as printed by `halo-coord device add`)"
        ) from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"a command key is {2 * KEY_BYTES} hex digits, got {len(text)}")
    return key


def _canonical(data: Dict[str, Any]) -> bytes:
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def signing_bytes(device: str, command: Command) -> bytes:
    """The exact bytes the signature covers."""
    # Validated copy: an int in a float field becomes a float, as on the wire after decode.
    body = Command.from_dict(command.to_dict()).to_dict()
    body.pop("sig", None)
    return DOMAIN + device.encode("utf-8") + b"\x00" + _canonical(body)


def signature(key: bytes, device: str, command: Command) -> str:
    return hmac.new(key, signing_bytes(device, command), hashlib.sha256).hexdigest()


def sign(key: bytes, device: str, command: Command) -> Command:
    """A copy of ``command`` with ``sig`` set; it must carry ``expires_at``."""
    if command.expires_at is None:
        raise ValueError("a signed command needs expires_at")
    unsigned = dataclasses.replace(command, sig=None)
    return dataclasses.replace(unsigned, sig=signature(key, device, unsigned))


def verify(
    key: bytes,
    device: str,
    command: Command,
    now: Optional[float] = None,
    skew_s: float = DEFAULT_SKEW_S,
) -> None:
    """Return if ``command`` is signed with ``key`` for ``device`` and not expired; else raise
    :class:`AuthError` whose message names the problem."""
    if command.sig is None:
        raise AuthError(
            "unsigned command: this agent runs only commands signed with its key "
            "(the coordinator signs commands for devices added with `halo-coord device add`)"
        )
    expected = signature(key, device, command)
    if not hmac.compare_digest(expected, command.sig):
        raise AuthError(
            "bad signature: the command was altered in transit or signed with another key "
            f"than this device's ({device})"
        )
    if command.expires_at is None:
        raise AuthError("signed command without expires_at: refusing a command that never expires")
    now = time.time() if now is None else now
    late = now - command.expires_at
    if late > skew_s:
        raise Expired(
            f"expired: expires_at was {late:.0f} s ago on this device's clock "
            f"(allowed skew {skew_s:g} s); check the clocks (NTP) or send it again"
        )
