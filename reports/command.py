"""Render report.html and summary.md again from a results.json.

`clusterbench report RESULTS_JSON [--out DIR]`: after a run that was cut short, or to show old
results with a newer template. results.json is only read: the reports carry the SHA-256 of its
bytes as they are on disk.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clusterbench.errors import ClusterbenchError, read_bytes
from clusterbench.results import RunResults

SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def load_results(path: Path) -> RunResults:
    """A results.json as RunResults, or ClusterbenchError saying in one line what is wrong."""
    raw = read_bytes(path, ClusterbenchError, missing="no such file (give the results.json of a run)",
                     directory="is a directory; give its results.json", unreadable="cannot read")
    if raw.startswith(SQLITE_MAGIC):
        raise ClusterbenchError(f"{path}: is an SQLite file (a run history?), not a results.json; see "
                                f"`clusterbench history list {path}`")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ClusterbenchError(f"{path}: not a text file, so not a results.json (give the "
                                "results.json a run wrote)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClusterbenchError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); a run cut "
                                "short mid-write leaves the previous results.json, so this "
                                "file was changed afterwards") from None
    if not isinstance(data, dict):
        raise ClusterbenchError(f"{path}: not a clusterbench results file (expected a JSON object)")
    try:
        return RunResults.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise ClusterbenchError(f"{path}: not a clusterbench results file: {detail}") from None


def run_report(args: argparse.Namespace) -> int:
    results_path = Path(args.results)
    results = load_results(results_path)
    out_dir = Path(args.out) if args.out else results_path.parent
    # Imported here: matplotlib costs seconds, which `clusterbench history` need not pay.
    from clusterbench.reports.render import render_reports

    for path in render_reports(results, out_dir, results_path):
        print(f"clusterbench: wrote {path}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="render report.html and summary.md from a results.json",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("results", metavar="RESULTS_JSON", help="the results.json a run wrote into its --report-dir")
    parser.add_argument("--out", metavar="DIR", help="where to write the reports (default: beside RESULTS_JSON)")
    parser.set_defaults(run=run_report)
