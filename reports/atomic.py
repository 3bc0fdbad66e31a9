"""Replacing a report file in one rename, so a crash never leaves half a file where a good one was."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from clusterbench.errors import ClusterbenchError


def write_atomically(path: Path, text: str | Iterable[str]) -> None:
    """Replace `path` with `text` (UTF-8; a string, or pieces written in turn so that a large file
    is never held twice in memory), fsync'd; on any failure the old file stays as it was."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        # backslashreplace: a name read from the machine may hold undecodable bytes (lone surrogates).
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as handle:
            handle.writelines([text] if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def check_writable_directory(path: Path, option: str) -> None:
    """Make `path` if need be and prove a file can be written in it, before a run measures for
    hours only to find it cannot keep the results. One line naming `option` when it cannot."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".clusterbench-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise ClusterbenchError(f"{option} {path}: not a directory (a file of that name is in the way)") from None
    except OSError as exc:
        raise ClusterbenchError(f"{option} {path}: cannot write there: {exc.strerror or exc}") from None
