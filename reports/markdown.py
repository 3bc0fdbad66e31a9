"""summary.md: the verdict, the failed and warned checks with their figures, and the blamed nodes and
devices, short enough for a CI job summary or a pull-request comment (GitHub cuts comments at
65,536 characters): every list is capped, and the full story is in report.html and results.json.
"""

from __future__ import annotations

import re

from clusterbench.reports.bad_nodes import BAD_NODES_FILENAME, service_commands
from clusterbench.reports.overview import CheckRow, Overview

MAX_ROWS = 25  # per table
MAX_CELL = 160  # characters per cell
# Characters that Markdown (GitHub flavoured) would read as markup in a table cell.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>-])")


def md(text: object, limit: int = MAX_CELL) -> str:
    """`text` as literal Markdown: one line, HTML and Markdown syntax escaped, at most `limit` chars."""
    line = " ".join(str(text).split())
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    line = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", line)


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _more(total: int, shown: int, where: str = "report.html") -> list[str]:
    return ["", f"_and {total - shown} more in {where}_"] if total > shown else []


def _check_rows(rows: list[CheckRow]) -> list[list[str]]:
    return [
        [md(r.verdict), md(r.metric, 80), md(r.params, 80), md(r.where, 80), md(r.observed), md(r.target),
         md(r.margin), md(r.provenance), md(r.message)]
        for r in rows
    ]


def _service_section(o: Overview) -> list[str]:
    """The bad nodes and the commands that take them out of service, for a person to run."""
    slurm, kubernetes = service_commands(o.bad_nodes)
    lines = ["", f"### Nodes to take out of service ({len(o.bad_nodes)}, listed in {BAD_NODES_FILENAME})", ""]
    lines += _table(["Host", "Why"], [[f"**{md(n.host, 80)}**", md(n.why)] for n in o.bad_nodes[:MAX_ROWS]])
    lines += _more(len(o.bad_nodes), MAX_ROWS, BAD_NODES_FILENAME)
    if slurm:
        lines += ["", "Commands to run once you have looked (clusterbench never runs them):", "", "```sh",
                  "# Slurm", *slurm[:MAX_ROWS], "# Kubernetes", *kubernetes[:MAX_ROWS], "```"]
        lines += _more(len(slurm), MAX_ROWS, BAD_NODES_FILENAME)
    return lines


def _caveat_section(o: Overview) -> list[str]:
    lines = ["", f"### Caveats ({len(o.caveats)}): read these figures with them", ""]
    for c in o.caveats[:MAX_ROWS]:
        more = f" and {c.figures_left_out} more" if c.figures_left_out else ""
        lines.append(f"- **{md(c.text)}**: {md(', '.join(c.figures) + more, 400)} "
                     f"({_counted(c.locations, 'location')})")
    return lines + _more(len(o.caveats), MAX_ROWS)


def render_markdown(o: Overview) -> str:
    tests = " · ".join(f"{n} {md(name)}" for name, n in o.tests.items())
    checks = " · ".join(f"{n} {md(name)}" for name, n in o.counts.items())
    lines = [
        f"## clusterbench: **{md(o.verdict)}** on {md(o.cluster)}",
        "",
        f"{md(o.verdict_note, 400)}  ",
        f"tests: {tests or 'none'} ({o.tests_total} in all) · checks: {checks}  ",
        (
            f"{md(o.nodes_text)} · {_counted(len(o.hosts), 'host')} · {md(o.world_text)} · launcher {md(o.launcher)} · "
            f"{md(o.started_at)} to {md(o.finished_at or 'not finished')} · clusterbench "
            f"{md(o.evidence.toolkit_version)}  "
        ),
        f"results.json SHA-256 {md(o.evidence.results_sha256 or 'not written')}",
    ]
    if o.interrupted:
        lines += ["", f"> **Interrupted:** {md(o.interrupted)}"]
    if o.caveats:
        lines += _caveat_section(o)
    failed = [r for r in o.problems if r.verdict != "WARN"]
    warned = [r for r in o.problems if r.verdict == "WARN"]
    header = ["Verdict", "Metric", "Params", "Where", "Observed", "Target", "Margin", "Provenance", "Message"]
    if o.failed_tests:
        lines += ["", f"### Tests failed without a failed check ({len(o.failed_tests)})", ""]
        lines += _table(["Test", "Why"], [[md(n, 120), md(m)] for n, m in o.failed_tests[:MAX_ROWS]])
        lines += _more(len(o.failed_tests), MAX_ROWS)
    if failed:
        lines += ["", f"### Failed and missing ({len(failed)})", ""]
        lines += _table(header, _check_rows(failed[:MAX_ROWS])) + _more(len(failed), MAX_ROWS)
    if warned:
        lines += ["", f"### Warned ({len(warned)})", ""]
        lines += _table(header, _check_rows(warned[:MAX_ROWS])) + _more(len(warned), MAX_ROWS)
    if o.blamed:
        lines += ["", f"### Blamed nodes ({len(o.blamed)})", ""]
        rows = [[f"**{md(b.host, 80)}**",
                 md(", ".join(sorted(b.devices))), md(b.summary())] for b in o.blamed[:MAX_ROWS]]
        lines += _table(["Host", "Devices", "What"], rows) + _more(len(o.blamed), MAX_ROWS)
    if o.bad_nodes:
        lines += _service_section(o)
    if o.stragglers:
        lines += ["", f"### Stragglers ({len(o.stragglers)}, tolerance {o.outlier_tolerance:.0%})", ""]
        lines += [f"- {md(s.label, 80)}: {md(s.describe())}" for s in o.stragglers[:MAX_ROWS]]
        lines += _more(len(o.stragglers), MAX_ROWS)
    if not (failed or warned or o.failed_tests or o.stragglers):
        lines += ["", "No check failed or warned, and no straggler."]
    return "\n".join(lines) + "\n"
