"""Run a Workload without fio: one thread per job, each issuing one synchronous I/O at a time.

This is the fallback where fio is absent, and its fair fio counterpart is `ioengine=psync` with the
same number of jobs at queue depth 1 (so the engine only takes synchronous workloads; see
`Workload.synchronous`). Like fio it uses one file per job, page-aligned buffers (anonymous mmap)
with os.preadv/os.pwritev so O_DIRECT works, preallocates write files, lays out and evicts read files
before the clock starts, counts I/Os completed per half-second window and times every I/O
(perf_counter_ns around the call alone) for latency percentiles.

Written data is random (a pool from os.urandom, sliced at a different offset per block) with the
block's own offset and a per-run token stamped in its first 16 bytes, so each block is unique and a
block landing at the wrong offset or left over from an earlier run is caught. After the write phase
(and the optional `after_write` hook) every written block is read back, from the device where
O_DIRECT allows, and compared byte for byte with what was written; any difference raises
StorageIntegrityError.
"""

from __future__ import annotations

import errno
import mmap
import os
import random
import secrets
import struct
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from clusterbench.probes.stats import percentile
from clusterbench.probes.storage.errors import StorageIntegrityError, StorageRunError
from clusterbench.probes.storage.figures import INTERVAL_S, AfterWrite, IOFigures
from clusterbench.probes.storage.filesystem import drop_cached_pages
from clusterbench.probes.storage.workloads import MAX_SYNC_JOBS, MiB, Workload
from clusterbench.probes.storage.workspace import Workspace

POOL_BYTES = 8 * MiB
# Successive blocks start 64 bytes further into the pool, so pool content recurs only every 131072
# blocks (512 MiB of 4 KiB blocks); the header makes every block unique regardless.
POOL_STRIDE = 4096 + 64
HEADER = struct.Struct("<QQ")  # block offset, run token
CHUNK = 4 * MiB  # layout and read-back size: large, aligned, cheap per byte


def thread_limit() -> int:
    """Threads worth running: past two per core they queue for the GIL and the figure drops (on 2
    cores, 16 threads reach under half of fio psync's IOPS with 16 jobs; 4 reach three quarters)."""
    return min(MAX_SYNC_JOBS, 2 * len(os.sched_getaffinity(0)))


class BlockContent:
    """The bytes every block of a run holds: random, unique per offset, reproducible for checking."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.token = secrets.randbits(64)
        self._pool = memoryview(os.urandom(POOL_BYTES + block_size))

    def fill(self, buffer: memoryview, offset: int) -> None:
        start = (offset // self.block_size * POOL_STRIDE) % POOL_BYTES
        buffer[:] = self._pool[start : start + self.block_size]
        HEADER.pack_into(buffer, 0, offset, self.token)


@dataclass
class JobStats:
    """One thread's raw record: start and end (perf_counter_ns) of every I/O, in order."""

    starts_ns: array = field(default_factory=lambda: array("q"))
    ends_ns: array = field(default_factory=lambda: array("q"))
    written_offsets: list[int] = field(default_factory=list)
    finished_ns: int = 0  # after the final fsync of a write job
    error: BaseException | None = None


def _open_flags(workload: Workload, write: bool) -> int:
    flags = (os.O_WRONLY if write else os.O_RDONLY) | os.O_NOFOLLOW
    return flags | os.O_DIRECT if workload.direct else flags


def _one_line(error: OSError, path: Path) -> str:
    name = errno.errorcode.get(error.errno or 0, "error")
    return f"{error.strerror} ({name}) on {path}"


def _lay_out(path: Path, workload: Workload, content: BlockContent) -> None:
    """Fill a read file with random blocks, flush it and evict it, as fio lays out and invalidates."""
    chunk = memoryview(bytearray(max(CHUNK, workload.block_size)))
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    try:
        for start in range(0, workload.size_per_job, len(chunk)):
            length = min(len(chunk), workload.size_per_job - start)
            for block in range(0, length, workload.block_size):
                content.fill(chunk[block : block + workload.block_size], start + block)
            os.pwrite(fd, chunk[:length], start)
        drop_cached_pages(fd)
    finally:
        os.close(fd)


