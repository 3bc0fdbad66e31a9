"""The run history: one SQLite file holding every stored run, written in one transaction per run.

Why these choices:
- SQLite, embedded: one file, no server, atomic commits; a crash mid-write (killed process, lost
  node) rolls back to the file as it was before the run.
- The rollback journal, not WAL: runs write once, at their end, so WAL's readers-beside-a-writer
  buys little, while WAL needs shared memory beside the file, which read-only media and network
  filesystems do not give. Two runs finishing at once take turns: the second waits on the lock for
  up to `busy_timeout_s` (BEGIN IMMEDIATE takes the write lock before anything is written).
- synchronous=FULL: a committed run survives a power cut, not only a process crash.
- Every SQLite error becomes one `HistoryError` line naming the file and what would help.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from clusterbench.history.fingerprint import host_fingerprints, run_fingerprint
from clusterbench.history.keys import SeriesKey, StoredRun, new_run_id, series_key
from clusterbench.history.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from clusterbench.history.sqlite_errors import HistoryError, HistoryReadOnly, check_header, explain

DEFAULT_BUSY_TIMEOUT_S = 60.0
# run_values' packed arrays: little-endian whatever the machine, so a history file can move.
SERIES_DTYPE = np.dtype("<i8")
VALUE_DTYPE = np.dtype("<f8")


class HistoryStore:
    """An open history file. Use `HistoryStore.open(...)` as a context manager."""

    def __init__(self, path: Path, connection: sqlite3.Connection, read_only: bool):
        self.path = path
        self.connection = connection
        self.read_only = read_only

    # -- opening ----------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False,
             busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> HistoryStore:
        """Open (creating it if absent and writable) and bring it to this schema version."""
        path = Path(path)
        if path.is_dir():
            raise HistoryError(f"{path}: is a directory; --history takes a file path (e.g. {path}/history.sqlite)")
        if path.exists():
            check_header(path)
        elif read_only:
            raise HistoryError(f"{path}: no such history file")
        elif not path.parent.is_dir():
            raise HistoryError(f"{path}: folder {path.parent} does not exist")
        mode = "ro" if read_only else "rwc"
        try:
            connection = sqlite3.connect(
                f"file:{quote(str(path.absolute()))}?mode={mode}", uri=True, timeout=busy_timeout_s,
                isolation_level=None
            )
        except sqlite3.Error as exc:
            raise explain(path, exc, "open it") from None
        store = cls(path, connection, read_only)
        try:
            store._prepare()
        except sqlite3.Error as exc:
            connection.close()
            raise explain(path, exc, "read its schema") from None
        except HistoryError:
            connection.close()
            raise
        return store

    def _prepare(self) -> None:
        db = self.connection
        db.execute("PRAGMA foreign_keys = ON")
        version = self._version()
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"{self.path}: history has schema version {version}, newer than this clusterbench reads "
                f"(up to {SCHEMA_VERSION}); upgrade clusterbench (pip install -U clusterbench)"
            )
        if version < SCHEMA_VERSION:
            if self.read_only and version == 0:
                raise HistoryReadOnly(f"{self.path}: holds no clusterbench history (an empty file or "
                                      "database); nothing to read")
            if self.read_only:
                raise HistoryReadOnly(
                    f"{self.path}: history has schema version {version} and needs migrating to {SCHEMA_VERSION}, "
                    "but it is opened read-only; open it once writable"
                )
            self._migrate()
        if not self.read_only:
            db.execute("PRAGMA synchronous = FULL")

    def _version(self) -> int:
        db = self.connection
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        has_tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
        if application_id != APPLICATION_ID and (application_id != 0 or has_tables or version):
            raise HistoryError(
                f"{self.path}: an SQLite database, but not a clusterbench history; give another --history path"
            )
        return version

    def _migrate(self) -> None:
        try:
            with self.transaction("migrate the history"):
                # Re-read under the write lock: another run may have migrated while this one waited.
                version = self._version()
                for target in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[target].split(";"):
                        if statement.strip():
                            self.connection.execute(statement)
                self.connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                self.connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except HistoryReadOnly:
            raise HistoryReadOnly(f"{self.path}: history is read-only and has no schema yet; nothing to read") from None

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE .. COMMIT; any failure rolls back and the file stays as it was."""
        if self.read_only:
            raise HistoryReadOnly(f"{self.path}: history is opened read-only, cannot {doing}")
        db = self.connection
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise explain(self.path, exc, doing) from None
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise explain(self.path, exc, doing) from None
            raise

    @contextmanager
    def reading(self, doing: str) -> Iterator[sqlite3.Connection]:
        try:
            yield self.connection
        except sqlite3.Error as exc:
            raise explain(self.path, exc, doing) from None

    # -- writing ----------------------------------------------------------------------------------

    def record(self, results: dict[str, Any], run_id: str | None = None) -> str:
        """Store a run (results.json's content) in one transaction; returns its run ID."""
        run = results["run"]
        run_id = run_id or new_run_id(run["started_at"])
        fingerprint, _ = run_fingerprint(run)
        profile = run.get("profile") or {}
        files = profile.get("files") or []
        with self.transaction(f"store run {run_id}") as db:
            pk = db.execute(
                "INSERT INTO runs (run_id, cluster, profile_name, profile_sha256, fingerprint, toolkit_version, quick,"
                " started_at, finished_at, verdict, recorded_at, run_json, tests_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id, run["cluster"], profile.get("name", run["cluster"]), files[0]["sha256"] if files else "",
                    fingerprint, (run.get("versions") or {}).get("clusterbench") or "unknown",
                    int(bool(run.get("quick"))),
                    run["started_at"], run.get("finished_at"), results.get("verdict", ""),
                    dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    json.dumps(run), json.dumps(results.get("tests") or []),
                ),
            ).lastrowid
            db.executemany(
                "INSERT INTO hosts (run, hostname, fingerprint, hardware_json) VALUES (?, ?, ?, ?)",
                [(pk, h.hostname, h.fingerprint, json.dumps(h.hardware)) for h in host_fingerprints(run)],
            )
            series_ids = self._series_ids(db, [series_key(m) for m in results.get("measurements") or []])
            db.executemany(
                "INSERT INTO measurements (run, series, host, value, samples_json, details_json) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (pk, series_ids[series_key(m)], m["host"], float(m["value"]), json.dumps(m.get("samples") or []),
                     json.dumps(m.get("details") or {}))
                    for m in results.get("measurements") or []
                ),
            )
            db.executemany(
                "INSERT INTO checks (run, check_json) VALUES (?, ?)",
                ((pk, json.dumps(c)) for c in results.get("checks") or []),
            )
            by_series: dict[int, list[float]] = {}
            for m in results.get("measurements") or []:
                by_series.setdefault(series_ids[series_key(m)], []).append(float(m["value"]))
            ids = sorted(by_series)
            db.execute(
                "INSERT INTO run_values (run, series, value) VALUES (?, ?, ?)",
                (pk, np.asarray(ids, dtype=SERIES_DTYPE).tobytes(),
                 np.asarray([statistics.median(by_series[i]) for i in ids], dtype=VALUE_DTYPE).tobytes()),
            )
        return run_id

    @staticmethod
    def _series_ids(db: sqlite3.Connection, keys: list[SeriesKey]) -> dict[SeriesKey, int]:
        db.executemany(
            "INSERT OR IGNORE INTO series (metric, params, rank, device, unit) VALUES (?, ?, ?, ?, ?)",
            [(k.metric, k.params, k.rank, k.device, k.unit) for k in set(keys)],
        )
        return {
            SeriesKey(*row[1:]): row[0]
            for row in db.execute("SELECT id, metric, params, rank, device, unit FROM series")
        }

    def delete(self, run_ids: list[str]) -> int:
        """Delete runs by ID (and their measurements, checks and hosts); returns how many."""
        with self.transaction("delete runs") as db:
            deleted = 0
            for run_id in run_ids:
                deleted += db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount
            # Series no run uses any more would only slow the next comparison's lookup.
            db.execute("DELETE FROM series WHERE id NOT IN (SELECT DISTINCT series FROM measurements)")
        return deleted

    def vacuum(self) -> None:
        """Give the space of deleted runs back to the filesystem (outside any transaction)."""
        with self.reading("compact the history") as db:
            db.execute("VACUUM")

    # -- reading ----------------------------------------------------------------------------------

    _RUN_COLUMNS = (
        "id, run_id, cluster, profile_name, fingerprint, toolkit_version, quick, started_at, finished_at, verdict"
    )

    def runs(self, *, cluster: str | None = None, fingerprint: str | None = None, quick: bool | None = None,
             before: str | None = None, exclude: str | None = None, limit: int | None = None,
             count_measurements: bool = False) -> list[StoredRun]:
        """Stored runs, newest first, narrowed by any of the given keys."""
        where: list[str] = []
        args: list[str | int] = []
        for column, value in (("cluster", cluster), ("fingerprint", fingerprint)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if quick is not None:
            where.append("quick = ?")
            args.append(int(quick))
        if before is not None:
            where.append("started_at < ?")
            args.append(before)
        if exclude is not None:
            where.append("run_id != ?")
            args.append(exclude)
        sql = f"SELECT {self._RUN_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self.reading("list runs") as db:
            rows = db.execute(sql, args).fetchall()
            counts: dict[int, int] = {}
            if count_measurements and rows:
                counts = dict(db.execute("SELECT run, count(*) FROM measurements GROUP BY run").fetchall())
        return [_stored_run(row, measurements=counts.get(row[0], 0)) for row in rows]

    def run(self, run_id: str) -> StoredRun:
        with self.reading("read a run") as db:
            row = db.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise HistoryError(f"{self.path}: no stored run '{run_id}' (see `clusterbench history list`)")
        return _stored_run(row)

    def series_by_id(self) -> dict[int, SeriesKey]:
        with self.reading("read the figures' keys") as db:
            rows = db.execute("SELECT id, metric, params, rank, device, unit FROM series")
            return {row[0]: SeriesKey(*row[1:]) for row in rows}

    def value_matrix(self, run_pks: list[int], series: np.ndarray) -> np.ndarray:
        """A (runs x series) array of each run's figure of each series (the run's median where it
        measured one twice), NaN where the run has none. Rows follow `run_pks`."""
        matrix = np.full((len(run_pks), len(series)), np.nan)
        if not run_pks or not len(series):
            return matrix
        row_of = {pk: row for row, pk in enumerate(run_pks)}
        marks = ",".join("?" * len(run_pks))
        with self.reading("read stored figures") as db:
            rows = db.execute(f"SELECT run, series, value FROM run_values WHERE run IN ({marks})", run_pks).fetchall()
        for run_pk, packed_ids, packed_values in rows:
            ids = np.frombuffer(packed_ids, dtype=SERIES_DTYPE)
            values = np.frombuffer(packed_values, dtype=VALUE_DTYPE)
            if not len(ids):
                continue
            position = np.minimum(np.searchsorted(ids, series), len(ids) - 1)
            found = ids[position] == series
            matrix[row_of[run_pk], found] = values[position[found]]
        return matrix

    def samples(self, run_pk: int) -> dict[int, list[float]]:
        """Series id -> raw samples of one run (for a comparison with a single stored run)."""
        with self.reading("read stored samples") as db:
            rows = db.execute("SELECT series, samples_json FROM measurements WHERE run = ?", (run_pk,)).fetchall()
        return {series: json.loads(text) for series, text in rows}

    def export(self, run_ids: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Each stored run as results.json holds it, plus its run ID and fingerprint."""
        chosen = self.runs() if not run_ids else [self.run(r) for r in run_ids]
        series = self.series_by_id()
        with self.reading("export runs") as db:
            for stored in chosen:
                run_json, tests_json = db.execute("SELECT run_json, tests_json FROM runs WHERE id = ?",
                                                  (stored.pk,)).fetchone()
                measurements = []
                for series_id, host, value, samples, details in db.execute(
                    "SELECT series, host, value, samples_json, details_json FROM measurements WHERE run = ?",
                    (stored.pk,)
                ):
                    key = series[series_id]
                    measurements.append({
                        "metric": key.metric, "value": value, "unit": key.unit, "params": json.loads(key.params),
                        "samples": json.loads(samples), "details": json.loads(details),
                        "host": host, "rank": key.rank, "device": key.device,
                    })
                checks = [json.loads(text)
                          for (text,) in db.execute("SELECT check_json FROM checks WHERE run = ?", (stored.pk,))]
                hosts = {
                    name: {"fingerprint": fp, "hardware": json.loads(hw)}
                    for name, fp, hw in db.execute(
                        "SELECT hostname, fingerprint, hardware_json FROM hosts WHERE run = ?", (stored.pk,)
                    )
                }
                yield {
                    **stored.to_json(), "run": json.loads(run_json), "tests": json.loads(tests_json),
                    "hosts": hosts, "measurements": measurements, "checks": checks,
                }


def _stored_run(row: tuple[Any, ...], measurements: int = 0) -> StoredRun:
    """A row of HistoryStore._RUN_COLUMNS (SQLite keeps `quick` as 0 or 1)."""
    pk, run_id, cluster, profile_name, fingerprint, toolkit_version, quick, started_at, finished_at, verdict = row
    return StoredRun(pk, run_id, cluster, profile_name, fingerprint, toolkit_version, bool(quick), started_at,
                     finished_at, verdict, measurements)


def file_size(path: Path) -> int:
    """Bytes the history takes on disk, its journal included if one is left."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-journal")) if p.exists())

