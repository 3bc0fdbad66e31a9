"""A history file's failures as one line each: the history errors, the check that a file is an
SQLite database at all (and not cut short) before SQLite reads it, and SQLite's own errors explained."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from clusterbench.errors import ClusterbenchError

SQLITE_MAGIC = b"SQLite format 3\x00"


class HistoryError(ClusterbenchError):
    """A history file that cannot be read or written: one line, naming the file."""


class HistoryReadOnly(HistoryError):
    """The history can be read but not written (read-only file, directory or mount, or opened so)."""


class HistoryLocked(HistoryError):
    """Another process held the history's write lock for longer than the busy timeout."""


def check_header(path: Path) -> None:
    """Refuse a file that is not SQLite, or that is shorter than its own header says (cut short),
    before SQLite reads it: SQLite would only fail later, on the first page it cannot find."""
    size = path.stat().st_size
    if size == 0:
        return  # SQLite treats an empty file as an empty database: the schema is created in it
    with path.open("rb") as handle:
        header = handle.read(100)
    if not SQLITE_MAGIC.startswith(header[:16]):
        raise HistoryError(f"{path}: not a clusterbench history (not an SQLite database); give another --history path")
    if len(header) < 100:
        raise HistoryError(f"{path}: history file is cut short ({size} bytes, less than a "
                           "header); restore it from a backup")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count is trustworthy only when the 'version-valid-for' field matches the change counter.
    if header[24:28] == header[92:96] and pages and size < pages * page_size:
        raise HistoryError(
            f"{path}: history file is cut short ({size} of {pages * page_size} bytes); restore it from a backup"
        )


def explain(path: Path, exc: sqlite3.Error, doing: str) -> HistoryError:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return HistoryReadOnly(f"{path}: history is read-only, cannot {doing} ({text})")
    if "locked" in text or "busy" in text:
        return HistoryLocked(f"{path}: history is locked by another process, cannot {doing} ({text})")
    if "malformed" in text or "not a database" in text or "disk I/O" in text:
        return HistoryError(f"{path}: history file is damaged, cannot {doing} ({text}); restore it from a backup")
    return HistoryError(f"{path}: cannot {doing}: {text}")