def _prepare_write_file(path: Path, size: int) -> None:
    """Create and preallocate (fio's fallocate=native), so a full filesystem fails here, not midway."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate there: writes allocate
            raise
    finally:
        os.close(fd)


class _Job(threading.Thread):
    """One job: one file, one I/O at a time. The loops are kept bare (locals only, two appends per
    I/O) because every bytecode in them is time the GIL is held and the device is idle."""

    def __init__(self, path: Path, workload: Workload, content: BlockContent, go: threading.Event,
                 stop: threading.Event, clock: dict[str, int]) -> None:
        super().__init__(name=f"clusterbench-{path.name}", daemon=True)
        self.path, self.workload, self.content = path, workload, content
        self.go, self.stop, self.clock = go, stop, clock
        self.stats = JobStats()

    def run(self) -> None:
        w, stats = self.workload, self.stats
        buffer = mmap.mmap(-1, w.block_size)  # page-aligned, as O_DIRECT needs
        view = memoryview(buffer)
        try:
            fd = os.open(self.path, _open_flags(w, w.is_write))
            try:
                if w.is_write:
                    self._write_loop(fd, view)
                    os.fsync(fd)  # fio's end_fsync: the data is on the device before the clock stops
                else:
                    self._read_loop(fd, view)
                stats.finished_ns = time.perf_counter_ns()
            finally:
                os.close(fd)
        except BaseException as exc:  # reported by the caller, which stops the other jobs
            stats.error = exc
            self.stop.set()
        finally:
            view.release()
            buffer.close()

    def _read_loop(self, fd: int, view: memoryview) -> None:
        bs, random_offsets = self.workload.block_size, self.workload.is_random
        blocks = self.workload.size_per_job // bs
        pick = random.Random(secrets.randbits(64)).randrange
        clock, preadv, buffers = time.perf_counter_ns, os.preadv, [view]
        starts, ends, stopped = self.stats.starts_ns.append, self.stats.ends_ns.append, self.stop.is_set
        self.go.wait()
        deadline = self.clock["deadline"]
        block, t1 = -1, 0
        while t1 < deadline and not stopped():
            block = pick(blocks) if random_offsets else (block + 1) % blocks
            t0 = clock()
            preadv(fd, buffers, block * bs)
            t1 = clock()
            starts(t0)
            ends(t1)

    def _write_loop(self, fd: int, view: memoryview) -> None:
        w = self.workload
        offsets = list(range(0, w.size_per_job, w.block_size))
        if w.is_random:  # each block once, in random order (fio's random map)
            random.Random(secrets.randbits(64)).shuffle(offsets)
        fill, clock, pwritev, buffers = self.content.fill, time.perf_counter_ns, os.pwritev, [view]
        starts, ends, stopped = self.stats.starts_ns.append, self.stats.ends_ns.append, self.stop.is_set
        written = self.stats.written_offsets
        self.go.wait()
        deadline = self.clock["deadline"]
        t1 = 0
        for offset in offsets:  # once through the file, like fio without time_based
            if t1 >= deadline or stopped():
                break
            fill(view, offset)
            t0 = clock()
            pwritev(fd, buffers, offset)
            t1 = clock()
            written.append(offset)
            starts(t0)
            ends(t1)


def run_python(workload: Workload, workspace: Workspace, *, after_write: AfterWrite | None = None) -> IOFigures:
    """Run a synchronous `workload` in `workspace` with threads; its files are gone afterwards."""
    if workload.iodepth != 1:
        raise ValueError(f"the Python engine is synchronous; run {workload.name} as "
                         "workload.synchronous(thread_limit())")
    names = workload.file_names()
    paths = [workspace.file(name) for name in names]
    content = BlockContent(workload.block_size)
    try:
        for path in paths:
            try:
                if workload.is_write:
                    _prepare_write_file(path, workload.size_per_job)
                else:
                    _lay_out(path, workload, content)
            except OSError as exc:
                raise StorageRunError(f"python engine {workload.name}: cannot lay out "
                                      f"files: {_one_line(exc, path)}") from None
        jobs, measure_from = _run_jobs(workload, paths, content)
        verified = None
        if workload.is_write:
            if after_write is not None:
                after_write(paths)
            verified = sum(_verify(job.path, job.stats.written_offsets, workload, content) for job in jobs)
        return _figures(workload, [job.stats for job in jobs], measure_from, verified)
    finally:
        for name in names:
            workspace.remove(name)


def _run_jobs(workload: Workload, paths: list[Path], content: BlockContent) -> tuple[list[_Job], int]:
    """Run one thread per file from a common start; the jobs and when measuring began (after ramp)."""
    go, stop = threading.Event(), threading.Event()
    clock: dict[str, int] = {}
    jobs = [_Job(path, workload, content, go, stop, clock) for path in paths]
    for job in jobs:
        job.start()
    try:
        start = time.perf_counter_ns()
        clock["measure_from"] = start + int(workload.ramp_s * 1e9)
        clock["deadline"] = clock["measure_from"] + int(workload.runtime_s * 1e9)
        go.set()
        for job in jobs:
            job.join()
    finally:  # Ctrl-C or SIGTERM in the main thread: stop the jobs before their files are removed
        stop.set()
        go.set()
        for job in jobs:
            job.join()
    for job in jobs:
        if isinstance(job.stats.error, OSError):
            raise StorageRunError(f"python engine {workload.name}: {_one_line(job.stats.error, job.path)}") from None
        if job.stats.error is not None:
            raise job.stats.error
    return jobs, clock["measure_from"]


def _verify(path: Path, offsets: list[int], workload: Workload, content: BlockContent) -> int:
    """Read the file back in large aligned chunks and compare every written block; bytes checked."""
    bs = workload.block_size
    written = bytearray(workload.size_per_job // bs)
    for offset in offsets:
        written[offset // bs] = 1
    chunk = mmap.mmap(-1, max(CHUNK, bs))
    expected = bytearray(bs)
    checked = 0
    try:
        fd = os.open(path, _open_flags(workload, write=False))
        try:
            if not workload.direct:
                drop_cached_pages(fd)  # check what reached the device, not the cached copy
            for start in range(0, workload.size_per_job, len(chunk)):
                got = os.preadv(fd, [chunk], start)
                for block_offset in range(0, got - got % bs, bs):
                    offset = start + block_offset
                    if not written[offset // bs]:
                        continue
                    content.fill(memoryview(expected), offset)
                    actual = chunk[block_offset : block_offset + bs]  # bytes: compared with memcmp
                    if actual != expected:
                        first = next(k for k in range(bs) if actual[k] != expected[k])
                        raise StorageIntegrityError(
                            f"python engine {workload.name}: block at offset {offset} of {path} differs from what was "
                            f"written (first difference at byte {first} of {bs})"
                        )
                    checked += bs
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageRunError(f"python engine {workload.name}: reading back for "
                              f"verification: {_one_line(exc, path)}") from None
    finally:
        chunk.close()
    if checked != len(offsets) * bs:
        raise StorageIntegrityError(f"python engine {workload.name}: {path} is shorter than the data written to it")
    return checked


def _figures(workload: Workload, jobs: list[JobStats], measure_from: int, verified: int | None) -> IOFigures:
    """fio's figures from the raw records: I/Os completed after the ramp, over the time from the
    end of the ramp to the last job's end (its final fsync included, as fio's end_fsync does)."""
    seconds = (max(job.finished_ns for job in jobs) - measure_from) / 1e9
    latencies: list[int] = []
    ends: list[int] = []
    for job in jobs:
        for start, end in zip(job.starts_ns, job.ends_ns):
            if end >= measure_from:
                latencies.append(end - start)
                ends.append(end - measure_from)
    if not latencies:
        raise StorageRunError(f"python engine {workload.name}: no I/O completed in {workload.runtime_s} s")
    latencies.sort()
    interval_ns = round(INTERVAL_S * 1e9)
    window_counts = [0] * (max(ends) // interval_ns)  # complete windows only: the last is partial
    for end in ends:
        window = end // interval_ns
        if window < len(window_counts):
            window_counts[window] += 1
    ios = len(latencies)
    return IOFigures(
        workload=workload,
        engine="python",
        ioengine="python-threads",
        iops=ios / seconds,
        bandwidth_bps=ios * workload.block_size / seconds,
        total_ios=ios,
        seconds=seconds,
        interval_iops=[count / INTERVAL_S for count in window_counts],
        latency_ns={
            "mean": sum(latencies) / ios,
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "p99.9": percentile(latencies, 99.9),
        },
        verified_bytes=verified,
    )
