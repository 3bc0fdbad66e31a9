"""Rank 0's record of the run: results.json after every test, the reports at the end, and the tables
for the terminal. A failure to write (full disk, lost mount) is kept as one line, never raised, so
the run goes on measuring and the session ends with that line and a non-zero exit."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from clusterbench.reports.results_json import RESULTS_FILENAME, GrowingResultsFile
from clusterbench.results import RunResults

log = logging.getLogger("clusterbench")


@dataclass
class ResultsRecorder:
    report_dir: Path
    results: RunResults
    written: list[Path] = field(default_factory=list)
    write_error: str | None = None  # the last failure to write, if it is still failing
    tables: list[str] = field(default_factory=list)  # nccl-tests style tables for the summary
    _results_file: GrowingResultsFile | None = None  # made on first write: report_dir is known by then

    def show(self, text: str) -> None:
        self.tables.append(text)

    def write(self, exact: bool = False) -> None:
        """Write results.json. `exact`: encode every record afresh (the final write) instead of
        reusing the lines of earlier writes."""
        if self._results_file is None:
            self._results_file = GrowingResultsFile(self.report_dir)
        try:
            path = self._results_file.write(self.results, exact=exact)
        except OSError as exc:
            self.write_error = f"cannot write {self.report_dir / RESULTS_FILENAME}: {exc.strerror or exc}"
            log.error("clusterbench: %s", self.write_error)
            return
        self.write_error = None
        self._wrote([path])

    def render_reports(self) -> None:
        """report.html and summary.md, derived from the results.json just written (whose SHA-256
        they carry). A failure to render is one more line in write_error; results.json is never
        touched by it."""
        from clusterbench.reports.render import ReportError, render_reports  # imports matplotlib: only now

        results_path = None if self.write_error else self.report_dir / RESULTS_FILENAME
        try:
            paths = render_reports(self.results, self.report_dir, results_path)
        except ReportError as exc:
            log.error("clusterbench: %s", exc)
            self.write_error = "; ".join(filter(None, (self.write_error, str(exc))))
            paths = exc.written
        self._wrote(paths)

    def _wrote(self, paths: list[Path]) -> None:
        self.written.extend(path for path in paths if path not in self.written)
