"""The coordinator's control plane: send commands to devices and serve the model blobs they ask
for.

A command is recorded in the store before it is published (so its acks always find a job row),
published QoS 1 to the device's persistent session, and may be re-sent with the same cmd_id at
any time: the agent deduplicates by cmd_id. The agent judges ``expires_at`` by its own clock, so
for a board whose clock is known to be off (boards without a battery-backed clock and no NTP run
days behind) the command goes out with ``expires_at`` in the board's time.

Blob requests are answered from the store's blobs (`Store.put_blob_file`) in chunks of at most
`protocol.bodies.CHUNK_MAX` bytes; a blob the store does not know gets an answer with `error`
set, so the device fails the job with a reason instead of waiting forever. A device is served
only blobs named in a command dispatched to it, so one board cannot fetch another's models by
guessing their sha256.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from dataclasses import replace

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from coordinator.broker import default_state_dir
from coordinator.connect import BrokerTarget
from coordinator.errors import UserError
from coordinator.registry import CLOCK_WARN_S
from coordinator.security import DeviceKeys, SecureSetup
from coordinator.store import Store, StoreError
from protocol.auth import sign
from protocol.bodies import CHUNK_MAX, BenchSpec, BlobChunk, BlobRequest, Command
from protocol.envelope import decode, encode, make
from protocol.errors import ProtocolError
from protocol.topics import DEVICE_LEAVES, PREFIX, device_topic, parse_topic

log = logging.getLogger(__name__)

# Shared, so that when several coordinator processes run, each request is answered once.
BLOB_REQUESTS = f"$share/blobs/{PREFIX}/dev/+/{DEVICE_LEAVES['blob_req']}"
# A command nobody picked up within this time is not run (MQTT 5 message expiry + expires_at).
DEFAULT_COMMAND_TTL_S = 24 * 3600.0


def new_cmd_id() -> str:
    return uuid.uuid4().hex


def new_command(kind: str, ttl_s: float = DEFAULT_COMMAND_TTL_S, **body: object) -> Command:
    """A fresh command of ``kind`` (its body as keyword: bench=, mcu=, adapt=) expiring in
    ``ttl_s``."""
    return Command(cmd_id=new_cmd_id(), kind=kind, expires_at=time.time() + ttl_s, **body)


def bench_command(spec: BenchSpec, ttl_s: float = DEFAULT_COMMAND_TTL_S) -> Command:
    return new_command("bench", ttl_s, bench=spec)


def on_device_clock(command: Command, offset_s: float | None) -> Command:
    """``command`` as the device should get it: ``expires_at`` moved into the device's clock
    when that is off from ours by more than CLOCK_WARN_S (``offset_s``: its clock minus ours,
    from its heartbeats), so it expires when meant to on the board. Smaller offsets are left
    to the agent's skew allowance (protocol.auth)."""
    if command.expires_at is None or offset_s is None or abs(offset_s) <= CLOCK_WARN_S:
        return command
    return replace(command, expires_at=max(0.0, command.expires_at + offset_s))


def command_blobs(data: object) -> set[str]:
    """Every sha256 a command's JSON names (bench model, mcu input, adapt CSVs, optimizer)."""
    if isinstance(data, dict):
        found = set()
        for key, value in data.items():
            if key.endswith("sha256") and isinstance(value, str):
                found.add(value)
            else:
                found |= command_blobs(value)
        return found
    if isinstance(data, list):
        return set().union(*(command_blobs(v) for v in data))
    return set()


def blob_answer(store: Store, request: BlobRequest) -> BlobChunk:
    """The chunk a blob request asks for (pure apart from reading the store)."""
    info = store.blob(request.sha256)
    if info is None:
        return BlobChunk(request.sha256, request.offset, 0, "", error="unknown blob")
    if request.offset > info.size:
        return BlobChunk(
            request.sha256, request.offset, info.size, "", error="offset beyond the blob's end"
        )
    try:
        data = store.read_blob(request.sha256, request.offset, min(request.length, CHUNK_MAX))
    except (KeyError, StoreError) as exc:
        return BlobChunk(request.sha256, request.offset, info.size, "", error=str(exc)[:256])
    return BlobChunk(
        request.sha256, request.offset, info.size, base64.b64encode(data).decode("ascii")
    )


