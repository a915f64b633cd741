"""Serve fakes on pty pairs, for demos and for trying drivers by hand::

    python -m firmware_bridge.fakes 'fake-dut://ic01?board=b1' 'fake-ppk2://?board=b1' \\
        --dir /tmp/mcu

prints one JSON object per device (``{"url": ..., "path": ..., "tty": ...}``) and then
``{"ready": true}``, and serves until SIGINT/SIGTERM. ``path`` is a symlink that survives a
simulated unplug; open it like ``/dev/ttyACM0``. Devices whose URLs name the same ``board`` share
a supply and timestamp GPIO (the DUT's inferences show up on the meter).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import List, Optional

from firmware_bridge.fakes.pty_port import PtyPort
from firmware_bridge.fakes.registry import make_device


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m firmware_bridge.fakes", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("urls", nargs="+", help="fake device URLs (fake-dut://ic01?...)")
    parser.add_argument("--dir", help="directory for the tty symlinks (default: a temp dir)")
    args = parser.parse_args(argv)
    ports = []
    try:
        for i, url in enumerate(args.urls):
            try:
                device = make_device(url)
            except ValueError as exc:
                parser.error(str(exc))
            port = PtyPort(device, args.dir, name=f"tty{url.split(':', 1)[0].upper()}{i}").start()
            ports.append(port)
            print(json.dumps({"url": url, "path": port.path, "tty": port.tty_path}), flush=True)
        print(json.dumps({"ready": True}), flush=True)
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
    finally:
        for port in ports:
            port.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
