"""PNG plots for the CLI's `--plot out.png` options.

matplotlib is an optional extra, imported only when a plot is asked for. Figures are drawn on
the Agg canvas directly rather than through pyplot, so no global backend or figure state is
touched (a plot from a worker thread or a test cannot disturb another).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from coordinator.errors import UserError

DPI = 120


@contextmanager
def _figure(out: Path, title: str, size: tuple[float, float] = (8.0, 5.0)) -> Iterator[Any]:
    """An Axes on a fresh Agg figure, saved to out as PNG when the block ends."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("plots need matplotlib: pip install 'halofarm[plot]'") from None
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title)
    yield ax
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=DPI, format="png")
    except OSError as exc:
        raise UserError(f"cannot write the plot {out}: {exc.strerror or exc}") from None


def _nothing(what: str) -> UserError:
    return UserError(f"nothing to plot: {what}")


def latency_distribution(groups: dict[str, list[float]], out: Path, title: str) -> Path:
    """One box per group (e.g. per dataset) of latencies in ms, on a log axis."""
    data = {name: [v for v in values if v > 0] for name, values in groups.items()}
    data = {name: values for name, values in data.items() if values}
    if not data:
        raise _nothing("no positive latencies")
    height = max(4.0, 1.5 + 0.35 * len(data))
    with _figure(out, title, (10.0, height)) as ax:
        style = {"showfliers": True, "flierprops": {"markersize": 2}}
        try:
            ax.boxplot(list(data.values()), orientation="horizontal", **style)
        except TypeError:  # matplotlib < 3.10 says it the old way (deprecated since)
            ax.boxplot(list(data.values()), vert=False, **style)
        ax.set_yticks(range(1, len(data) + 1), labels=list(data), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.grid(True, axis="x", which="both", alpha=0.3)
    return out


def latency_vs_macs(points: dict[str, list[tuple[float, float]]], out: Path, title: str) -> Path:
    """Latency (ms) against MACs, one colour per series, log-log."""
    data = {
        name: [(m, ms) for m, ms in pts if m and m > 0 and ms > 0] for name, pts in points.items()
    }
    data = {name: pts for name, pts in data.items() if pts}
    if not data:
        raise _nothing("no point has both MACs and a latency")
    with _figure(out, title) as ax:
        for name, pts in data.items():
            ax.scatter([m for m, _ in pts], [ms for _, ms in pts], s=8, alpha=0.6, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("MACs")
        ax.set_ylabel("latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
        if len(data) > 1:
            ax.legend(fontsize=7)
    return out


def power_trace(t_s: list[float], series: dict[str, list[float]], out: Path, title: str) -> Path:
    """Power (mW) of each rail against time (s)."""
    if not t_s or not series:
        raise _nothing("an empty power trace")
    for rail, values in series.items():
        if len(values) != len(t_s):
            raise ValueError(f"rail {rail}: {len(values)} samples for {len(t_s)} times")
    with _figure(out, title) as ax:
        for rail, values in series.items():
            ax.plot(t_s, values, linewidth=1, label=rail)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("power (mW)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return out


def campaign_progress(series: dict[str, list[tuple[float, int]]], out: Path, title: str) -> Path:
    """Cumulative done jobs per device against hours since the campaign started."""
    data = {device: sorted(pts) for device, pts in series.items() if pts}
    if not data:
        raise _nothing("no job has finished")
    with _figure(out, title) as ax:
        for device, pts in data.items():
            ax.step([h for h, _ in pts], [n for _, n in pts], where="post", label=device)
        ax.set_xlabel("hours since start")
        ax.set_ylabel("jobs done")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return out


def rank_heatmap(
    labels: list[str], matrix: list[list[float | None]], out: Path, title: str
) -> Path:
    """A square matrix of correlations in [-1, 1] (e.g. Spearman between devices), each cell
    annotated with its value; None cells are left blank and marked '-'."""
    if not labels:
        raise _nothing("no rows")
    if any(len(row) != len(labels) for row in matrix) or len(matrix) != len(labels):
        raise ValueError(f"matrix is not {len(labels)} x {len(labels)}")
    values = [[float("nan") if v is None else v for v in row] for row in matrix]
    side = max(5.0, 1.5 + 0.45 * len(labels))
    with _figure(out, title, (side + 1.0, side)) as ax:
        image = ax.imshow(values, vmin=-1.0, vmax=1.0, cmap="RdYlGn")
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ticks = range(len(labels))
        ax.set_xticks(ticks, labels=labels, fontsize=7, rotation=90)
        ax.set_yticks(ticks, labels=labels, fontsize=7)
        size = 7 if len(labels) <= 12 else 5
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                text = "-" if v is None else f"{v:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=size)
    return out
