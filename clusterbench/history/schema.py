"""The history database's schema, its version, and the migrations that bring an older file up to it.

The version lives in SQLite's `user_version`, and `application_id` marks the file as a clusterbench
history, so that another program's SQLite file is refused instead of being written into. Each
migration runs in the same transaction as the version bump: a crash mid-migration leaves the file
at its old version, intact.
"""

from __future__ import annotations

# 'CBHI' in ASCII: what `PRAGMA application_id` reads in every clusterbench history.
APPLICATION_ID = 0x43424849

# Index i holds the SQL that takes a file from version i to version i + 1.
MIGRATIONS: tuple[str, ...] = (
    # 1: runs, their hosts, their checks; measurements point at a shared `series` (metric, params,
    # rank, device, unit). `run_values` repeats each run's figures as two packed arrays (sorted
    # series ids, int64; the run's median figure of each, float64): a comparison with 100 runs of
    # 10,000 figures reads 100 rows instead of a million (measurements keep samples and details).
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL UNIQUE,
        cluster TEXT NOT NULL,
        profile_name TEXT NOT NULL,
        profile_sha256 TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        toolkit_version TEXT NOT NULL,
        quick INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        verdict TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        run_json TEXT NOT NULL,
        tests_json TEXT NOT NULL
    );
    CREATE INDEX runs_by_key ON runs (cluster, fingerprint, quick, started_at);
    CREATE TABLE hosts (
        run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        hostname TEXT NOT NULL,
        fingerprint TEXT,
        hardware_json TEXT NOT NULL,
        PRIMARY KEY (run, hostname)
    );
    CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        metric TEXT NOT NULL,
        params TEXT NOT NULL,
        rank INTEGER NOT NULL,
        device TEXT NOT NULL,
        unit TEXT NOT NULL,
        UNIQUE (metric, params, rank, device, unit)
    );
    CREATE TABLE measurements (
        run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        series INTEGER NOT NULL REFERENCES series (id),
        host TEXT NOT NULL,
        value REAL NOT NULL,
        samples_json TEXT NOT NULL,
        details_json TEXT NOT NULL
    );
    CREATE INDEX measurements_by_run ON measurements (run);
    CREATE TABLE checks (
        run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        check_json TEXT NOT NULL
    );
    CREATE INDEX checks_by_run ON checks (run);
    CREATE TABLE run_values (
        run INTEGER PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
        series BLOB NOT NULL,
        value BLOB NOT NULL
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
