"""The terminal summary: every check, every unjudged figure, and the run's verdict, as rich tables."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table
from rich.text import Text

from clusterbench.judge import format_value
from clusterbench.metrics import METRICS
from clusterbench.model import Check, Measurement
from clusterbench.outliers import find_stragglers, per_rank_measurements
from clusterbench.reports.overview import outlier_tolerance
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


def _checks_table(checks: list[Check], show_rank: bool) -> Table:
    table = Table(title="Checks", title_justify="left", show_lines=False)
    for column in ("Verdict", "Metric", "Params", "Where", "Observed", "Target", "Margin", "Provenance"):
        fixed = column in ("Verdict", "Observed", "Target", "Margin", "Provenance")
        table.add_column(column, no_wrap=fixed, overflow="fold", ratio=None if fixed else 2 if column == "Params" else 1, min_width=None if fixed else 10)
    for check in checks:
        where = _where(check.location, show_rank)
        margin = "-" if check.margin is None else f"{check.margin:+.1%}"
        table.add_row(
            Text(check.verdict.value, style=VERDICT_STYLES[check.verdict.value]),
            *_plain(
                check.metric,
                _params(check.params),
                where,
                format_value(check.observed, check.unit),
                format_value(check.target, check.unit),
                margin,
                check.provenance,
            ),
        )
    return table


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
    for column in ("Metric", "Params", "Where", "Value"):
        table.add_column(column, overflow="fold", no_wrap=column == "Value")
    for m, points in _headline(measurements):
        params = _params(m.params) + (f" (largest of {points})" if points > 1 else "")
        table.add_row(*_plain(m.metric, params, _where(m.location, show_rank), format_value(m.value, m.unit)))
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
    """The worst stragglers (nodes first), by the rule of clusterbench.outliers; None when none."""
    stragglers = find_stragglers(results.measurements + per_rank_measurements(results.measurements), outlier_tolerance(results))
    if not stragglers:
        return None
    shown = stragglers[:MAX_STRAGGLERS]
    more = f", {len(stragglers) - len(shown)} more in report.html" if len(stragglers) > len(shown) else ""
    table = Table(title=f"Stragglers: worse than their peers' median (worst first{more})", title_justify="left")
    for column in ("Where", "Figure", "Value", "Median", "Worse by"):
        table.add_column(column, overflow="fold", no_wrap=column in ("Value", "Median", "Worse by"))
    for s in shown:
        table.add_row(*_plain(s.where, s.label, format_value(s.value, s.unit), format_value(s.median, s.unit), f"{s.shortfall:.1%}"))
    return table


def render_summary(results: RunResults, *, width: int, color: bool) -> str:
    """The summary as text (with ANSI styles when `color`), for pytest's terminal writer to print."""
    console = Console(file=io.StringIO(), width=width, force_terminal=color, color_system="standard" if color else None)
    judged = {(c.metric, tuple(sorted(c.params.items())), c.location) for c in results.checks}
    unjudged = [m for m in results.measurements if (m.metric, tuple(sorted(m.params.items())), m.location) not in judged]
    run = results.run
    show_rank = run.world_size > 1
    backend = f" · backend {run.backend}" if run.backend else ""
    console.print(
        Text.assemble(
            "cluster ",
            (run.cluster, "bold"),
            f" · {', '.join(run.hosts)} · world size {run.world_size} · launcher {run.launcher}{backend}"
            f"{' · quick' if run.quick else ''}",
        )
    )
    if results.checks:
        console.print(_checks_table(results.checks, show_rank))
    if unjudged:
        console.print(_unjudged_table(unjudged, show_rank))
    stragglers = _stragglers_table(results)
    if stragglers is not None:
        console.print(stragglers)
    skipped = [t for t in results.tests if t.outcome == "skipped"]
    if skipped:
        console.print(_not_measured_table(skipped))
    counts = results.counts()
    tally = " · ".join(f"{n} {verdict}" for verdict, n in counts.items())
    verdict = results.verdict
    console.print(Text.assemble("verdict: ", (verdict, VERDICT_STYLES.get(verdict, "bold")), f"  ({tally})"))
    return console.file.getvalue()
