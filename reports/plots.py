"""The HTML report's plots, drawn by matplotlib and returned as SVG text to inline in the page.

Figures are made with matplotlib's object API (`Figure`, never pyplot): no display, no global
backend state shared with whatever else runs in the process, and the canvas matplotlib attaches
is the non-interactive Agg one. Text stays text in the SVG (svg.fonttype "none"), which keeps the
files small and the page searchable; matplotlib escapes it as XML, and mathtext is off, so a host
name with "$" or "<" is drawn as written.

Every plot is bounded whatever the size of the run: bars name at most MAX_BARS locations (the
worst ones), and a histogram shows where all the others lie.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullLocator

from clusterbench.model import Better

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

MAX_BARS = 24  # bars per plot: beyond this the plot shows the worst ones and a histogram of all
HISTOGRAM_BINS = 40
WIDTH_IN = 7.5  # fits an A4/Letter page at 100% and a laptop screen beside the tables
# Margins are set by hand from the labels' lengths: matplotlib's layout engines (constrained,
# tight) draw each figure several times over, which would cost most of the rendering time.
CHAR_IN = 0.062  # the width of one 7-point tick-label character, roughly
TITLE_CHAR_IN = 0.075  # the same for the 9.5-point titles
TITLE_LINE_IN = 0.17  # the height of one more title line
MARGIN_IN = {"left": 0.7, "right": 0.15, "bottom": 0.5, "top": 0.35, "between": 0.9}
GOOD, BAD, NEUTRAL, IDEAL, EXPECT = "#2f6fb0", "#c62828", "#8a8f98", "#2e7d32", "#ef6c00"
RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    # A fixed title position: "auto" (None) makes matplotlib measure every tick label above the axes
    # to place the title, a third of a plot's drawing time; nothing is drawn above our axes.
    "axes.titley": 1.0,
    "axes.titlepad": 5.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def to_svg(figure: Figure) -> str:
    """The figure as an <svg> element (no XML prolog or DOCTYPE, which are invalid inside HTML)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _figure(height_in: float, lefts_in: Sequence[float], bottom_in: float, right_in: float,
            top_in: float = MARGIN_IN["top"]) -> tuple[Figure, list]:
    """A figure of side-by-side panels, each with room for its own y tick labels on its left."""
    figure = Figure(figsize=(WIDTH_IN, height_in))
    panel_in = (WIDTH_IN - sum(lefts_in) - right_in) / len(lefts_in)
    plot_height_in = height_in - bottom_in - top_in
    axes, x_in = [], 0.0
    for left_in in lefts_in:
        x_in += left_in
        rect = (x_in / WIDTH_IN, bottom_in / height_in, panel_in / WIDTH_IN, plot_height_in / height_in)
        axes.append(figure.add_axes(rect))
        x_in += panel_in
    return figure, axes


def _plot(draw, height_in: float, lefts_in: Sequence[float] = (MARGIN_IN["left"],),
          bottom_in: float = MARGIN_IN["bottom"], right_in: float = MARGIN_IN["right"],
          top_in: float = MARGIN_IN["top"]) -> str:
    """Draw with `draw(figure, axes)` under the report's style and return the SVG."""
    with matplotlib.rc_context(RC):
        figure, axes = _figure(height_in, lefts_in, bottom_in, right_in, top_in)
        draw(figure, axes)
        return to_svg(figure)


def wrap_title(title: str, width_in: float = WIDTH_IN - MARGIN_IN["left"] - MARGIN_IN["right"]) -> tuple[str, float]:
    """The title wrapped to the width it stands over, never cut (a long metric and its params run
    past the figure's edge otherwise), and the extra height its further lines need."""
    lines = textwrap.wrap(title.replace(",", ", "), max(20, int(width_in / TITLE_CHAR_IN))) or [title]
    return "\n".join(lines), TITLE_LINE_IN * (len(lines) - 1)


def shorten(label: str, limit: int = 36) -> str:
    """A label cut in its middle, where host names differ least (prefix and device stay)."""
    if len(label) <= limit:
        return label
    head = (limit - 1) // 2
    return label[:head] + "…" + label[-(limit - 1 - head):]


