"""The GPU-to-GPU copy matrix (p2p.copy_gbps) as nvbandwidth prints it, and as the HTML report
draws it: one src x dst matrix per node and direction.

It judges nothing: the slow and PCIe pairs outlined in the plots are those the judge's checks
failed (clusterbench.judge.p2p). A run of many nodes draws the nodes with failed pairs first, at
most MAX_NODES of them; the tables and checks name every one.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterbench.model import Check, Measurement, Verdict
from clusterbench.reports import plots

METRIC = "p2p.copy_gbps"
DIRECTIONS = ("unidirectional", "bidirectional")
MAX_NODES = 4
_TITLES = {
    "unidirectional": "memcpy CE GPU(row) -> GPU(column) bandwidth (GB/s)",
    "bidirectional": "memcpy CE GPU(row) <-> GPU(column) bandwidth (GB/s), both directions summed",
}
_WIDTH = 9

Cells = dict[tuple[int, int], float]  # (src, dst) -> GB/s


@dataclass(frozen=True)
class MatrixPlot:
    title: str
    svg: str
    caption: str


def copy_matrix_cells(measurements: list[Measurement]) -> dict[str, dict[str, Cells]]:
    """host -> direction -> {(src, dst): GB/s}, from the p2p.copy_gbps figures among `measurements`."""
    nodes: dict[str, dict[str, Cells]] = {}
    for m in measurements:
        if m.metric == METRIC and {"src", "dst", "direction"} <= set(m.params):
            cells = nodes.setdefault(m.location.host, {}).setdefault(str(m.params["direction"]), {})
            cells[(int(m.params["src"]), int(m.params["dst"]))] = m.value
    return nodes


def render_copy_matrices(measurements: list[Measurement]) -> str:
    """nvbandwidth's text matrices, for the terminal summary."""
    blocks = []
    for host, directions in sorted(copy_matrix_cells(measurements).items()):
        for direction, cells in sorted(directions.items(), key=lambda item: _order(item[0])):
            gpus = _gpus(cells)
            header = " " * 4 + "".join(str(g).rjust(_WIDTH) for g in gpus)
            lines = [f"# {host}: {_TITLES.get(direction, direction)}", header]
            for src in gpus:
                row = [f"{cells[(src, dst)]:.2f}" if (src, dst) in cells else "-" for dst in gpus]
                lines.append(str(src).ljust(4) + "".join(cell.rjust(_WIDTH) for cell in row))
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def copy_matrix_plots(measurements: list[Measurement], checks: list[Check]) -> list[MatrixPlot]:
    """One plot per node (both directions side by side), nodes with failed pairs first."""
    nodes = copy_matrix_cells(measurements)
    failed = _failed_pairs(checks)
    order = sorted(nodes, key=lambda host: (not any(h == host for h, _, _ in failed), host))
    result = []
    for host in order[:MAX_NODES]:
        panels = []
        for direction, cells in sorted(nodes[host].items(), key=lambda item: _order(item[0])):
            gpus = _gpus(cells)
            position = {gpu: i for i, gpu in enumerate(gpus)}
            values = {(position[a], position[b]): v for (a, b), v in cells.items()}
            flagged = frozenset((position[a], position[b]) for h, d, (a, b) in failed
                                if h == host and d == direction and a in position and b in position)
            panels.append(plots.MatrixPanel(direction, [f"cuda:{g}" for g in gpus], values, flagged))
        title = f"{METRIC} on {host}: source GPU per row; destination per column"
        outlined = sum(len(p.flagged) for p in panels)
        caption = (f"outlined: the {outlined} pairs the judge failed (slow among the node's pairs, or over PCIe)"
                   if outlined else "no pair failed") + "; darker is slower, each panel on its own scale"
        result.append(MatrixPlot(title, plots.heat_matrix(title, "GB/s", panels), caption))
    if len(nodes) > MAX_NODES:
        last = result[-1]
        result[-1] = MatrixPlot(last.title, last.svg, f"{last.caption}; {len(nodes) - MAX_NODES} more nodes not drawn")
    return result


def _failed_pairs(checks: list[Check]) -> set[tuple[str, str, tuple[int, int]]]:
    """(host, direction, (src, dst)) of every failed pair check."""
    found = set()
    for check in checks:
        params = check.params
        if (check.metric == METRIC and check.verdict is Verdict.FAIL and check.location is not None
                and {"src", "dst", "direction"} <= set(params)):
            found.add((check.location.host, str(params["direction"]), (int(params["src"]), int(params["dst"]))))
    return found


def _gpus(cells: Cells) -> list[int]:
    return sorted({gpu for pair in cells for gpu in pair})


def _order(direction: str) -> tuple[int, str]:
    return (DIRECTIONS.index(direction) if direction in DIRECTIONS else len(DIRECTIONS), direction)
