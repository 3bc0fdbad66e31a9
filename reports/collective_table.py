"""Render collective sweep rows as the text table nccl-tests prints, so users can compare line by line.

Same columns, widths and number formatting as nccl-tests (src/util.cu getFloatStr, common.cu
headers), one line a size with the out-of-place figures then the in-place ones, and the same footer:
the total of #wrong ("Out of bounds values") and "Avg bus bandwidth", the plain mean of busbw over
every row of both modes. A mode that was not measured (torch offers all_reduce and broadcast only in
place, all_to_all and sendrecv only out of place) shows "n/a" in its four columns and does not count
in the average. A `timing` line under the title says how the time column was taken: its busbw is the
very figure that is judged, plotted and stored (one figure a size). Plain text: a caller may wrap it in rich.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the table is plain formatting; importing torch just for a type would cost seconds
    from clusterbench.probes.collectives import CollectiveRow

_HEADER = (
    "# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}  {:>7}  {:>6}  {:>6}  {:>6}  {:>7}  {:>6}  {:>6}  {:>6}"
)


def _number(value: float, width: int) -> str:
    """nccl-tests' getFloatStr: as many decimals as the width leaves, scientific past it."""
    digits, power = 1, 0
    while value >= digits:
        power += 1
        digits *= 10
    if power < width - 2:
        return f"{value:{width}.2f}"
    if power < width - 1:
        return f"{value:{width}.1f}"
    if power < width + 1:
        return f"{value:{width}.0f}"
    return f"{value:{width}.1e}" if width >= 7 else f"{value:{width}.0e}"


def _mode_columns(row: CollectiveRow | None) -> str:
    if row is None:
        return f"  {'n/a':>7}  {'n/a':>6}  {'n/a':>6}  {'n/a':>6}"
    return (
        f"  {_number(row.time_us, 7)}  {_number(row.algbw_gbps, 6)}  {_number(row.busbw_gbps, 6)}"
        f"  {row.wrong:6g}"
    )


def average_busbw(out_of_place: Sequence[CollectiveRow], in_place: Sequence[CollectiveRow]) -> float:
    """nccl-tests' "Avg bus bandwidth": mean busbw over all rows of both modes (0 when there are none)."""
    rows = [*out_of_place, *in_place]
    return sum(row.busbw_gbps for row in rows) / len(rows) if rows else 0.0


def render_table(
    out_of_place: Sequence[CollectiveRow] = (),
    in_place: Sequence[CollectiveRow] = (),
    *,
    title: str = "",
    timing: str = "",
) -> str:
    """The nccl-tests table of one collective: rows of both modes, matched by size."""
    by_size_out = {row.size_bytes: row for row in out_of_place}
    by_size_in = {row.size_bytes: row for row in in_place}
    lines = [f"# {text}" for text in (title, timing) if text]
    lines += [
        f"# {'':>10}  {'':>12}  {'':>8}  {'':>6}  {'':>6}           out-of-place                       in-place",
        _HEADER.format("size", "count", "type", "redop", "root", *("time", "algbw", "busbw", "#wrong") * 2),
        _HEADER.format("(B)", "(elements)", "", "", "", *("(us)", "(GB/s)", "(GB/s)", "") * 2).rstrip(),
    ]
    for size in sorted(by_size_out.keys() | by_size_in.keys()):
        outside, inside = by_size_out.get(size), by_size_in.get(size)
        first = outside if outside is not None else by_size_in[size]
        lines.append(
            f"{first.size_bytes:12d}  {first.count:12d}  {first.dtype:>8}  {first.redop:>6}  {first.root:6d}"
            + _mode_columns(outside)
            + _mode_columns(inside)
        )
    wrong = sum(row.wrong for row in (*out_of_place, *in_place))
    lines += [
        f"# Out of bounds values : {wrong} {'OK' if wrong == 0 else 'FAILED'}",
        f"# Avg bus bandwidth    : {average_busbw(out_of_place, in_place):g}",
        "#",
    ]
    return "\n".join(lines)


def timing_line(iterations: int, repeats: int) -> str:
    """How the time column was taken, for the line under a table's title."""
    return (f"time: median of {repeats} repeats of ({iterations} back-to-back ops) / {iterations}, the slowest "
            "rank's; busbw from it is the judged figure")
