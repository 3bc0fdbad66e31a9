"""results.json: the machine-readable record of a run, written atomically so it is never half a file.

Lists of records (measurements, checks, tests) are written one record per line: readable, easy to
diff and to grep, and fast, because each line goes through the C JSON encoder (an indented dump
runs the pure-Python one, seconds for a run of thousands of GPUs).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clusterbench.reports.atomic import write_atomically
from clusterbench.results import RECORD_LISTS, RunResults, record_json

RESULTS_FILENAME = "results.json"


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


def results_text(document: dict[str, Any]) -> str:
    """The JSON text of `document`: top-level keys one per line, lists one element per line."""
    encoded = {key: [_dumps(e) for e in value] if isinstance(value, list) else _dumps(value) for key,
               value in document.items()}
    return "".join(_pieces(encoded))


def _pieces(encoded: dict[str, str | list[str]]) -> Iterator[str]:
    """The file's text, in pieces, from already encoded values: a string per key, or a string per
    list element (one per line)."""
    yield "{\n"
    for index, (key, value) in enumerate(encoded.items()):
        yield ",\n" if index else ""
        if isinstance(value, list) and value:
            yield f"  {_dumps(key)}: [\n    "
            for position, element in enumerate(value):
                yield ",\n    " if position else ""
                yield element
            yield "\n  ]"
        else:
            yield f"  {_dumps(key)}: {'[]' if isinstance(value, list) else value}"
    yield "\n}\n"


def write_results_json(results: RunResults, report_dir: Path) -> Path:
    """Write (or replace) `report_dir/results.json` in one go; a crash mid-write leaves the previous file intact."""
    return GrowingResultsFile(report_dir).write(results, exact=True)


class GrowingResultsFile:
    """results.json rewritten after every test of a run without encoding every record again.

    A run rewrites the file after each test so that a crash loses nothing measured; re-encoding
    every record each time made that O(tests^2 x ranks) encoding work (seconds a test at thousands
    of ranks). Records are only ever appended, so each is encoded once and its line kept; `write`
    encodes the new ones and the small header. `write(exact=True)` (the run's final write)
    encodes everything afresh, so the last file is exactly `results.to_json()` even if a record
    was changed after it was first written.
    """

    def __init__(self, report_dir: Path):
        self.report_dir = report_dir
        self._lines: dict[str, list[str]] = {key: [] for key in RECORD_LISTS}

    def write(self, results: RunResults, *, exact: bool = False) -> Path:
        encoded: dict[str, str | list[str]] = {key: _dumps(value) for key, value in results.header_json().items()}
        for key in RECORD_LISTS:
            records, lines = getattr(results, key), self._lines[key]
            if exact or len(records) < len(lines):
                lines.clear()
            lines.extend(_dumps(record_json(r)) for r in records[len(lines):])
            encoded[key] = lines
        self.report_dir.mkdir(parents=True, exist_ok=True)
        target = self.report_dir / RESULTS_FILENAME
        write_atomically(target, _pieces(encoded))
        return target
