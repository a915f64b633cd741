"""The agent's MQTT session: one paho-mqtt 2.x client (VERSION2 callbacks, MQTT v5).

``connect_async`` + ``loop_start`` (a broker that is down at boot is retried, not fatal),
``clean_start=False`` with a SessionExpiryInterval so commands queued while the board was away
are delivered, a reconnect backoff whose minimum is randomised per process (paho's backoff has
no jitter: a lab's boards would otherwise reconnect in lockstep after a broker restart).

paho callbacks run on paho's network thread and only do what must happen per connection
(subscribe, retained ``status`` online and ``caps``) or hand an event to the daemon's queue;
they never touch the database and never block. ``manual_ack``: a received command is
acknowledged to the broker only after the daemon has handled it (see :meth:`Session.ack`),
so a crash in between gets it redelivered.

Python 3.8 compatible.
"""

from __future__ import annotations

import logging
import queue
import random
import ssl
import threading
from typing import Any, Callable, Optional, Tuple

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol import device_topic

from .config import AgentConfig

NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason code 16

log = logging.getLogger(__name__)

# Events put on the daemon's queue (first item is the kind):
#   ("connected", session_present)   ("disconnected", reason)
#   ("message", topic, payload, mid, qos)   ("puback", mid, ok)
Event = Tuple[Any, ...]

RECONNECT_MIN_S = (1.0, 5.0)  # the per-process minimum is drawn from this range
RECONNECT_MAX_S = 120
OFFLINE_PUBLISH_WAIT_S = 3.0


class Session:
    def __init__(
        self,
        config: AgentConfig,
        events: queue.Queue,
        status_payload: Callable[[str], bytes],
        caps_payload: Optional[bytes],
    ) -> None:
        self.config = config
        self.device = config.device_id
        self.events = events
        self._status_payload = status_payload
        self._caps_payload = caps_payload
        self._connected = threading.Event()
        self.topics = {
            leaf: device_topic(self.device, leaf)
            for leaf in ("status", "caps", "hb", "cmd", "ack", "blob_req", "blob_data")
        }

        broker = config.broker
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.device,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=True,
            manual_ack=True,
        )
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            # The broker's certificate must chain to ca_file (or a system CA) and name the
            # URL's host: paho's default context checks the hostname.
            client.tls_set(ca_certs=broker.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        client.will_set(self.topics["status"], status_payload("offline"), qos=1, retain=True)
        self.reconnect_min_s = random.uniform(*RECONNECT_MIN_S)
        client.reconnect_delay_set(min_delay=self.reconnect_min_s, max_delay=RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self.client = client

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.broker.session_expiry_s
        self.client.connect_async(
            self.config.broker.host,
            self.config.broker.port,
            keepalive=self.config.broker.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> Any:
        """paho's publish; returns its MQTTMessageInfo (check ``.rc``; track ``.mid``)."""
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def ack(self, mid: int, qos: int) -> None:
        """PUBACK a received message once it has been handled."""
        if qos > 0:
            self.client.ack(mid, qos)

    def stop(self) -> None:
        """Publish the retained ``offline`` status (waiting briefly for the broker), then
        disconnect cleanly (no LWT) and stop paho's thread."""
        if self.connected:
            info = self.publish(self.topics["status"], self._status_payload("offline"), 1, True)
            try:
                info.wait_for_publish(OFFLINE_PUBLISH_WAIT_S)
            except (RuntimeError, ValueError) as e:  # lost the connection meanwhile
                log.warning("offline status not confirmed by the broker: %s", e)
        self.client.disconnect()
        self.client.loop_stop()

    # --- paho callbacks (paho's thread) ---

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused the connection: %s", self.config.broker.url, reason_code)
            return
        client.subscribe([(self.topics["cmd"], 1), (self.topics["blob_data"], 1)])
        client.publish(self.topics["status"], self._status_payload("online"), 1, retain=True)
        if self._caps_payload is not None:
            client.publish(self.topics["caps"], self._caps_payload, 1, retain=True)
        self._connected.set()
        self.events.put(("connected", bool(flags.session_present)))

    def _on_connect_fail(self, client, userdata) -> None:
        log.warning("cannot reach broker %s; retrying", self.config.broker.url)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        self.events.put(("disconnected", str(reason_code)))

    def _on_message(self, client, userdata, msg) -> None:
        self.events.put(("message", msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # "No matching subscribers" is a success code in MQTT 5, but the message went nowhere:
        # mosquitto 2.0 does not restore shared subscriptions after a restart, so results
        # published before the coordinator's ingest re-subscribes would be lost. Such rows are
        # kept and sent again (the daemon retries them every NO_SUBSCRIBER_RETRY_S).
        delivered = not reason_code.is_failure and reason_code.value != NO_MATCHING_SUBSCRIBERS
        self.events.put(("puback", mid, delivered))
