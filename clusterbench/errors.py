"""Errors that reach the user as one clear line, never as a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ClusterbenchError(Exception):
    """Base of errors whose message is complete in itself: what is wrong, where, what would be right."""


class ProfileError(ClusterbenchError):
    """A cluster profile that cannot be found, parsed or understood."""


def nearest(word: str, choices: Iterable[str]) -> str:
    """A ' did you mean ...?' suffix naming the closest valid choice, or '' when none is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{matches[0]}'?" if matches else ""
