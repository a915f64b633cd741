"""``python -m power.simboard create|drive|layouts``: lay out a board's tree, drive it, list
the layouts."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, List, Optional

from power.errors import PowerError
from power.simboard.board import IIO_DIR_NAMES, SimBoard
from power.simboard.driver import drive
from power.simboard.layouts import LAYOUTS, rail_names
from power.simboard.waves import WAVE_GRAMMAR, parse_wave

# ---------------------------------------------------------------------------------------------
# Command line


def _cmd_create(args: argparse.Namespace) -> int:
    board = SimBoard(
        args.root, args.layout, args.seed, args.iio_dir_name, args.running_mode
    ).create()
    board.close()
    print(f"{args.layout} board under {board.root}; rails: {', '.join(board.rails())}")
    return 0


def _cmd_drive(args: argparse.Namespace) -> int:
    waves = dict(parse_wave(spec) for spec in args.wave)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def ready(t_ns: int) -> None:
        print(f"ready {t_ns}", flush=True)

    drive(args.root, args.layout, waves, args.update_s, args.log, args.seconds, stop, ready)
    return 0


def _cmd_layouts(args: argparse.Namespace) -> int:
    for key in sorted(LAYOUTS):
        lay = LAYOUTS[key]
        print(f"{key:15} {lay.driver:9} {lay.model}: {', '.join(rail_names(key))}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m power.simboard", description="Simulated INA3221 sysfs trees."
    )
    sub = parser.add_subparsers(dest="command")
    sub.required = True
    p = sub.add_parser("create", help="lay out a board's tree under ROOT (an empty directory)")
    p.add_argument("root")
    p.add_argument("--layout", required=True, choices=sorted(LAYOUTS))
    p.add_argument("--seed", type=int, default=None, help="shuffle device numbers")
    p.add_argument("--iio-dir-name", default="iio:device", choices=IIO_DIR_NAMES)
    p.add_argument("--running-mode", type=int, default=1, choices=(0, 1))
    p.set_defaults(func=_cmd_create)
    p = sub.add_parser("drive", help="write time-varying power until SIGTERM / --seconds")
    p.add_argument("root")
    p.add_argument("--layout", required=True, choices=sorted(LAYOUTS))
    p.add_argument("--wave", action="append", default=[], help=WAVE_GRAMMAR)
    p.add_argument("--log", default=None, help="append binary change records here")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--update-s", type=float, default=0.001)
    p.set_defaults(func=_cmd_drive)
    p = sub.add_parser("layouts", help="list the layouts and their rails")
    p.set_defaults(func=_cmd_layouts)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (PowerError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
