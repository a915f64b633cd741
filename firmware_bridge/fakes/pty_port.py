"""A fake on a real pty pair: the host opens a tty path exactly as it would a USB device.

The device owns the master side; the host opens :attr:`PtyPort.path`. That path is a symlink
(like udev's ``/dev/serial/by-id/...``) so it survives a simulated unplug: :meth:`hangup`
closes the master (the host's reads fail with ``EIO``) and removes the link (reopening fails
with ``ENOENT``); after the replug a new pty pair appears behind the same link.

The pty's slave side is kept open here and put in raw mode at once, so nothing the device
writes before the host connects is echoed or cooked -- it waits in the tty's buffer as stale
output, as on a real port. The master is non-blocking: output the host does not drain is held
in a bounded device-side FIFO and dropped beyond it (a real meter overruns the same way).
"""

from __future__ import annotations

import errno
import os
import select
import tempfile
import threading
import tty
from typing import Optional

from firmware_bridge.fakes.core import FakeDevice

FIFO_BYTES = 256 * 1024


class PtyPort:
    """Serve ``device`` on a pty pair until :meth:`close`."""

    def __init__(
        self, device: FakeDevice, link_dir: Optional[str] = None, name: str = "ttyFAKE0"
    ) -> None:
        self.device = device
        self._own_dir = link_dir is None
        self.link_dir = link_dir or tempfile.mkdtemp(prefix="halofarm-pty-")
        self.path = os.path.join(self.link_dir, name)
        self._lock = threading.Lock()
        self._master = -1
        self._slave = -1
        self._pending = bytearray()
        self.dropped_bytes = 0
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: Optional[threading.Thread] = None
        self.tty_path = ""

    def start(self) -> PtyPort:
        self._make_pty()
        self.device.on_replug.append(self.replugged)
        self.device.attach(self)
        self.device.start()
        self._thread = threading.Thread(target=self._run, name="fake-pty", daemon=True)
        self._thread.start()
        return self

    def _make_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        tty_path = os.ttyname(slave)
        tmp = self.path + ".new"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(tty_path, tmp)
        os.replace(tmp, self.path)  # atomic: the link never points nowhere
        with self._lock:
            self._master, self._slave = master, slave
            self._pending.clear()
            self.tty_path = tty_path
        self._poke()

    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # --- link side ---

    def deliver(self, data: bytes) -> None:
        with self._lock:
            if self._master < 0:
                return
            room = FIFO_BYTES - len(self._pending)
            if room < len(data):
                self.dropped_bytes += len(data) - max(room, 0)
                data = data[: max(room, 0)]
            self._pending += data
        self._poke()

    def hangup(self) -> None:
        with self._lock:
            master, slave = self._master, self._slave
            self._master = self._slave = -1
            self._pending.clear()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        for fd in (master, slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._poke()

    def replugged(self) -> None:
        if self._stop.is_set():
            return
        self._make_pty()
        self.device.attach(self)

    # --- the pump between master and device ---

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                master = self._master
                want_write = bool(self._pending)
            rlist = [self._wake_r] + ([master] if master >= 0 else [])
            wlist = [master] if master >= 0 and want_write else []
            try:
                readable, writable, _ = select.select(rlist, wlist, [], 0.1)
            except (OSError, ValueError):
                continue  # the master was closed under us (unplug)
            if self._wake_r in readable:
                os.read(self._wake_r, 4096)
            if master >= 0 and master in readable:
                try:
                    data = os.read(master, 65536)
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EIO, errno.EBADF):
                        raise
                    data = b""
                if data:
                    self.device.receive(data)
            if master >= 0 and master in writable:
                with self._lock:
                    if master != self._master:
                        continue
                    try:
                        n = os.write(master, bytes(self._pending[:65536]))
                        del self._pending[:n]
                    except OSError as exc:
                        if exc.errno not in (errno.EAGAIN, errno.EIO, errno.EBADF):
                            raise

    def close(self) -> None:
        self._stop.set()
        self._poke()
        if self._thread is not None:
            self._thread.join(5.0)
        self.device.stop()
        self.hangup()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._own_dir:
            try:
                os.rmdir(self.link_dir)
            except OSError:
                pass

    def __enter__(self) -> PtyPort:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