def _human_bytes(n: float) -> str:
    """A message size in binary units, as nccl-tests sweeps them (powers of two)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:g} {unit}"
        n /= 1024
    return f"{n:g} TiB"


def _log2_axis(axis, label) -> None:
    """A base-2 x axis with a tick every factor of 16 at most (1 KiB, 16 KiB, ...): a tick at every
    power of two would crowd the labels and multiply the text matplotlib lays out."""
    axis.set_xscale("log", base=2)
    axis.xaxis.set_major_locator(LogLocator(base=2, subs=(1.0,), numticks=10))
    axis.xaxis.set_minor_locator(NullLocator())
    axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: label(x) if x > 0 else ""))


@dataclass(frozen=True)
class Line:
    label: str
    points: list[tuple[float, float]]  # (x, y), sorted by x


@dataclass(frozen=True)
class Marker:
    """An expected figure: a horizontal line, or a point where the expectation names its x."""

    label: str
    y: float
    x: float | None = None


def busbw_by_size(title: str, lines: Sequence[Line], expectations: Sequence[Marker], unit: str) -> str:
    """Bus bandwidth against message size, one line per group size, expectations marked."""

    def draw(figure, axes):
        (ax,) = axes
        for line in lines:
            xs, ys = zip(*line.points)
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.4, label=line.label)
        for marker in expectations:
            if marker.x is None:
                ax.axhline(marker.y, color=EXPECT, linestyle="--", linewidth=1.1, label=marker.label)
            else:
                ax.plot([marker.x], [marker.y], marker="*", markersize=11, color=EXPECT, linestyle="none",
                        label=marker.label)
        _log2_axis(ax, _human_bytes)
        ax.set_xlabel("message size")
        ax.set_ylabel(f"busbw ({unit})")
        ax.set_title(wrapped, loc="left")
        ax.legend(fontsize=7, loc="upper left")

    wrapped, extra_in = wrap_title(title)
    return _plot(draw, 3.0 + extra_in, top_in=MARGIN_IN["top"] + extra_in)


def scaling(title: str, unit: str, points: Sequence[tuple[int, float, float, str, float | None]],
            floor_ratio: float | None) -> str:
    """A figure against ranks: measured (one marker style per span, each point labelled with its
    efficiency, the same figure as the table's), the ideal line, and the floor (ideal x efficiency
    floor) where the profile gives one. points: (ranks, value, ideal, span, efficiency)."""

    def draw(figure, axes):
        (ax,) = axes
        ordered = sorted(points)
        spans = sorted({p[3] for p in ordered})
        for index, span in enumerate(spans):
            chosen = [p for p in ordered if p[3] == span]
            ax.plot([p[0] for p in chosen], [p[1] for p in chosen], marker="os^D"[index % 4], linewidth=1.4,
                    label=f"measured ({span})" if span else "measured")
        for p in ordered:
            if p[4] is not None:
                ax.annotate(f"{p[4]:.0%}", (p[0], p[1]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ranks = [p[0] for p in ordered]
        ideal = [p[2] for p in ordered]
        ax.plot(ranks, ideal, color=IDEAL, linestyle="--", linewidth=1.1, label="ideal")
        if floor_ratio is not None:
            ax.plot(ranks, [i * floor_ratio for i in ideal], color=BAD, linestyle=":", linewidth=1.0,
                    label=f"efficiency floor {floor_ratio:.0%}")
        _log2_axis(ax, lambda x: f"{x:g}")
        ax.set_xlabel("ranks (labels: efficiency against the ideal)")
        ax.set_ylabel(unit)
        ax.set_title(wrapped, loc="left")
        ax.legend(fontsize=7)

    wrapped, extra_in = wrap_title(title)
    return _plot(draw, 2.8 + extra_in, top_in=MARGIN_IN["top"] + extra_in)


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    outlier: bool


def _worst_first(bars: Sequence[Bar], better: Better) -> list[Bar]:
    return sorted(bars, key=lambda b: (not b.outlier, b.value if better is Better.HIGHER else -b.value))


def location_bars(title: str, unit: str, better: Better, bars: Sequence[Bar], median: float) -> str:
    """One bar per location, stragglers in red and named; beyond MAX_BARS, the worst MAX_BARS bars
    beside a histogram of every location."""
    shown = _worst_first(bars, better)[:MAX_BARS]
    many = len(bars) > MAX_BARS
    if not many:
        shown.sort(key=lambda b: b.label)
    labels = [("! " if b.outlier else "") + shorten(b.label) for b in shown]
    bar_left_in = 0.25 + CHAR_IN * max(len(label) for label in labels)
    lefts_in = (MARGIN_IN["left"], bar_left_in) if many else (bar_left_in,)
    # A title of many params (a training group's) is wrapped rather than cut off at the figure's edge.
    # It stands over the first panel, and with two panels may run on over the second one's labels.
    panel_in = (WIDTH_IN - sum(lefts_in) - MARGIN_IN["right"]) / len(lefts_in)
    title = f"{title}: all {len(bars)}" if many else title
    title_width_in = panel_in + (bar_left_in if many else 0.0)
    title, extra_in = wrap_title(title, title_width_in)
    height = max(1.6, 0.17 * len(shown) + 0.9) + extra_in

    def draw(figure, axes):
        bar_ax = axes[-1]
        bar_ax.barh(range(len(shown)), [b.value for b in shown], color=[BAD if b.outlier else GOOD for b in shown])
        # Labels as plain texts beside the bars rather than tick labels: a tick is five artists (three
        # lines, two texts), which made the ticks most of the cost of a bar plot.
        bar_ax.set_yticks([])
        bar_ax.set_ylim(-0.6, len(shown) - 0.4)
        for index, label in enumerate(labels):
            bar_ax.text(-0.01, index, label, transform=bar_ax.get_yaxis_transform(), ha="right", va="center",
                        fontsize=7)
        bar_ax.invert_yaxis()
        bar_ax.axvline(median, color=NEUTRAL, linestyle="--", linewidth=1)
        bar_ax.set_xlabel(f"{unit} (dashed: median {median:.4g})")
        bar_ax.set_title(f"worst {len(shown)} of {len(bars)}" if many else title, loc="left")
        if many:
            hist_ax = axes[0]
            values = np.fromiter((b.value for b in bars), dtype=float, count=len(bars))
            hist_ax.hist(values, bins=HISTOGRAM_BINS, color=GOOD)
            outliers = [b.value for b in bars if b.outlier]
            if outliers:
                hist_ax.plot(outliers, [0] * len(outliers), "|", color=BAD, markersize=14,
                             label=f"{len(outliers)} stragglers")
                hist_ax.legend(fontsize=7)
            hist_ax.axvline(median, color=NEUTRAL, linestyle="--", linewidth=1)
            hist_ax.set_xlabel(unit)
            hist_ax.set_ylabel("locations")
            hist_ax.set_title(title, loc="left")

    return _plot(draw, height, lefts_in, top_in=MARGIN_IN["top"] + extra_in)


_ENGINEERING = EngFormatter(sep="")


def _large_values_engineering(value: float, position=None) -> str:
    """200k, 1.5M for large figures (plain text, no mathtext); 0.4, not "400m", below a thousand,
    where an SI prefix would read as a different unit ("400m GB/s")."""
    return _ENGINEERING(value, position) if abs(value) >= 1000 else f"{value:g}"


def grouped_bars(title: str, unit: str, groups: Sequence[str], series: Mapping[str, Sequence[float | None]],
                 log: bool = False) -> str:
    """Bars of several series side by side per group (e.g. IOPS per storage target, read and write)."""

    def draw(figure, axes):
        (ax,) = axes
        width = 0.8 / max(1, len(series))
        for index, (name, values) in enumerate(series.items()):
            xs = [g + index * width for g in range(len(groups)) if values[g] is not None]
            ax.bar(xs, [v for v in values if v is not None], width=width, label=name)
        ticks = [g + (len(series) - 1) * width / 2 for g in range(len(groups))]
        ax.set_xticks(ticks, [shorten(g, 30) for g in groups], fontsize=7)
        if log:
            ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(_large_values_engineering))
        ax.set_ylabel(unit)
        ax.set_title(wrapped, loc="left")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them

    legend_in = 0.3 + CHAR_IN * max(len(name) for name in series)
    wrapped, extra_in = wrap_title(title, WIDTH_IN - MARGIN_IN["left"] - legend_in)
    return _plot(draw, 2.6 + extra_in, right_in=legend_in, top_in=MARGIN_IN["top"] + extra_in)


def trend(title: str, unit: str, labels: Sequence[str], values: Sequence[float], current: float | None) -> str:
    """A metric over stored runs, oldest first, this run marked at the right. `labels` name each
    run distinctly (sections.run_labels: date and time, the run ID where those repeat)."""

    def draw(figure, axes):
        (ax,) = axes
        xs = list(range(len(values)))
        ax.plot(xs, values, marker="o", markersize=3, color=GOOD, label="earlier runs")
        tick_labels = list(labels)
        if current is not None:
            ax.plot([len(values)], [current], marker="*", markersize=12, color=EXPECT, linestyle="none",
                    label="this run")
            tick_labels.append("this run")
        step = max(1, math.ceil(len(tick_labels) / 8))
        ax.set_xticks(range(0, len(tick_labels), step), tick_labels[::step], fontsize=7, rotation=20, ha="right")
        ax.set_xlim(-0.5, len(tick_labels) - 0.5)
        ax.set_ylabel(unit)
        ax.set_title(wrapped, loc="left")
        ax.legend(fontsize=7)

    wrapped, extra_in = wrap_title(title)
    bottom_in = 0.45 + CHAR_IN * 0.5 * max((len(label) for label in labels), default=10)  # rotated labels
    return _plot(draw, 2.3 + bottom_in + extra_in, bottom_in=bottom_in, top_in=MARGIN_IN["top"] + extra_in)


MATRIX_TEXT_MAX = 12  # above this many rows the cells are too small to write their values in


@dataclass(frozen=True)
class MatrixPanel:
    """One square matrix (a copy matrix: source per row, destination per column); cells absent from
    `values` (the diagonal) stay blank, `flagged` ones are outlined in red."""

    title: str
    labels: list[str]
    values: dict[tuple[int, int], float]  # (row, column) positions in `labels` -> value
    flagged: frozenset[tuple[int, int]] = frozenset()


def heat_matrix(title: str, unit: str, panels: Sequence[MatrixPanel]) -> str:
    """Square heat maps side by side, each on its own colour scale (a bidirectional figure is twice a
    one-way one), darker is lower; each cell carries its value while the matrix is small enough."""
    lefts_in = [0.25 + CHAR_IN * max((len(label) for label in p.labels), default=4) for p in panels]
    panel_in = (WIDTH_IN - sum(lefts_in) - MARGIN_IN["right"]) / max(1, len(panels))
    wrapped, extra_in = wrap_title(title)
    bottom_in, top_in = 0.45, MARGIN_IN["top"] + TITLE_LINE_IN + extra_in
    colours = matplotlib.colormaps["viridis"].with_extremes(bad="white")

    def draw(figure, axes):
        for ax, panel in zip(axes, panels):
            size = len(panel.labels)
            grid = np.full((size, size), np.nan)
            for (row, column), value in panel.values.items():
                grid[row, column] = value
            shown = grid[~np.isnan(grid)]
            low, high = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
            ax.imshow(grid, cmap=colours, vmin=low, vmax=high if high > low else low + 1)
            ax.grid(False)
            ax.set_xticks(range(size), panel.labels, fontsize=7, rotation=90 if size > 8 else 0)
            ax.set_yticks(range(size), panel.labels, fontsize=7)
            ax.set_xlabel("destination")
            ax.set_ylabel("source")
            ax.set_title(panel.title, loc="left", fontsize=8)
            if size <= MATRIX_TEXT_MAX:
                middle = (low + high) / 2
                for (row, column), value in panel.values.items():
                    ax.text(column, row, f"{value:.0f}" if value >= 100 else f"{value:.3g}", ha="center",
                            va="center", fontsize=6, color="white" if value < middle else "black")
            for row, column in panel.flagged:
                ax.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor=BAD, linewidth=1.6))
        # The figure's title over both panels, each panel's own title under it.
        figure.text(0.01, 1 - 0.08 / height_in, f"{wrapped} ({unit})", fontsize=9.5, va="top")

    height_in = panel_in + bottom_in + top_in
    return _plot(draw, height_in, lefts_in, bottom_in=bottom_in, top_in=top_in)
