"""The terminal summary: every check, every unjudged figure, and the run's verdict, as rich tables."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table
from rich.text import Text

from clusterbench.judge import format_value
from clusterbench.model import Check, Measurement
from clusterbench.results import NO_EXPECTATION, RunResults

VERDICT_STYLES = {
    "PASS": "bold green",
    "WARN": "bold yellow",
    "FAIL": "bold red",
    "NOT MEASURED": "bold magenta",
    NO_EXPECTATION: "bold cyan",
}


def _params(params: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(params.items()))


def _checks_table(checks: list[Check]) -> Table:
    table = Table(title="Checks", title_justify="left", show_lines=False)
    for column in ("Verdict", "Metric", "Params", "Where", "Observed", "Target", "Margin", "Provenance"):
        table.add_column(column, overflow="fold")
    for check in checks:
        where = f"{check.location.host}/{check.location.device}" if check.location else "-"
        margin = "-" if check.margin is None else f"{check.margin:+.1%}"
        table.add_row(
            Text(check.verdict.value, style=VERDICT_STYLES[check.verdict.value]),
            check.metric,
            _params(check.params),
            where,
            format_value(check.observed, check.unit),
            format_value(check.target, check.unit),
            margin,
            check.provenance,
        )
    return table


def _unjudged_table(measurements: list[Measurement]) -> Table:
    table = Table(title="Measured, no expectation in the profile", title_justify="left")
    for column in ("Metric", "Params", "Where", "Value"):
        table.add_column(column, overflow="fold")
    for m in measurements:
        table.add_row(m.metric, _params(m.params), f"{m.location.host}/{m.location.device}", format_value(m.value, m.unit))
    return table


def render_summary(results: RunResults, *, width: int, color: bool) -> str:
    """The summary as text (with ANSI styles when `color`), for pytest's terminal writer to print."""
    console = Console(file=io.StringIO(), width=width, force_terminal=color, color_system="standard" if color else None)
    judged = {(c.metric, tuple(sorted(c.params.items())), c.location) for c in results.checks}
    unjudged = [m for m in results.measurements if (m.metric, tuple(sorted(m.params.items())), m.location) not in judged]
    run = results.run
    console.print(
        f"cluster [bold]{run.cluster}[/bold] · {', '.join(run.hosts)} · world size {run.world_size} · "
        f"launcher {run.launcher}{' · quick' if run.quick else ''}"
    )
    if results.checks:
        console.print(_checks_table(results.checks))
    if unjudged:
        console.print(_unjudged_table(unjudged))
    counts = results.counts()
    tally = " · ".join(f"{n} {verdict}" for verdict, n in counts.items())
    verdict = results.verdict
    console.print(Text.assemble("verdict: ", (verdict, VERDICT_STYLES.get(verdict, "bold")), f"  ({tally})"))
    return console.file.getvalue()
