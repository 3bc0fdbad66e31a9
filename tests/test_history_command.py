"""`clusterbench history`: list, export (CSV, JSON), delete, add, and its one-line errors."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from clusterbench.errors import ClusterbenchError
from clusterbench.history.command import add_parser, cutoff, run_history_command
from clusterbench.history.store import HistoryStore

sys.path.insert(0, str(Path(__file__).parent))
from history_results import measurement, results


def history_command(*argv: str) -> str:
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    assert run_history_command(parser.parse_args(["history", *argv]), out) == 0
    return out.getvalue()


@pytest.fixture
def history(tmp_path) -> tuple[Path, list[str]]:
    path = tmp_path / "history.sqlite"
    with HistoryStore.open(path) as store:
        run_ids = [
            store.record(results([measurement("memory.copy_gbps", 10.0 + day),
                                  measurement("gemm.tflops", 0.5, {"dtype": "bf16"}, unit="TFLOP/s")],
                                 day=day).to_json())
            for day in (1, 2, 3)
        ]
    return path, run_ids


def test_list_shows_runs_newest_first(history):
    path, run_ids = history
    lines = history_command("list", str(path)).splitlines()
    assert lines[0].split()[:3] == ["RUN", "ID", "STARTED"]
    assert [line.split()[0] for line in lines[1:]] == list(reversed(run_ids))
    assert all("test-cluster" in line and "quick" in line for line in lines[1:])


def test_export_csv_has_one_row_a_figure(history, tmp_path):
    path, run_ids = history
    target = tmp_path / "runs.csv"
    history_command("export", str(path), "--format", "csv", "--output", str(target))
    rows = list(csv.DictReader(target.open()))
    assert len(rows) == 6 and {r["run_id"] for r in rows} == set(run_ids)
    copy = next(r for r in rows if r["run_id"] == run_ids[0] and r["metric"] == "memory.copy_gbps")
    assert (float(copy["value"]), copy["unit"]) == (11.0, "GB/s")
    assert next(r["params"] for r in rows if r["metric"] == "gemm.tflops") == "dtype=bf16"


def test_export_json_holds_whole_runs(history):
    path, run_ids = history
    runs = json.loads(history_command("export", str(path), "--format", "json", "--run", run_ids[1]))
    assert [r["run_id"] for r in runs] == [run_ids[1]]
    assert runs[0]["run"]["cluster"] == "test-cluster" and len(runs[0]["measurements"]) == 2


def test_delete_by_id_and_by_age(history):
    path, run_ids = history
    assert "deleted 1 run(s)" in history_command("delete", str(path), run_ids[0])
    assert "deleted 1 run(s)" in history_command("delete", str(path), "--older-than", "2026-01-04")
    with HistoryStore.open(path, read_only=True) as store:
        assert [r.run_id for r in store.runs()] == [run_ids[2]]
        assert store.connection.execute("SELECT count(*) FROM measurements").fetchone()[0] == 2


def test_cutoff_reads_days_and_dates():
    now = dt.datetime(2026, 3, 31, tzinfo=dt.timezone.utc)
    assert cutoff("30d", now) == cutoff("30", now) == "2026-03-01T00:00:00+00:00"
    assert cutoff("2026-01-31", now) == "2026-01-31T00:00:00+00:00"
    with pytest.raises(ClusterbenchError, match="expected a number of days"):
        cutoff("last tuesday", now)


def test_add_stores_a_results_json_once(history, tmp_path):
    path, _ = history
    data = results([measurement("memory.copy_gbps", 9.0)], day=20).to_json()
    data["run"]["run_id"] = "20260121T000000Z-abcdef"
    source = tmp_path / "results.json"
    source.write_text(json.dumps(data))
    assert "stored run 20260121T000000Z-abcdef" in history_command("add", str(path), str(source))
    with pytest.raises(ClusterbenchError, match="already stored"):
        history_command("add", str(path), str(source))


@pytest.mark.parametrize("argv, problem", [
    (["delete", "{path}"], "either RUN_IDs or --older-than"),
    (["delete", "{path}", "no-such-run"], "no stored run no-such-run; nothing deleted"),
    (["list", "{tmp}/absent.sqlite"], "no such history file"),
    (["add", "{path}", "{tmp}/notes.txt"], "not a results.json"),
])
def test_mistakes_are_one_line_errors(history, tmp_path, argv, problem):
    path, _ = history
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ClusterbenchError, match=problem):
        history_command(*[a.format(path=path, tmp=tmp_path) for a in argv])


def test_console_command_end_to_end(history, tmp_path, capsys):
    from clusterbench.cli import main

    path, run_ids = history
    assert main(["history", "list", str(path)]) == 0
    assert run_ids[0] in capsys.readouterr().out
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database")
    failed = subprocess.run(["clusterbench", "history", "list", str(bad)], check=False, capture_output=True, text=True)
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1 and "not an SQLite database" in failed.stderr


def test_listing_an_empty_file_says_it_holds_no_history_and_leaves_it_empty(tmp_path):
    empty = tmp_path / "touched.sqlite"
    empty.touch()  # SQLite would take a 0-byte file for an empty database
    failed = subprocess.run(["clusterbench", "history", "list", str(empty)], check=False, capture_output=True,
                            text=True)
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1
    assert f"{empty}: holds no clusterbench history (an empty file or database); nothing to read" in failed.stderr
    assert empty.stat().st_size == 0
