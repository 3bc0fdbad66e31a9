"""results.json: the machine-readable record of a run, written atomically so it is never half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from clusterbench.results import RunResults

RESULTS_FILENAME = "results.json"


def write_results_json(results: RunResults, report_dir: Path) -> Path:
    """Write (or replace) `report_dir/results.json`; a crash mid-write leaves the previous file intact."""
    report_dir.mkdir(parents=True, exist_ok=True)
    target = report_dir / RESULTS_FILENAME
    fd, tmp_name = tempfile.mkstemp(prefix=".results-", suffix=".json", dir=report_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(results.to_json(), handle, indent=2, allow_nan=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target
