"""One entry point that renders every derived report of a run (report.html, summary.md, bad-nodes.txt,
metrics.prom) into a folder, from a RunResults and the results.json it was saved as.

results.json itself is never written here: it is the record the reports are derived from, and its
SHA-256 (over the exact bytes on disk) goes into both reports as evidence. Each report is written
to a temporary file in the same folder and renamed over the old one, so a crash leaves either the
previous report or the new one, never half a file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from clusterbench.errors import ClusterbenchError
from clusterbench.reports.atomic import write_atomically
from clusterbench.reports.bad_nodes import BAD_NODES_FILENAME, render_bad_nodes
from clusterbench.reports.html import render_html
from clusterbench.reports.markdown import render_markdown
from clusterbench.reports.openmetrics import METRICS_FILENAME, render_openmetrics
from clusterbench.reports.overview import build_overview
from clusterbench.results import RunResults

HTML_FILENAME = "report.html"
MARKDOWN_FILENAME = "summary.md"


class ReportError(ClusterbenchError):
    """A report that could not be rendered or written; the message is one line. `written` holds the
    reports that were written all the same (each report is written on its own)."""

    def __init__(self, message: str, written: list[Path] | None = None):
        super().__init__(message)
        self.written = written or []


def sha256_of(path: Path) -> str | None:
    """The SHA-256 of the file's bytes, or None when there is no such file."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def render_reports(results: RunResults, out_dir: Path, results_path: Path | None) -> list[Path]:
    """Write report.html, summary.md, bad-nodes.txt and metrics.prom into `out_dir`; returns their paths.

    `results_path` is the results.json these results were saved as (None when it could not be
    written): the reports name it and carry its SHA-256. Raises ReportError with one line.
    """
    results_sha256 = sha256_of(results_path) if results_path is not None else None
    try:
        overview = build_overview(results, str(results_path) if results_sha256 else None, results_sha256)
        documents = {
            HTML_FILENAME: render_html(results, overview),
            MARKDOWN_FILENAME: render_markdown(overview),
            BAD_NODES_FILENAME: render_bad_nodes(overview.bad_nodes, results.run.run_id),
            METRICS_FILENAME: render_openmetrics(results),
        }
    except Exception as exc:  # a template or plotting bug must not cost the run its exit status line
        first_line = (str(exc).splitlines() or [""])[0]
        raise ReportError(f"cannot render the reports: {type(exc).__name__}: {first_line}") from exc
    written: list[Path] = []
    failures: list[str] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot write {out_dir}: {exc.strerror or exc}") from exc
    for name, text in documents.items():
        try:
            write_atomically(out_dir / name, text)
        except OSError as exc:
            failures.append(f"cannot write {out_dir / name}: {exc.strerror or exc}")
        else:
            written.append(out_dir / name)
    if failures:
        raise ReportError("; ".join(failures), written)
    return written
