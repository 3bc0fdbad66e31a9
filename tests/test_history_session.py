"""Storing and calibrating at the end of a run: a history that cannot take the run is a note or an
error line, never a lost run. `FinishedRun` is a test double holding what the run's history plugin
(HistorySession) is given at the end of an AcceptanceRun, and what it returns."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clusterbench.catalog import resolve_cluster
from clusterbench.errors import ClusterbenchError
from clusterbench.history.compare import parse_compare_spec
from clusterbench.history.session import HistoryOptions, HistorySession, check_history, history_options
from clusterbench.history.store import HistoryStore
from clusterbench.model import Check, Verdict
from clusterbench.profile import ClusterInfo, Profile, Settings
from clusterbench.results import RunResults

sys.path.insert(0, str(Path(__file__).parent))
from history_results import measurement, results


@dataclass
class FinishedRun:
    results: RunResults
    history: HistoryOptions
    report_dir: Path
    profile: Profile = field(default_factory=lambda: Profile(ClusterInfo("test-cluster"), Settings(), ()))
    storage_targets: tuple[str, ...] = ()  # --storage-target, as AcceptanceRun has it
    history_notes: list[str] = field(default_factory=list)
    history_error: str | None = None


def store_and_calibrate(run: FinishedRun) -> None:
    outcome = HistorySession(run.history, run.profile).store_and_calibrate(run.results, run.report_dir,
                                                                          run.storage_targets)
    run.history_notes, run.history_error = outcome.notes, outcome.error


def finished_run(tmp_path: Path, **options) -> FinishedRun:
    run = results([measurement("memory.copy_gbps", 12.0)], day=4)
    run.run.run_id = "20260105T000000Z-aaaaaa"
    return FinishedRun(run, HistoryOptions(**options), tmp_path / "report")


def stored(path: Path) -> int:
    with HistoryStore.open(path, read_only=True) as store:
        return len(store.runs())


def test_stores_and_calibrates(tmp_path):
    run = finished_run(tmp_path, path=tmp_path / "h.sqlite", calibrate=tmp_path / "base.toml")
    store_and_calibrate(run)
    assert run.history_error is None and stored(tmp_path / "h.sqlite") == 1
    assert "stored run 20260105T000000Z-aaaaaa" in run.history_notes[0]
    assert "wrote calibrated profile" in run.history_notes[1] and (tmp_path / "base.toml").exists()


def test_a_calibration_with_storage_target_keeps_that_target_and_pins_no_path(tmp_path):
    # Issue 16: the calibrated profile must run from another checkout, or with --storage-target.
    run = finished_run(tmp_path, calibrate=tmp_path / "base.toml")
    run.storage_targets = ("/fast",)
    run.results.measurements.append(measurement("storage.seqread_gbps", 2.0, {"target": "/fast", "engine": "fio"}))
    store_and_calibrate(run)
    loaded = resolve_cluster(str(tmp_path / "base.toml"), tmp_path)
    assert run.history_error is None and loaded.storage.targets == ("/fast",)
    [storage] = [e for e in loaded.expectations if e.metric == "storage.seqread_gbps"]
    assert dict(storage.params) == {"engine": "fio"} and "on storage target /fast" in storage.source


def test_a_read_only_history_is_a_note_and_the_run_is_not_lost(tmp_path):
    path = tmp_path / "h.sqlite"
    HistoryStore.open(path).close()
    if subprocess.run(["chattr", "+i", str(path)], check=False, capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this filesystem")
    run = finished_run(tmp_path, path=path)
    try:
        store_and_calibrate(run)
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    assert run.history_error is None
    assert "read-only" in run.history_notes[0] and "clusterbench history add" in run.history_notes[0]


def test_a_locked_history_is_an_error_line_naming_results_json(tmp_path):
    path = tmp_path / "h.sqlite"
    HistoryStore.open(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    run = finished_run(tmp_path, path=path, busy_timeout_s=0.2)
    try:
        store_and_calibrate(run)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "locked" in run.history_error and "results.json" in run.history_error and "history add" in run.history_error
    assert stored(path) == 0


def test_a_failed_run_is_not_calibrated(tmp_path):
    run = finished_run(tmp_path, calibrate=tmp_path / "base.toml")
    run.results.checks.append(Check("memory.copy_gbps", {}, Verdict.FAIL, 1.0, 10.0, "GB/s", "spec", "s", "low"))
    store_and_calibrate(run)
    assert "the run failed" in run.history_error and not (tmp_path / "base.toml").exists()


@pytest.mark.parametrize("given, problem", [
    ({"compare": "last"}, "needs --history"),
    ({"calibrate_margin": 0.1}, "needs --calibrate"),
    ({"calibrate": "out.toml", "calibrate_margin": 1.5}, "between 0 and 1"),
    ({"calibrate": "out.txt"}, "must end in .toml"),
    ({"history": "h.sqlite", "compare": "window:-1"}, "whole number"),
])
def test_option_mistakes_are_one_line_errors(given, problem):
    options = {"history": None, "compare": None, "calibrate": None, "calibrate_margin": None, **given}
    with pytest.raises(ClusterbenchError, match=problem):
        history_options(options.__getitem__)


def test_the_early_check_refuses_a_bad_file_and_an_unknown_run_untouched(tmp_path):
    """What the plugin runs before measuring (a failure there is a usage error, exit 4)."""
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database\n")
    with pytest.raises(ClusterbenchError, match="not an SQLite database"):
        check_history(HistoryOptions(path=bad))
    assert bad.read_text() == "not a database\n"
    absent = tmp_path / "h.sqlite"
    check_history(HistoryOptions(path=absent, compare=parse_compare_spec("window:3")))
    assert not absent.exists()  # created only when the run ends
    with pytest.raises(ClusterbenchError, match="folder .* does not exist"):
        check_history(HistoryOptions(path=tmp_path / "nowhere" / "h.sqlite"))
    HistoryStore.open(absent).close()
    with pytest.raises(ClusterbenchError, match="no stored run 'nope'"):
        check_history(HistoryOptions(path=absent, compare=parse_compare_spec("nope")))
