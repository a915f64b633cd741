"""`halo-coord`: the coordinator's command line. Errors a user can fix print one line and exit 2."""

from __future__ import annotations

import os
import sqlite3
import sys

# The coordinator's numpy work is many small matrices (zoo calibration, per-device fits), where
# OpenBLAS's one-thread-per-core default spins idle workers: an int8 nb201 model calibrated in
# 348 ms with the default and 125 ms with one thread. It must be set before numpy loads; an
# explicit setting in the environment wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import click  # noqa: E402

from coordinator.analysis.cli import analyze  # noqa: E402
from coordinator.analysis.predict_cli import predict  # noqa: E402
from coordinator.broker_cli import broker  # noqa: E402
from coordinator.campaign.cli import campaign  # noqa: E402
from coordinator.campaign.onboard import onboard  # noqa: E402
from coordinator.dataset.cli import dataset  # noqa: E402
from coordinator.demo import demo  # noqa: E402
from coordinator.device_cli import device  # noqa: E402
from coordinator.errors import UserError  # noqa: E402
from coordinator.farm_cli import bench, devices, export, results  # noqa: E402
from coordinator.halo_cli import halo  # noqa: E402
from coordinator.mcu_cli import mcu  # noqa: E402
from coordinator.serve import serve  # noqa: E402
from coordinator.zoo.cli import zoo  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """halofarm coordinator: plan, run and analyse measurements on a farm of edge boards.

    \b
    Examples:
      halo-coord demo
      halo-coord broker start
      halo-coord bench --device pi4-01 --wait zoo/*.tflite
      halo-coord zoo generate --space nb201 --sample 20 --seed 0 --out zoo/
    """


for _command in (
    demo,
    broker,
    devices,
    device,
    bench,
    mcu,
    results,
    export,
    campaign,
    serve,
    onboard,
    dataset,
    analyze,
    predict,
    zoo,
    halo,
):
    cli.add_command(_command)


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"halo-coord: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="halo-coord", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        _fail(exc.format_message().replace("\n", " "))
    except UserError as exc:
        _fail(str(exc).replace("\n", " "))
    except sqlite3.OperationalError as exc:
        if "readonly" not in str(exc):
            raise
        # A store on a read-only file or file system opens and reads; only a write finds out.
        _fail(f"the store is read-only ({exc}); give --store (or $HALOFARM_STORE) a writable file")
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
