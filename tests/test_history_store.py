"""The history store against real SQLite files: round trip, schema, and every fault the issue names."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterbench.history import schema
from clusterbench.history.fingerprint import run_fingerprint
from clusterbench.history.sqlite_errors import HistoryError, HistoryLocked, HistoryReadOnly
from clusterbench.history.store import HistoryStore

sys.path.insert(0, str(Path(__file__).parent))
from history_results import many_measurements, measurement, results


def store_run(path: Path, day: int = 1, count: int = 3, **kwargs) -> str:
    with HistoryStore.open(path) as store:
        return store.record(results(many_measurements(count, seed=day), day=day, **kwargs).to_json())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_count(path: Path) -> int:
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return db.execute("SELECT count(*) FROM runs").fetchone()[0]


def test_round_trip_keeps_figures_params_samples_and_fingerprints(tmp_path):
    path = tmp_path / "history.sqlite"
    run = results([measurement("memory.copy_gbps", 17.5, samples=[17.0, 17.5, 18.0]),
                   measurement("gemm.tflops", 0.11, {"dtype": "fp32"}, unit="TFLOP/s")], day=3)
    run.run.inventory = {"node1": {"host": {"cpu_model": "Test CPU", "memory_total_bytes": 16 * 2**30}, "gpu": None}}
    with HistoryStore.open(path) as store:
        run_id = store.record(run.to_json())
        store_run_id = store.record(results(many_measurements(2), day=4, cluster="other").to_json())
        assert [r.run_id for r in store.runs()] == [store_run_id, run_id]  # newest first
        assert [r.run_id for r in store.runs(cluster="test-cluster")] == [run_id]
        exported = next(iter(store.export([run_id])))
    assert exported["fingerprint"] == run_fingerprint(run.to_json()["run"])[0]
    assert exported["hosts"]["node1"]["fingerprint"] is not None
    assert exported["hosts"]["node1"]["hardware"]["memory_gib"] == 16
    figures = {(m["metric"], tuple(m["params"].items())): m for m in exported["measurements"]}
    assert figures[("memory.copy_gbps", ())]["samples"] == [17.0, 17.5, 18.0]
    assert figures[("gemm.tflops", (("dtype", "fp32"),))]["value"] == 0.11
    assert exported["run"]["started_at"] == run.run.started_at


def test_fingerprint_is_stable_and_ignores_names_and_times():
    first = results([], day=1).to_json()["run"]
    later = results([], day=9).to_json()["run"]
    later["hosts"] = ["other-node"]
    later["versions"] = {"nvidia_driver": "999.1"}
    assert run_fingerprint(first)[0] == run_fingerprint(later)[0]
    bigger = dict(first, devices=[dict(first["devices"][0], memory_bytes=64 * 2**30)])
    assert run_fingerprint(bigger)[0] != run_fingerprint(first)[0]


def test_new_file_gets_schema_version_and_application_id(tmp_path):
    path = tmp_path / "history.sqlite"
    HistoryStore.open(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
        assert db.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID


def test_older_schema_is_migrated_in_place_keeping_runs(tmp_path, monkeypatch):
    path = tmp_path / "history.sqlite"
    run_id = store_run(path)
    newer = (*schema.MIGRATIONS, "CREATE TABLE notes (run INTEGER, text TEXT)")
    monkeypatch.setattr("clusterbench.history.store.MIGRATIONS", newer)
    monkeypatch.setattr("clusterbench.history.store.SCHEMA_VERSION", len(newer))
    with HistoryStore.open(path) as store:
        assert [r.run_id for r in store.runs()] == [run_id]
        assert store.connection.execute("PRAGMA user_version").fetchone()[0] == len(newer)
        store.connection.execute("SELECT * FROM notes").fetchall()


def test_newer_schema_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "history.sqlite"
    store_run(path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    before = digest(path)
    with pytest.raises(HistoryError, match="newer than this clusterbench reads"):
        HistoryStore.open(path)
    assert digest(path) == before


def test_a_file_that_is_not_a_database_is_refused_unchanged(tmp_path):
    path = tmp_path / "history.sqlite"
    path.write_text("name,value\nthis is a CSV file, not a history\n" * 10)
    before = digest(path)
    with pytest.raises(HistoryError, match="not an SQLite database"):
        HistoryStore.open(path)
    assert digest(path) == before


def test_another_programs_sqlite_file_is_refused_unchanged(tmp_path):
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    before = digest(path)
    with pytest.raises(HistoryError, match="not a clusterbench history"):
        HistoryStore.open(path)
    assert digest(path) == before


def test_a_history_cut_short_is_refused(tmp_path):
    path = tmp_path / "history.sqlite"
    store_run(path, count=400)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(HistoryError, match="cut short"):
        HistoryStore.open(path)


def test_read_only_open_reads_but_never_writes(tmp_path):
    path = tmp_path / "history.sqlite"
    store_run(path)
    before = digest(path)
    with HistoryStore.open(path, read_only=True) as store:
        assert len(store.runs()) == 1
        with pytest.raises(HistoryReadOnly, match="read-only"):
            store.record(results(many_measurements(2), day=5).to_json())
    assert digest(path) == before


def test_an_immutable_file_falls_back_to_reading(tmp_path):
    """chattr +i holds even against root, unlike chmod."""
    path = tmp_path / "history.sqlite"
    store_run(path)
    if subprocess.run(["chattr", "+i", str(path)], check=False, capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        with HistoryStore.open(path) as store:
            assert len(store.runs()) == 1
            with pytest.raises(HistoryReadOnly):
                store.record(results(many_measurements(2), day=5).to_json())
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    assert run_count(path) == 1


def test_a_locked_history_times_out_with_one_line_and_loses_nothing(tmp_path):
    path = tmp_path / "history.sqlite"
    store_run(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        # Under an exclusive lock even reading the schema waits: the open or the write times out.
        with pytest.raises(HistoryLocked, match="locked by another process"), \
                HistoryStore.open(path, busy_timeout_s=0.2) as store:
            store.record(results(many_measurements(2), day=5).to_json())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert run_count(path) == 1
    store_run(path, day=6)
    assert run_count(path) == 2


def _write_runs(path: str, first_day: int) -> None:
    for day in range(first_day, first_day + 5):
        store_run(Path(path), day=day, count=300)


def test_two_processes_writing_at_once_both_land(tmp_path):
    path = tmp_path / "history.sqlite"
    HistoryStore.open(path).close()
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_runs, args=(str(path), first)) for first in (1, 100)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    assert run_count(path) == 10


CRASHING_WRITER = """
import os, sys, time
sys.path.insert(0, {tests!r})
from history_results import many_measurements, results
from clusterbench.history.store import HistoryStore

