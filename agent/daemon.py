"""``halo-agent run``: the board daemon.

Threads: paho's network thread (callbacks only queue events), the job worker (one job at a
time), and the main loop here, which owns every ``publish()``: it drains the event queue
(commands, blob chunks, PUBACKs, the worker's messages), sends the outbox within its window,
publishes heartbeats, pings the systemd watchdog and stops cleanly on SIGTERM/SIGINT.
Because the watchdog is pinged from this loop, a hung loop gets the service restarted.

Crash safety lives in the state database (see :mod:`agent.jobqueue`, :mod:`agent.outbox`):
SIGKILL at any point loses nothing that was acknowledged to anyone.

Run it as ``halo-agent run --config FILE`` or ``python -m agent.daemon --config FILE``.

Python 3.8 compatible.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import sqlite3
import sys
import threading
import time
from typing import Any, Callable, List, Optional

import paho.mqtt.client as mqtt

from protocol import Caps, Heartbeat, ProtocolError, Status, decode, encode, make

from . import sysfacts
from .blobcache import BlobCache
from .blobfetch import BlobFetcher
from .commands import Acks, CommandHandler
from .config import AgentConfig, ConfigError, load_config
from .jobqueue import JobQueue
from .notify import Notifier
from .outbox import Outbox
from .session import Session
from .statedb import StateDB, StateDBError
from .worker import Worker

log = logging.getLogger("agent.daemon")

TICK_S = 0.5  # longest the loop sleeps, so a stop request is seen quickly
EVENT_BATCH = 1000  # events handled before timers get their turn
WATCHDOG_DEFAULT_S = 10.0  # status/watchdog cadence when systemd sets no watchdog
READY_WITHOUT_BROKER_S = 60.0  # READY=1 anyway (offline) rather than fail the unit's start
PRUNE_EVERY_S = 3600.0
# Messages the broker accepted with "no matching subscribers" (nobody ingesting yet) or
# refused are sent again after this long, and after every reconnect.
NO_SUBSCRIBER_RETRY_S = 5.0
WORKER_JOIN_S = 5.0
DB_TROUBLE_LOG_S = 30.0
# How stale the outbox-budget check may be when a command arrives (it is a SUM over the
# un-acked rows, so not run per command in a burst).
BUDGET_CHECK_S = 1.0


def heartbeat_body(outbox_depth: int, queue_depth: int, running_job: Optional[str]) -> Heartbeat:
    """Health facts for the ``hb`` message (unknown sensors are simply absent)."""
    temps = {k: v for k, v in sysfacts.thermal_c().items() if -273.15 <= v <= 1000.0}
    freqs = {
        name: int(policy["cur_khz"])
        for name, policy in sysfacts.cpufreq().items()
        if isinstance(policy.get("cur_khz"), int) and policy["cur_khz"] >= 0
    }
    throttling = sysfacts.throttling()
    load = sysfacts.load_average()
    return Heartbeat(
        uptime_s=sysfacts.uptime_s() or time.monotonic(),
        load=[max(0.0, x) for x in load] if load else [0.0, 0.0, 0.0],
        temps_c=temps,
        cpu_freq_khz=freqs,
        throttled=None if throttling is None else bool(throttling.get("active")),
        outbox_depth=outbox_depth,
        queue_depth=queue_depth,
        running_job=running_job,
        agent_version=sysfacts.agent_version(),
    )


class Daemon:
    def __init__(self, config: AgentConfig, notifier: Optional[Notifier] = None) -> None:
        self.config = config
        self.device = config.device_id
        self.notifier = notifier or Notifier()
        self.events: queue.Queue = queue.Queue()
        self.started_at = time.time()
        self.version = sysfacts.agent_version()
        self._stop = threading.Event()
        self._db_trouble_logged = float("-inf")
        self._ready = False
        self.session: Optional[Session] = None
        self.worker: Optional[Worker] = None
        # Why new jobs are refused (outbox over outbox_max_bytes), or None.
        self.refusing_jobs: Optional[str] = None
        self._budget_checked_at = -BUDGET_CHECK_S

    def request_stop(self, *_: Any) -> None:
        """Thread- and signal-safe: the main loop stops within TICK_S."""
        self._stop.set()

    def _status_payload(self, state: str) -> bytes:
        status = Status(
            state=state,
            agent_version=self.version,
            started_at=self.started_at,
            refusing_jobs=self.refusing_jobs if state == "online" else None,
        )
        return encode(make(status, self.device))

    def _caps_payload(self) -> Optional[bytes]:
        try:
            return encode(
                make(
                    Caps(
                        **sysfacts.caps(
                            tags=self.config.tags,
                            power=self.config.power.options,
                            mcu_duts=[d.name for d in self.config.mcu_duts],
                        )
                    ),
                    self.device,
                )
            )
        except Exception:
            log.exception("cannot describe this board: no caps message will be published")
            return None

    def _send(self, topic: str, payload: bytes, qos: int) -> None:
        self.events.put(("publish", topic, payload, qos))

    def _wake(self) -> None:
        self.events.put(("wake",))

    def run(self) -> int:
        cfg = self.config
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        log.info(
            "halo-agent %s: device %s, broker %s, state in %s",
            self.version,
            self.device,
            cfg.broker.url,
            cfg.state_dir,
        )
        self.db = StateDB(cfg.db_path)
        try:
            self.outbox = Outbox(self.db, window=cfg.broker.inflight_window)
            self.jobs = JobQueue(self.db, max_queued=cfg.max_queued_jobs)
            for job in self.jobs.recover():
                log.warning("job %s was running when the agent stopped; it runs again", job.job_id)
            self.session = Session(cfg, self.events, self._status_payload, self._caps_payload())
            acks = Acks(self.device, self.outbox, self.session.topics["ack"])
            self.fetcher = BlobFetcher(
                self.device,
                BlobCache(cfg.blob_dir, cfg.cache_max_bytes),
                self.session.topics["blob_req"],
                send=self._send,
            )
            self.worker = Worker(
                self.device,
                self.db,
                self.jobs,
                self.outbox,
                acks,
                self.fetcher,
                send=self._send,
                wake_sender=self._wake,
                power=cfg.power,
                duts=cfg.mcu_duts,
            )
            self.commands = CommandHandler(
                self.db,
                self.jobs,
                acks,
                self.worker.cancel,
                self.worker.wake,
                power=cfg.power,
                duts=cfg.mcu_duts,
                command_key=cfg.command_key,
                skew_s=cfg.max_clock_skew_s,
                refuse_jobs=self._job_refusal,
            )
            self._check_outbox_budget()
            self.notifier.status(f"connecting to {cfg.broker.url}")
            self.session.start()
            self.worker.start()
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _loop(self) -> None:
        assert self.session is not None
        now = time.monotonic()
        ready_deadline = now + READY_WITHOUT_BROKER_S
        next_watchdog = next_heartbeat = now
        next_prune = now + PRUNE_EVERY_S
        next_unpark = now + NO_SUBSCRIBER_RETRY_S
        watchdog_every = self.notifier.watchdog_interval_s or WATCHDOG_DEFAULT_S
        while not self._stop.is_set():
            wait = min(TICK_S, next_watchdog - now, next_heartbeat - now)
            try:
                self._handle_events(self.events.get(timeout=max(0.0, wait)))
                if self.session.connected:
                    self._pump()
            except queue.Empty:
                if self.session.connected:
                    self._guarded(self._pump)
            except sqlite3.OperationalError as e:
                self._db_trouble(e)
            now = time.monotonic()
            if not self._ready and (self.session.connected or now >= ready_deadline):
                self._ready = True
                online = self.session.connected
                self.notifier.ready(self._status_line() if online else "broker unreachable")
            if now >= next_watchdog:
                self._check_outbox_budget()
                self.notifier.watchdog()
                self.notifier.status(self._status_line())
                next_watchdog = now + watchdog_every
            if now >= next_heartbeat:
                self._heartbeat()
                next_heartbeat = now + self.config.heartbeat_s
            if now >= next_unpark:
                self.outbox.unpark()
                next_unpark = now + NO_SUBSCRIBER_RETRY_S
            if now >= next_prune:
                self._guarded(self.outbox.prune)
                self._guarded(self.jobs.prune)
                next_prune = now + PRUNE_EVERY_S

    def _guarded(self, step: Callable[[], Any]) -> None:
        try:
            step()
        except sqlite3.OperationalError as e:
            self._db_trouble(e)

    def _db_trouble(self, error: Exception) -> None:
        """The state database refused a write (disk full, I/O error, read-only remount). The
        daemon stays up: PUBACKs not recorded only mean a message is sent again, and the
        worker keeps an uncommitted result until it can store it. Logged at most every
        DB_TROUBLE_LOG_S; the loop slows down meanwhile instead of spinning."""
        now = time.monotonic()
        if now >= self._db_trouble_logged + DB_TROUBLE_LOG_S:
            log.error(
                "state database %s refuses writes (%s); is the disk full? retrying",
                self.config.db_path,
                error,
            )
            self._db_trouble_logged = now
        self._stop.wait(TICK_S)

    def _status_line(self) -> str:
        assert self.session is not None
        link = "connected" if self.session.connected else "disconnected"
        running = self.worker.current_job if self.worker else None
        refusing = f"; REFUSING JOBS: {self.refusing_jobs}" if self.refusing_jobs else ""
        return (
            f"{link} to {self.config.broker.url}; outbox {self.outbox.depth()}, "
            f"queue {self.jobs.depth()}, running {running or '-'}{refusing}"
        )

    def _job_refusal(self) -> Optional[str]:
        if time.monotonic() - self._budget_checked_at >= BUDGET_CHECK_S:
            self._check_outbox_budget()
        return self.refusing_jobs

    def _check_outbox_budget(self) -> None:
        """Refuse new jobs while the un-sent messages exceed outbox_max_bytes (results are
        never dropped), and say so in the retained status when that changes."""
        self._budget_checked_at = time.monotonic()
        pending, limit = self.outbox.pending_bytes(), self.config.outbox_max_bytes
        was_refusing = self.refusing_jobs is not None
        self.refusing_jobs = None
        if pending >= limit:
            self.refusing_jobs = (
                f"outbox full: {pending} bytes of messages wait for the broker "
                f"(outbox_max_bytes {limit}); new jobs are refused until they are delivered"
            )
        if (self.refusing_jobs is not None) != was_refusing:
            log.warning("%s", self.refusing_jobs or "outbox below its budget: accepting jobs")
            if self.session is not None and self.session.connected:
                self._publish(
                    self.session.topics["status"], self._status_payload("online"), 1, True
                )

    def _handle_events(self, event: Any) -> None:
        acked: List[str] = []
        for _ in range(EVENT_BATCH):
            kind = event[0]
            if kind == "puback":
                msg_id = self.outbox.on_puback(event[1], event[2])
                if msg_id is not None:
                    acked.append(msg_id)
                elif not event[2]:
                    log.debug("message %d refused or unsubscribed; sent again later", event[1])
            elif kind == "message":
                self._on_message(*event[1:])
            elif kind == "publish":
                self._publish(*event[1:])
            elif kind == "connected":
                log.info("connected to %s (session present: %s)", self.config.broker.url, event[1])
                self.outbox.unpark()
            elif kind == "disconnected":
                log.warning("disconnected from %s: %s", self.config.broker.url, event[1])
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
        # One transaction for the whole batch of PUBACKs.
        self.outbox.mark_sent(*acked)

    def _on_message(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        assert self.session is not None
        try:
            if topic == self.session.topics["cmd"]:
                self.commands.handle(payload)
            elif topic == self.session.topics["blob_data"]:
                self.fetcher.deliver(decode(payload, expect_type="blob_data").body)
            else:
                log.warning("message on unexpected topic %r ignored", topic[:200])
        except ProtocolError as e:
            log.warning("invalid message on %s ignored: %s", topic, e)
        except Exception:
            log.exception("message on %s could not be handled", topic)
        finally:
            # After handling: a crash before this point gets the message redelivered.
            self.session.ack(mid, qos)

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        assert self.session is not None
        info = self.session.publish(topic, payload, qos, retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish to %s failed: %s", topic, mqtt.error_string(info.rc))

    def _pump(self) -> None:
        """Hand the oldest un-acked outbox rows to paho, as many as the window allows."""
        assert self.session is not None
        for row in self.outbox.claim():
            info = self.session.publish(row.topic, row.payload, row.qos, row.retain)
            # NO_CONN: paho keeps a QoS>0 message and sends it after reconnecting.
            if info.rc == mqtt.MQTT_ERR_SUCCESS or (
                info.rc == mqtt.MQTT_ERR_NO_CONN and row.qos > 0
            ):
                self.outbox.bind(row.msg_id, info.mid)
            else:
                self.outbox.release(row.msg_id)
                log.warning(
                    "outbox message %s not sent: %s", row.msg_id, mqtt.error_string(info.rc)
                )
                break

    def _heartbeat(self) -> None:
        assert self.session is not None and self.worker is not None
        if not self.session.connected:
            return
        try:
            body = heartbeat_body(self.outbox.depth(), self.jobs.depth(), self.worker.current_job)
            self._publish(self.session.topics["hb"], encode(make(body, self.device)), 0)
        except Exception:
            log.exception("heartbeat skipped")

    def _shutdown(self) -> None:
        self.notifier.stopping("stopping")
        if self.worker is not None and self.worker.is_alive():
            self.worker.stop()
            self.worker.join(WORKER_JOIN_S)
            if self.worker.is_alive():
                log.warning(
                    "job %s interrupted; it runs again after restart", self.worker.current_job
                )
        if self.session is not None:
            self.session.stop()
        self.db.close()
        log.info("stopped")


def configure_logging(level: str = "INFO") -> None:
    """Plain lines on stderr: journald adds the time and the unit."""
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def run_daemon(config: AgentConfig) -> int:
    return Daemon(config).run()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent.daemon", description="the halofarm board daemon"
    )
    parser.add_argument("--config", help="agent TOML file (default: defaults + HALOFARM_* env)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        return run_daemon(load_config(args.config))
    except (ConfigError, StateDBError) as e:
        print(f"halo-agent: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
