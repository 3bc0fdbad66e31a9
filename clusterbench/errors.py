"""Errors that reach the user as one clear line, never as a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class ClusterbenchError(Exception):
    """Base of errors whose message is complete in itself: what is wrong, where, what would be right."""


class ProfileError(ClusterbenchError):
    """A cluster profile that cannot be found, parsed or understood."""


def read_bytes(path: Path, error: type[ClusterbenchError], *, missing: str, directory: str, unreadable: str) -> bytes:
    """The file's bytes, or `error` with one line: "<path>: <missing>", "<path>: <directory>", or
    "<path>: <unreadable>: <why>"."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except IsADirectoryError:
        raise error(f"{path}: {directory}") from None
    except OSError as exc:
        raise error(f"{path}: {unreadable}: {exc.strerror or exc}") from None


def nearest(word: str, choices: Iterable[str]) -> str:
    """A ' did you mean ...?' suffix naming the closest valid choice, or '' when none is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{matches[0]}'?" if matches else ""