class StallingMeasurements(list):
    '''Test double: the second pass over the figures (their INSERTs) stalls half-way, with the
    transaction open, and tells the parent, which then kills this process.'''
    passes = 0
    def __iter__(self):
        StallingMeasurements.passes += 1
        for index, item in enumerate(list.__iter__(self)):
            if StallingMeasurements.passes == 2 and index == len(self) // 2:
                os.write(1, b"mid-write\\n")
                time.sleep(60)
            yield item

data = results(many_measurements(2000), day=9).to_json()
data["measurements"] = StallingMeasurements(data["measurements"])
with HistoryStore.open({path!r}) as store:
    # A tiny page cache makes SQLite spill changed pages into the file before the commit, so the
    # kill lands on a file that is really half-written, with its journal holding the old pages.
    store.connection.execute("PRAGMA cache_size = 8")
    store.record(data)
"""


def test_a_writer_killed_mid_transaction_leaves_the_history_as_it_was(tmp_path):
    path = tmp_path / "history.sqlite"
    store_run(path)
    before, before_digest = run_count(path), digest(path)
    script = CRASHING_WRITER.format(tests=str(Path(__file__).parent), path=str(path))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"mid-write\n"
        assert Path(f"{path}-journal").exists()  # the transaction is open and has written
        assert digest(path) != before_digest  # pages of the unfinished run are in the file
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert run_count(path) == before  # the hot journal is rolled back by the next reader
    assert not Path(f"{path}-journal").exists()
    store_run(path, day=10)
    assert run_count(path) == before + 1


def test_missing_folder_and_directory_paths_are_one_line_errors(tmp_path):
    with pytest.raises(HistoryError, match="does not exist"):
        HistoryStore.open(tmp_path / "nowhere" / "history.sqlite")
    with pytest.raises(HistoryError, match="is a directory"):
        HistoryStore.open(tmp_path)
    with pytest.raises(HistoryError, match="no such history"):
        HistoryStore.open(tmp_path / "absent.sqlite", read_only=True)
    time.sleep(0)  # nothing created by the failed opens:
    assert not (tmp_path / "absent.sqlite").exists()
