"""A fake served over raw TCP on a loopback port, as ser2net's raw mode serves a real device:
the host opens ``socket://127.0.0.1:<port>``. One client at a time; a client that goes away
leaves the device running for the next."""

from __future__ import annotations

import socket
import threading
from typing import Optional

from firmware_bridge.fakes.core import FakeDevice


class TcpPort:
    def __init__(self, device: FakeDevice, host: str = "127.0.0.1", port: int = 0) -> None:
        self.device = device
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((host, port))
        self._server.listen(1)
        self._server.settimeout(0.1)
        self.address = self._server.getsockname()
        self.url = f"socket://{self.address[0]}:{self.address[1]}"
        self._client: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> TcpPort:
        self.device.attach(self)
        self.device.start()
        self._thread = threading.Thread(target=self._run, name="fake-tcp", daemon=True)
        self._thread.start()
        return self

    def deliver(self, data: bytes) -> None:
        with self._lock:
            client = self._client
        if client is not None:
            try:
                client.sendall(data)
            except OSError:
                pass

    def hangup(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(0.1)
            with self._lock:
                self._client = client
            while not self._stop.is_set():
                try:
                    data = client.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not data:
                    break
                self.device.receive(data)
            with self._lock:
                if self._client is client:
                    self._client = None
            client.close()

    def close(self) -> None:
        self._stop.set()
        self.hangup()
        self._server.close()
        if self._thread is not None:
            self._thread.join(5.0)
        self.device.stop()
