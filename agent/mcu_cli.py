"""`halo-agent mcu probe|bench`: an MLPerf Tiny / EEMBC device under test on a serial port,
measured here and now (the daemon's ``mcu`` job runs the same code for a configured DUT).

Python 3.8 compatible.
"""

from __future__ import annotations

import json
from typing import Optional

import click

from firmware_bridge import mcu_bench
from firmware_bridge.discovery import list_ports


def _ms(us: Optional[float]) -> str:
    return "-" if us is None else f"{us / 1000:.3f}"


@click.group()
def mcu() -> None:
    """An MCU device under test on a serial port (MLPerf Tiny / EEMBC runner protocol)."""


@mcu.command()
@click.option("--port", "url", help="Any pyserial URL: /dev/ttyACM0, hwgrep://VID:PID, ...")
@click.option("--list", "list_", is_flag=True, help="List this host's serial ports instead.")
@click.option("--interface", is_flag=True, help="Through an energy-mode interface board.")
@click.option("--trace", type=click.Path(dir_okay=False), help="Transcript of every byte.")
@click.option("--json", "as_json", is_flag=True)
def probe(
    url: Optional[str], list_: bool, interface: bool, trace: Optional[str], as_json: bool
) -> None:
    """Identify the DUT on --port (name, firmware profile, model), or list the ports.

    \b
    Examples:
      halo-agent mcu probe --list
      halo-agent mcu probe --port /dev/serial/by-id/usb-STMicroelectronics_STLINK-V3_...-if02
    """
    if list_:
        ports = [p.to_dict() for p in list_ports()]
        if as_json:
            click.echo(json.dumps(ports, indent=1))
        for p in [] if as_json else ports:
            click.echo(" ".join(f"{k}={v}" for k, v in p.items() if v not in (None, "")))
        return
    if not url:
        raise click.UsageError("give --port URL (or --list)")
    found = mcu_bench.probe(url, interface=interface, trace=trace)
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=1))
    elif found.identity is not None:
        for key, value in found.identity.to_dict().items():
            click.echo(f"{key:<10} {value}")
    if found.error is not None:
        raise click.ClickException(f"{url}: {found.error}")


@mcu.command()
@click.option("--port", "url", required=True, help="The DUT's port (any pyserial URL).")
@click.option("--meter", "meter_url", help="A serial power meter's port.")
@click.option(
    "--meter-kind",
    type=click.Choice(["lpm01a", "ppk2", "inameter"]),
    help="The meter's kind (default: guessed from its USB id or fake scheme).",
)
@click.option("--windows", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--min-window-s", type=click.FloatRange(0.001), default=10.0, show_default=True)
@click.option("--warmups", type=click.IntRange(0, 1000), default=1, show_default=True)
@click.option("--input", "input_file", type=click.File("rb"), help="Input tensor for db load.")
@click.option("--interface", is_flag=True, help="Through an energy-mode interface board.")
@click.option("--trace", type=click.Path(dir_okay=False), help="Transcript of every byte.")
@click.option("--json", "as_json", is_flag=True)
def bench(
    url: str,
    meter_url: Optional[str],
    meter_kind: Optional[str],
    windows: int,
    min_window_s: float,
    warmups: int,
    input_file,
    interface: bool,
    trace: Optional[str],
    as_json: bool,
) -> None:
    """Benchmark the DUT by the MLPerf Tiny rules: windows of `infer N W` lasting at least
    --min-window-s each, latency per inference from the DUT's laps, the median of the windows;
    energy from --meter when given.

    \b
    Examples:
      halo-agent mcu bench --port /dev/ttyACM0 --json
      halo-agent mcu bench --port /dev/ttyACM0 --meter hwgrep://1915:c00a --windows 5
    """
    result = mcu_bench.run(
        url,
        meter_url=meter_url,
        windows=windows,
        min_window_s=min_window_s,
        warmups=warmups,
        input_data=None if input_file is None else input_file.read(),
        interface=interface,
        meter_kind=meter_kind,
        trace=trace,
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        for w in result.windows:
            extra = "" if w.energy is None else f"  {w.energy.e_per_inference_uj:.2f} uJ/inf"
            state = "ok" if w.status == "ok" else f"failed: {w.reason}"
            click.echo(f"window {w.index}: n={w.n}  {_ms(w.latency_us)} ms/inf{extra}  {state}")
        click.echo(f"median latency {_ms(result.latency_us_median)} ms per inference")
    if result.status != "ok":
        raise click.ClickException(f"{url}: {result.reason}")
