"""Facts about the filesystem under a target that decide how honest a figure can be.

Whether it takes O_DIRECT (else every figure may include the page cache), whether it lives in RAM
(tmpfs accepts O_DIRECT since Linux 6.6, yet measures memory either way), how much RAM could cache a
working set, and whether a file's pages are still cached when we are about to time reading it.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import re
from dataclasses import dataclass
from pathlib import Path

from clusterbench.probes.storage.errors import StorageRunError
from clusterbench.probes.storage.workspace import Workspace

# O_DIRECT needs buffer address, offset and length aligned to the logical block size; 4 KiB covers
# both 512-byte and 4 KiB devices, and every block size our workloads use is a multiple of it.
DIRECT_ALIGNMENT = 4096
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs", "devtmpfs", "hugetlbfs"})


@dataclass(frozen=True)
class TargetFacts:
    """What the engines need to know about the target, probed once inside the workspace."""

    target: str  # the directory the user named, resolved
    filesystem: str  # type from /proc/self/mountinfo ("ext4", "tmpfs", "nfs4", "unknown")
    memory_bytes: int  # physical RAM: a working set up to this size may be served from the page cache
    direct_refused: str | None  # why O_DIRECT cannot be used here; None when it can

    @property
    def direct(self) -> bool:
        return self.direct_refused is None

    @property
    def memory_backed(self) -> bool:
        return self.filesystem in MEMORY_FILESYSTEMS


def probe_target(workspace: Workspace) -> TargetFacts:
    return TargetFacts(
        target=str(workspace.target),
        filesystem=filesystem_type(workspace.path),
        memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        direct_refused=direct_io_refusal(workspace),
    )


def filesystem_type(path: Path) -> str:
    """The type of the mount holding `path` (the longest mount point that contains it)."""
    real = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as lines:
            for line in lines:
                before, _, after = line.partition(" - ")
                # Mount points escape space, tab, newline and backslash as octal (\040).
                mount_point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), before.split()[4])
                inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best):
                    best, fstype = mount_point, after.split()[0]
    except OSError:
        return "unknown"
    return fstype


def direct_io_refusal(workspace: Workspace) -> str | None:
    """None when an aligned O_DIRECT write works in the workspace, else why it does not.

    Opening alone is not enough: some filesystems accept the flag and refuse the I/O.
    """
    probe = workspace.file("direct-io-probe")
    buffer = mmap.mmap(-1, DIRECT_ALIGNMENT)  # anonymous maps are page-aligned
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_DIRECT, 0o600)
        try:
            os.pwritev(fd, [buffer], 0)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            return f"the filesystem refuses O_DIRECT ({errno.errorcode.get(exc.errno, exc.errno)})"
        raise StorageRunError(f"cannot write a {DIRECT_ALIGNMENT}-byte test file in "
                              f"{workspace.path}: {exc.strerror}") from None
    finally:
        buffer.close()
        workspace.remove("direct-io-probe")
    return None


def drop_cached_pages(fd: int) -> None:
    """Ask the kernel to evict a file's clean pages (what fio's invalidate=1 does). Advice only:
    dirty pages stay until written, and memory filesystems have nowhere else to keep data."""
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_MAP_FAILED = ctypes.c_void_p(-1).value


def evict_file(path: Path) -> float | None:
    """Drop a file's cached pages, then say how much of it is still cached (eviction is advice)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        drop_cached_pages(fd)
    finally:
        os.close(fd)
    return resident_fraction(path)


def resident_fraction(path: Path) -> float | None:
    """Fraction of the file's pages in the page cache right now (mincore(2)), None if unknown.

    Mapping a file does not fault its pages in, so looking does not change the answer.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return 0.0
        address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, _MAP_FAILED):
            return None
        try:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vector = (ctypes.c_ubyte * pages)()
            if _libc.mincore(address, size, vector) != 0:
                return None
            return (pages - bytes(vector).count(0)) / pages  # bit 0 set: resident; other bits unused
        finally:
            _libc.munmap(address, size)
    finally:
        os.close(fd)
