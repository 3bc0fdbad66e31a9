"""`clusterbench history`: list, export, delete and add stored runs.

    clusterbench history list HISTORY [--cluster NAME] [--limit N]
    clusterbench history export HISTORY --format csv|json [--output FILE] [--run RUN_ID ...]
    clusterbench history delete HISTORY (--older-than 30d|2026-01-31 | RUN_ID ...)
    clusterbench history add HISTORY results.json      # a run that could not be stored when it ran
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from clusterbench.errors import ClusterbenchError
from clusterbench.history.sqlite_errors import HistoryError
from clusterbench.history.store import HistoryStore

CSV_COLUMNS = (
    "run_id", "cluster", "fingerprint", "toolkit_version", "quick", "started_at", "verdict",
    "metric", "params", "host", "rank", "device", "value", "unit",
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("history", help="list, export, delete or add runs of a run history",
                                   description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="stored runs, newest first")
    listing.add_argument("history", type=Path, help="the history file (as given to --history)")
    listing.add_argument("--cluster", default=None, help="only runs of this cluster")
    listing.add_argument("--limit", type=int, default=None, help="at most this many runs")

    export = actions.add_parser("export", help="stored runs as CSV (one row a figure) or JSON (whole runs)")
    export.add_argument("history", type=Path)
    export.add_argument("--run", dest="run_ids", action="append", default=[], metavar="RUN_ID",
                        help="only this run (repeatable; default: every run)")
    export.add_argument("--format", choices=("csv", "json"), required=True)
    export.add_argument("--output", type=Path, default=None, help="write here instead of to standard output")

    delete = actions.add_parser("delete", help="delete runs by ID or by age, then compact the file")
    delete.add_argument("history", type=Path)
    delete.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    delete.add_argument("--older-than", default=None, metavar="30d|YYYY-MM-DD",
                        help="delete runs started more than this many days ago, or before this date")

    add = actions.add_parser("add", help="store a run from its results.json (e.g. one the history was locked for)")
    add.add_argument("history", type=Path)
    add.add_argument("results", type=Path, help="a results.json written by an acceptance run")

    parser.set_defaults(run=run_history_command)


def run_history_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    handler = {"list": _list, "export": _export, "delete": _delete, "add": _add}[args.action]
    if args.action != "add" and not args.history.exists():
        raise HistoryError(f"{args.history}: no such history file")
    return handler(args, out)


def _list(args: argparse.Namespace, out: TextIO) -> int:
    with HistoryStore.open(args.history, read_only=True) as store:
        runs = store.runs(cluster=args.cluster, limit=args.limit, count_measurements=True)
    if not runs:
        out.write(f"{args.history}: no stored runs\n")
        return 0
    header = ("RUN ID", "STARTED", "CLUSTER", "HARDWARE", "MODE", "VERSION", "FIGURES", "VERDICT")
    rows = [
        (r.run_id, r.started_at, r.cluster, r.fingerprint, "quick" if r.quick else "full", r.toolkit_version,
         str(r.measurements), r.verdict)
        for r in runs
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    out.writelines("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n"
                   for row in [header, *rows])
    return 0


@contextmanager
def _output(path: Path | None, out: TextIO) -> Iterator[TextIO]:
    """The export target; a file is written whole or not at all (a temporary file, then renamed)."""
    if path is None:
        yield out
        return
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("w", encoding="utf-8", newline="") as handle:
            yield handle
        temporary.replace(path)
    except OSError as exc:
        raise ClusterbenchError(f"{path}: cannot write the export: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)


def _export(args: argparse.Namespace, out: TextIO) -> int:
    with HistoryStore.open(args.history, read_only=True) as store, _output(args.output, out) as target:
        runs = store.export(args.run_ids or None)
        if args.format == "json":
            target.write("[\n")
            for index, run in enumerate(runs):
                target.write(("" if index == 0 else ",\n") + json.dumps(run, indent=1))
            target.write("\n]\n")
        else:
            writer = csv.writer(target)
            writer.writerow(CSV_COLUMNS)
            for run in runs:
                for m in run["measurements"]:
                    writer.writerow(_csv_row(run, m))
    return 0


def _csv_row(run: dict[str, Any], m: dict[str, Any]) -> list[Any]:
    params = ";".join(f"{k}={v}" for k, v in sorted(m["params"].items()))
    return [run["run_id"], run["cluster"], run["fingerprint"], run["toolkit_version"], int(run["quick"]),
            run["started_at"], run["verdict"], m["metric"], params, m["host"], m["rank"], m["device"],
            repr(m["value"]), m["unit"]]


def cutoff(text: str, now: dt.datetime | None = None) -> str:
    """'30d' or '30' (days ago) or 'YYYY-MM-DD' -> an ISO timestamp runs older than are deleted."""
    now = now or dt.datetime.now(dt.timezone.utc)
    days = re.fullmatch(r"(\d+)d?", text.strip())
    if days:
        return (now - dt.timedelta(days=int(days.group(1)))).isoformat(timespec="seconds")
    try:
        date = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ClusterbenchError(f"--older-than {text}: expected a number of days "
                                "(30d) or a date (2026-01-31)") from None
    return dt.datetime(date.year, date.month, date.day, tzinfo=dt.timezone.utc).isoformat(timespec="seconds")


def _delete(args: argparse.Namespace, out: TextIO) -> int:
    if bool(args.run_ids) == bool(args.older_than):
        raise ClusterbenchError("history delete: give either RUN_IDs or --older-than, not both nor neither")
    with HistoryStore.open(args.history) as store:
        if args.older_than:
            run_ids = [r.run_id for r in store.runs(before=cutoff(args.older_than))]
        else:
            known = {r.run_id for r in store.runs()}
            unknown = [r for r in args.run_ids if r not in known]
            if unknown:
                raise HistoryError(f"{args.history}: no stored run {', '.join(unknown)}; nothing deleted")
            run_ids = list(args.run_ids)
        deleted = store.delete(run_ids) if run_ids else 0
        if deleted:
            store.vacuum()
    out.write(f"{args.history}: deleted {deleted} run(s)\n")
    return 0


def _add(args: argparse.Namespace, out: TextIO) -> int:
    try:
        results = json.loads(args.results.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClusterbenchError(f"{args.results}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ClusterbenchError(f"{args.results}: not a results.json (invalid JSON: {exc})") from None
    if not isinstance(results, dict) or not str(results.get("schema", "")).startswith("clusterbench.results/"):
        raise ClusterbenchError(f"{args.results}: not a clusterbench results.json (no "
                                "'schema: clusterbench.results/N')")
    run_id = (results.get("run") or {}).get("run_id") or None
    with HistoryStore.open(args.history) as store:
        if run_id and any(r.run_id == run_id for r in store.runs()):
            raise HistoryError(f"{args.history}: run {run_id} is already stored")
        try:
            stored = store.record(results, run_id)
        except (KeyError, TypeError, ValueError) as exc:
            raise ClusterbenchError(f"{args.results}: incomplete results.json ({type(exc).__name__}: {exc})") from None
    out.write(f"{args.history}: stored run {stored}\n")
    return 0
