"""The terminal summary: every check, every unjudged figure, and the run's verdict, as rich tables."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table
from rich.text import Text

from clusterbench.judge import format_value
from clusterbench.metrics import METRICS
from clusterbench.model import Check, Measurement
from clusterbench.reports.overview import (
    Caveat,
    caveats,
    describe_nodes,
    describe_world,
    expected_nodes,
    outlier_tolerance,
)
from clusterbench.reports.stragglers import find_stragglers, per_rank_measurements
from clusterbench.results import NO_EXPECTATION, RunResults, TestOutcome

VERDICT_STYLES = {
    "PASS": "bold green",
    "WARN": "bold yellow",
    "FAIL": "bold red",
    "NOT MEASURED": "bold magenta",
    NO_EXPECTATION: "bold cyan",
}


def _plain(*cells: str) -> list[Text]:
    """Cells as literal text: names like test_gemm[bf16] must not be read as rich markup."""
    return [Text(cell) for cell in cells]


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


def _where(location, show_rank: bool) -> str:
    if location is None:
        return "-"
    text = f"{location.host}/{location.device}"
    return f"{text} r{location.rank}" if show_rank else text


CHECK_COLUMNS = ("Verdict", "Metric", "Params", "Where", "Observed", "Target", "Margin", "Provenance")


def _longest_token(texts: list[str]) -> int:
    """The widest word among `texts`: a column at least this wide wraps between words, never inside one."""
    return max((len(word) for text in texts for word in text.split()), default=1)


def _check_cells(check: Check, show_rank: bool) -> list[str]:
    margin = "-" if check.margin is None else f"{check.margin:+.1%}"
    return [
        check.verdict.value,
        check.metric,
        _params(check.params),
        _where(check.location, show_rank),
        format_value(check.observed, check.unit),
        format_value(check.target, check.unit),
        margin,
        check.provenance,
    ]


def _checks_table_min_width(checks: list[Check], show_rank: bool) -> int:
    """The narrowest the checks table can be with no cell cut: every column but Params whole,
    Params at its widest word, plus the borders and padding (3 characters a column, and 1)."""
    rows = [_check_cells(check, show_rank) for check in checks]
    widths = [
        _longest_token([column] + [r[i] for r in rows]) if column == "Params" else max(len(column),
                                                                                       *(len(r[i]) for r in rows))
        for i, column in enumerate(CHECK_COLUMNS)
    ]
    return sum(widths) + 3 * len(widths) + 1


def _checks_table(checks: list[Check], show_rank: bool) -> Table:
    rows = [_check_cells(check, show_rank) for check in checks]
    table = Table(title="Checks", title_justify="left", show_lines=False)
    for i, column in enumerate(CHECK_COLUMNS):
        fixed = column not in ("Params",)
        table.add_column(column, no_wrap=fixed, overflow="fold",
                         min_width=_longest_token([column] + [r[i] for r in rows]))
    for check, cells in zip(checks, rows):
        table.add_row(Text(cells[0], style=VERDICT_STYLES[check.verdict.value]), *_plain(*cells[1:]))
    return table


def _checks_lines(checks: list[Check], show_rank: bool) -> list[Text]:
    """One check a line with every field, for a terminal too narrow for the table."""
    lines = [Text("Checks (one a line: the table does not fit this terminal)")]
    for check in checks:
        cells = _check_cells(check, show_rank)
        fields = "  ".join(f"{name.lower()}={value or '-'}" for name, value in zip(CHECK_COLUMNS[1:], cells[1:]))
        lines.append(Text.assemble((cells[0], VERDICT_STYLES[check.verdict.value]), "  ", fields))
    return lines


def _headline(measurements: list[Measurement]) -> list[tuple[Measurement, int]]:
    """One row per figure, a sweep (e.g. over message sizes) shown at its largest point.

    Returns (measurement, how many points of its sweep it stands for)."""
    groups: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        sweep_param = METRICS[m.metric].judged_at_max if m.metric in METRICS else None
        key = (m.metric, m.location, tuple(sorted((k, str(v)) for k, v in m.params.items() if k != sweep_param)))
        groups.setdefault(key, []).append(m)
    rows = []
    for group in groups.values():
        sweep_param = METRICS[group[0].metric].judged_at_max if group[0].metric in METRICS else None
        largest = max(group, key=lambda m: m.params.get(sweep_param, 0)) if sweep_param else group[0]
        rows.extend([(largest, len(group))] if sweep_param else [(m, 1) for m in group])
    return rows


def _unjudged_table(measurements: list[Measurement], show_rank: bool) -> Table:
    table = Table(title="Measured, no expectation in the profile (sweeps at their largest size)", title_justify="left")
    rows = []
    for m, points in _headline(measurements):
        params = _params(m.params) + (f" (largest of {points})" if points > 1 else "")
        rows.append([m.metric, params, _where(m.location, show_rank), format_value(m.value, m.unit)])
    for i, column in enumerate(("Metric", "Params", "Where", "Value")):
        table.add_column(column, overflow="fold", no_wrap=column != "Params",
                         min_width=_longest_token([column] + [r[i] for r in rows]))
    for row in rows:
        table.add_row(*_plain(*row))
    return table


def _not_measured_table(tests: list[TestOutcome]) -> Table:
    table = Table(title="Not measured (skipped, never passed)", title_justify="left")
    table.add_column("Test", overflow="fold")
    table.add_column("Reason", overflow="fold")
    for test in tests:
        table.add_row(*_plain(test.nodeid.split("::")[-1], test.message))
    return table


MAX_STRAGGLERS = 10  # the terminal names the worst; report.html and summary.md list more


def _stragglers_table(results: RunResults) -> Table | None:
    """The worst stragglers (nodes first), by the rule of clusterbench.reports.stragglers; None when none."""
    stragglers = find_stragglers(results.measurements + per_rank_measurements(results.measurements),
                                 outlier_tolerance(results))
    if not stragglers:
        return None
    shown = stragglers[:MAX_STRAGGLERS]
    more = f", {len(stragglers) - len(shown)} more in report.html" if len(stragglers) > len(shown) else ""
    table = Table(title=f"Stragglers: worse than their peers' median (worst first{more})", title_justify="left")
    for column in ("Where", "Figure", "Value", "Median", "Worse by"):
        table.add_column(column, overflow="fold", no_wrap=column in ("Value", "Median", "Worse by"))
    for s in shown:
        table.add_row(*_plain(s.where, s.label, format_value(s.value, s.unit), format_value(s.median, s.unit),
                              f"{s.shortfall:.1%}"))
    return table


def _caveats_table(found: list[Caveat]) -> Table:
    table = Table(title="Caveats: these figures are not what their names say", title_justify="left")
    table.add_column("Caveat", overflow="fold", ratio=3)
    table.add_column("Figures", overflow="fold", ratio=2)
    for c in found:
        more = f" and {c.figures_left_out} more" if c.figures_left_out else ""
        table.add_row(Text(c.text, style="bold yellow"), Text(", ".join(c.figures) + more))
    return table


def _world(results: RunResults) -> str:
    run = results.run
    nodes, expected = len(run.hosts), expected_nodes(results)
    world = describe_world(run.world_size, run.local_ranks)
    return f"{describe_nodes(nodes, expected)} · {world}" if nodes < expected else world


# Without a terminal (a CI log) nothing limits a line: tables take the width their content needs.
UNLIMITED_WIDTH = 100_000


def render_summary(results: RunResults, *, width: int | None, color: bool) -> str:
    """The summary as text (with ANSI styles when `color`), for pytest's terminal writer to print.

    `width` is the terminal's; None (no terminal: a CI log) keeps every table whole at the width its
    content needs. In a terminal too narrow for the checks table, each check takes one line.
    """
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width or UNLIMITED_WIDTH,
        force_terminal=color,
        color_system="standard" if color else None,
        soft_wrap=width is None,
    )
    judged = {(c.metric, tuple(sorted(c.params.items())), c.location) for c in results.checks}
    unjudged = [m for m in results.measurements if (m.metric,
                                                    tuple(sorted(m.params.items())), m.location) not in judged]
    run = results.run
    show_rank = run.world_size > 1
    backend = f" · backend {run.backend}" if run.backend else ""
    console.print(
        Text.assemble(
            "cluster ",
            (run.cluster, "bold"),
            f" · {', '.join(run.hosts)} · {_world(results)} · launcher {run.launcher}{backend}"
            f"{' · quick' if run.quick else ''}",
        )
    )
    if results.checks:
        table = _checks_table(results.checks, show_rank)
        if width is not None and _checks_table_min_width(results.checks, show_rank) > width:
            for line in _checks_lines(results.checks, show_rank):
                console.print(line)
        else:
            console.print(table)
    if unjudged:
        console.print(_unjudged_table(unjudged, show_rank))
    stragglers = _stragglers_table(results)
    if stragglers is not None:
        console.print(stragglers)
    skipped = [t for t in results.tests if t.outcome == "skipped"]
    if skipped:
        console.print(_not_measured_table(skipped))
    found = caveats(results)
    if found:
        console.print(_caveats_table(found))
    # The test counts are pytest's own (its last line says the same); the check counts beside them.
    tests = " · ".join(f"{n} {label}" for label, n in results.test_counts().items()) or "no test"
    checks = " · ".join(f"{n} {verdict}" for verdict, n in results.counts().items())
    verdict = results.verdict
    console.print(Text.assemble("verdict: ", (verdict, VERDICT_STYLES.get(verdict, "bold")),
                                f"  (tests: {tests}; checks: {checks})"))
    console.print(Text(results.verdict_note(), style="cyan" if verdict == NO_EXPECTATION else ""))
    return buffer.getvalue()
