"""A private directory inside the user's storage target, and the promise to leave nothing behind.

The probe never writes outside a fresh directory it makes itself (`.clusterbench-<host>-<pid>-<hex>`,
mode 0700 so no other user can plant a symlink in it), and on the way out removes exactly the files
it claimed in it and then the directory, if empty. Anything else found there is reported, never
deleted. Removal goes through file descriptors of the directories opened at creation, so a target
renamed or swapped for a symlink mid-run cannot redirect a delete. Cleanup runs on success, on any
exception, on Ctrl-C and on SIGTERM (turned into an exception so every `finally` on the way out runs,
then re-delivered to whatever handled SIGTERM before).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import signal
import socket
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from clusterbench.probes.storage.errors import StorageRunError, StorageTargetError

PREFIX = ".clusterbench-"
MiB = 1 << 20
# Room kept free beyond the working size: filesystem metadata, fio's logs, and a filesystem that
# other jobs are writing to while we measure.
MARGIN_BYTES = 64 * MiB
MARGIN_FRACTION = 0.05


def space_needed(working_bytes: int) -> int:
    return working_bytes + max(MARGIN_BYTES, int(working_bytes * MARGIN_FRACTION))


def human_bytes(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"


def validate_target(target: Path, working_bytes: int | None) -> Path:
    """The resolved target directory, or StorageTargetError saying what is wrong and what would do.

    `working_bytes` is the most the measurement will hold on disk at once; None skips the free-space
    check (for callers that size their own work, such as tests of a filesystem filling up).
    """
    where = f"storage target {target}"
    try:
        info = os.stat(target)  # follows a symlink the user named: its directory is what they meant
    except FileNotFoundError:
        raise StorageTargetError(f"{where} does not exist; name an existing directory "
                                 "on the filesystem to test") from None
    except OSError as exc:
        raise StorageTargetError(f"{where} cannot be examined ({exc.strerror}); name a "
                                 "directory this user can reach") from None
    if stat.S_ISBLK(info.st_mode) or stat.S_ISCHR(info.st_mode):
        raise StorageTargetError(
            f"{where} is a device node; clusterbench never writes to devices: name a directory on a "
            "filesystem mounted from it"
        )
    if not stat.S_ISDIR(info.st_mode):
        kind = "a file" if stat.S_ISREG(info.st_mode) else "not a regular directory"
        raise StorageTargetError(f"{where} is {kind}, not a directory; name the directory to test in, "
                                 f"e.g. {Path(target).parent}")
    vfs = os.statvfs(target)
    if vfs.f_flag & os.ST_RDONLY:
        raise StorageTargetError(f"{where} is on a read-only filesystem; name a directory on a writable one")
    if not os.access(target, os.W_OK | os.X_OK):
        raise StorageTargetError(f"{where} is not writable by uid {os.getuid()}; name a directory "
                                 "this user may create files in")
    # A filesystem that reports no capacity at all (ramfs, some FUSE mounts) cannot be checked.
    if working_bytes is not None and vfs.f_blocks:
        free = vfs.f_bavail * vfs.f_frsize
        needed = space_needed(working_bytes)
        if free < needed:
            raise StorageTargetError(
                f"{where} has {human_bytes(free)} free but the measurement needs {human_bytes(needed)} "
                f"(working size {human_bytes(working_bytes)} plus margin); free space there or "
                "choose a smaller working size"
            )
    return Path(os.path.realpath(target))


class Terminated(BaseException):
    """SIGTERM arrived inside a workspace. A BaseException, so `except Exception` cannot swallow it."""


@dataclass
class CleanupReport:
    """What cleanup removed and what it left in place (with why), for the result and the report."""

    directory: str
    removed_files: int = 0  # over the workspace's life: workloads delete their files as they finish
    directory_removed: bool = False
    left_behind: list[str] = field(default_factory=list)  # "name (reason)"

    @property
    def complete(self) -> bool:
        return self.directory_removed and not self.left_behind

    def summary(self) -> str:
        if self.complete:
            return f"removed {self.directory} and the {self.removed_files} files clusterbench created in it"
        return f"{self.directory} not fully removed: " + "; ".join(self.left_behind or ["directory not empty"])


def _safe_hostname() -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64] or "host"


class Workspace:
    """Our own directory in the target and the ledger of the file names claimed in it.

    Use as a context manager: `with Workspace.create(target, working_bytes) as ws: ...`. Every file
    anyone (this process, fio, torch.save) will create in it is claimed first with `ws.file(name)`,
    before it exists, so an interruption between creating and recording cannot leak it.
    """

    def __init__(self, target: Path, name: str, target_fd: int, dir_fd: int) -> None:
        self.target = target
        self.path = target / name
        self._name = name
        self._target_fd = target_fd
        self._dir_fd = dir_fd
        self._identity = self._stat_identity(os.fstat(dir_fd))
        self._claimed: set[str] = set()
        # Claimed subdirectories -> the names their writer gives its files (see `subdirectory`).
        self._subdirectories: dict[str, re.Pattern[str]] = {}
        # Subdirectories removed early but kept, since they held entries we did not make -> those.
        self._kept: dict[str, list[str]] = {}
        self._removed = 0  # files of ours deleted so far, by remove() or cleanup()
        self._previous_sigterm: Any = None
        self.cleanup_report: CleanupReport | None = None

    @classmethod
    def create(cls, target: Path, working_bytes: int | None) -> Workspace:
        """Validate `target`, then make the fresh directory. Nothing is created when validation fails."""
        resolved = validate_target(target, working_bytes)
        target_fd = os.open(resolved, os.O_RDONLY | os.O_DIRECTORY)
        try:
            name = f"{PREFIX}{_safe_hostname()}-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                os.mkdir(name, mode=0o700, dir_fd=target_fd)
            except OSError as exc:
                raise StorageTargetError(
                    f"storage target {resolved}: cannot create a working directory in it ({exc.strerror}); "
                    "name a directory this user may create files in"
                ) from None
            dir_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=target_fd)
        except BaseException:
            os.close(target_fd)
            raise
        return cls(resolved, name, target_fd, dir_fd)

    @property
    def dir_fd(self) -> int:
        """An open descriptor of the workspace, for `dir_fd=` calls on claimed names: no path to
        resolve per call (the metadata probe makes thousands), and no way out of the directory."""
        return self._dir_fd

    @staticmethod
    def _stat_identity(info: os.stat_result) -> tuple[int, int]:
        return (info.st_dev, info.st_ino)

    def file(self, name: str) -> Path:
        """Claim `name` (a plain file name, no directories) for a file about to be created here."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"workspace file names are plain names, got {name!r}")
        self._claimed.add(name)
        return self.path / name

    def subdirectory(self, name: str, owned: re.Pattern[str]) -> Path:
        """Claim and make a subdirectory for a writer that names its own files (torch.distributed.
        checkpoint writes a file per rank and a metadata file, under names of its choosing). Entries
        whose names match `owned` are the writer's and are removed with the subdirectory; anything
        else found in it is reported and left in place, as in the workspace itself."""
        path = self.file(name)
        self._subdirectories[name] = owned
        os.mkdir(name, mode=0o700, dir_fd=self._dir_fd)
        return path

    def _delete(self, name: str) -> list[str]:
        """Delete a claimed entry; returns what was found in it that was not ours (then it stays)."""
        owned = self._subdirectories.get(name)
        if owned is None:
            os.unlink(name, dir_fd=self._dir_fd)  # unlink never follows a symlink
            self._removed += 1
            return []
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=self._dir_fd)
        try:
            strangers = []
            for entry in sorted(os.listdir(fd)):
                if owned.fullmatch(entry):
                    os.unlink(entry, dir_fd=fd)
                    self._removed += 1
                else:
                    strangers.append(f"{name}/{entry} (not created by clusterbench; left in place)")
        finally:
            os.close(fd)
        if not strangers:
            os.rmdir(name, dir_fd=self._dir_fd)
            self._removed += 1
        return strangers

    def remove(self, name: str) -> None:
        """Delete a claimed file or subdirectory now (a workload done with its data) and drop it
        from the ledger."""
        if name not in self._claimed:
            raise ValueError(f"{name!r} was not claimed in this workspace; refusing to delete it")
        try:
            strangers = self._delete(name)
            if strangers:
                self._kept[name] = strangers  # reported by cleanup, which then leaves the workspace
        except FileNotFoundError:
            pass
        self._claimed.discard(name)

    def cleanup(self) -> CleanupReport:
        """Remove the claimed files, then the directory if nothing else is in it. Idempotent."""
        if self.cleanup_report is not None:
            return self.cleanup_report
        report = CleanupReport(str(self.path))
        failed: set[str] = set()
        for name in sorted(self._claimed):
            try:
                strangers = self._delete(name)
                if strangers:
                    self._kept[name] = strangers
            except FileNotFoundError:
                pass  # claimed but never created (an optional log fio did not write)
            except OSError as exc:
                failed.add(name)
                report.left_behind.append(f"{name} ({exc.strerror})")
        self._claimed.clear()
        report.left_behind += [entry for strangers in self._kept.values() for entry in strangers]
        report.removed_files = self._removed
        strangers = sorted(set(os.listdir(self._dir_fd)) - failed - set(self._kept))
        report.left_behind += [f"{name} (not created by clusterbench; left in place)" for name in strangers]
        os.close(self._dir_fd)
        if not report.left_behind:
            report.directory_removed = self._remove_own_directory(report)
        os.close(self._target_fd)
        self.cleanup_report = report
        return report

    def _remove_own_directory(self, report: CleanupReport) -> bool:
        try:
            now = os.stat(self._name, dir_fd=self._target_fd, follow_symlinks=False)
            if self._stat_identity(now) != self._identity:
                report.left_behind.append(f"{self._name} (replaced by another entry during the run; left in place)")
                return False
            os.rmdir(self._name, dir_fd=self._target_fd)
            return True
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                report.left_behind.append(f"{self._name} (removed by someone else during the run)")
            else:
                report.left_behind.append(f"{self._name} ({exc.strerror})")
            return False

    # --- context manager: cleanup on every way out, SIGTERM included ----------------------------

    def __enter__(self) -> Workspace:
        # Signal handlers can only be installed from the main thread; elsewhere the caller's own
        # handling applies and the `finally` below still covers exceptions and Ctrl-C.
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGTERM)
            if previous is not signal.SIG_IGN:
                self._previous_sigterm = previous
                signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    @staticmethod
    def _on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        previous, self._previous_sigterm = self._previous_sigterm, None
        try:
            report = self.cleanup()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if isinstance(exc, Terminated):
            # Hand the signal to whoever had it before: the default ends the process with the
            # status of SIGTERM; a Python handler runs now. Only if that handler returns do we go on.
            signal.raise_signal(signal.SIGTERM)
            raise StorageRunError(f"storage measurement in {self.target} stopped by SIGTERM; "
                                  f"{report.summary()}") from None