class Controller:
    """One MQTT client that publishes commands and answers blob requests.

    Commands to a device with a command key (`halo-coord device add`) are signed with it;
    `keys` defaults to the managed broker's secure setup, if there is one."""

    def __init__(
        self,
        store: Store,
        broker: BrokerTarget,
        name: str = "ctl",
        keys: DeviceKeys | None = None,
    ) -> None:
        self.store = store
        self.broker = broker
        self.keys = keys or DeviceKeys(SecureSetup(default_state_dir()))
        self._sent_blobs: set[tuple[str, str]] = set()  # (device, sha256) known to be allowed
        self._clock_noted: set[str] = set()  # devices whose clock offset has been logged
        self.blobs_served = 0
        self.bad_requests = 0
        self._ready = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"halo-{name}-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        broker.configure(self._client)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)

    def start(self, timeout: float = 10.0) -> None:
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self._client.loop_start()
        if not self._ready.wait(timeout):
            self.stop()
            raise UserError(
                f"cannot reach the broker at {self.broker.url} within {timeout:g} s; "
                "is it running? (`halo-coord broker status`)"
            )

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Controller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def send(self, device: str, command: Command) -> None:
        """Record, then publish. Safe to call again with the same command (a retry)."""
        key = self.keys.get(device)
        if key is not None and command.expires_at is None:
            # A signed command must expire (protocol.auth).
            command = replace(command, expires_at=time.time() + DEFAULT_COMMAND_TTL_S)
        self.store.record_dispatch(device, command)
        props = Properties(PacketTypes.PUBLISH)
        if command.expires_at is not None:
            # The broker's own clock enforces this one, whatever the device's says.
            props.MessageExpiryInterval = max(1, int(command.expires_at - time.time()))
        offset = self.store.clock_offset(device)
        wire = on_device_clock(command, offset)
        if wire is not command and device not in self._clock_noted:
            self._clock_noted.add(device)
            log.warning(
                "%s's clock is %.0f s %s ours: its commands' expiry is sent in its time",
                device,
                abs(offset),
                "ahead of" if offset > 0 else "behind",
            )
        command = wire
        if key is not None:
            command = sign(key, device, command)
        payload = encode(make(command, device))
        info = self._client.publish(device_topic(device, "cmd"), payload, qos=1, properties=props)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # NO_CONN is fine: paho re-sends QoS 1 after it reconnects.
            raise UserError(f"cannot publish a command to {device}: {mqtt.error_string(info.rc)}")

    # -- paho callbacks (network thread; never block, never raise) --------------------------

    def _blob_sent_to(self, device: str, sha256: str) -> bool:
        # Looked up in the store (another coordinator process may have sent the command);
        # positives are remembered, as a download asks once per chunk.
        if (device, sha256) not in self._sent_blobs:
            if not any(sha256 in command_blobs(job.spec) for job in self.store.jobs(device=device)):
                return False
            self._sent_blobs.add((device, sha256))
        return True

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        client.subscribe(BLOB_REQUESTS, qos=1)
        self._ready.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._ready.clear()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        try:
            ref = parse_topic(msg.topic)
            env = decode(msg.payload, expect_type="blob_req")
            if env.device != ref.device:
                raise ProtocolError("device", f"{env.device!r} does not match the topic")
        except ProtocolError as exc:
            self.bad_requests += 1
            log.warning("ignored a bad blob request on %s: %s", msg.topic, exc)
            return
        try:
            if self._blob_sent_to(ref.device, env.body.sha256):
                chunk = blob_answer(self.store, env.body)
            else:
                # The same answer as for a blob the store lacks: no oracle for what it holds.
                log.warning("%s asked for blob %s, never sent to it", ref.device, env.body.sha256)
                chunk = BlobChunk(env.body.sha256, env.body.offset, 0, "", error="unknown blob")
            client.publish(
                device_topic(ref.device, "blob_data"), encode(make(chunk, ref.device)), qos=1
            )
            self.blobs_served += 1
        except Exception:  # a store hiccup must not kill paho's thread
            log.exception("answering a blob request from %s failed", ref.device)
