"""The ways a storage measurement can go wrong, each a one-line message a user can act on."""

from __future__ import annotations

from typing import Any

from clusterbench.errors import ClusterbenchError
from clusterbench.model import NotMeasured


class StorageTargetError(ClusterbenchError, ValueError):
    """The target path cannot host a measurement (missing, a file, a device node, read-only, full).

    Raised before anything is created: the message names the path, the problem and what would do.
    """


class StorageRunError(ClusterbenchError):
    """A workload started but could not finish: the filesystem filled up, fio failed or hung."""


class StorageIntegrityError(ClusterbenchError):
    """Data read back differs from what was written. Always a failure, never a warning.

    Raised by measure_storage only after every workload has run, with the figures measured so far
    in `result`, so nothing already measured is lost.
    """

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class FioUnavailable(NotMeasured):
    """fio is not installed (or not runnable): the caller may fall back to the Python engine."""
