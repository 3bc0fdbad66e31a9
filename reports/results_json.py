"""results.json: the machine-readable record of a run, written atomically so it is never half a file.

Lists of records (measurements, checks, tests) are written one record per line: readable, easy to
diff and to grep, and fast, because each line goes through the C JSON encoder (an indented dump
runs the pure-Python one, seconds for a run of thousands of GPUs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clusterbench.reports.atomic import write_atomically
from clusterbench.results import RunResults

RESULTS_FILENAME = "results.json"


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


def results_text(document: dict[str, Any]) -> str:
    """The JSON text of `document`: top-level keys one per line, lists one element per line."""
    lines = []
    for key, value in document.items():
        if isinstance(value, list) and value:
            elements = ",\n".join(f"    {_dumps(element)}" for element in value)
            lines.append(f"  {_dumps(key)}: [\n{elements}\n  ]")
        else:
            lines.append(f"  {_dumps(key)}: {_dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write_results_json(results: RunResults, report_dir: Path) -> Path:
    """Write (or replace) `report_dir/results.json`; a crash mid-write leaves the previous file intact."""
    report_dir.mkdir(parents=True, exist_ok=True)
    target = report_dir / RESULTS_FILENAME
    write_atomically(target, results_text(results.to_json()))
    return target
