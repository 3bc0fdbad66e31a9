"""The I/O jobs the storage probe runs, as plain data both engines read the same way.

Field meanings follow fio's job options, so a `Workload` reads like the fio job it becomes:
`size_per_job` is per job (fio's `size`) and each of `numjobs` jobs works on a file of its own.
Reads loop over their files for `runtime_s` (fio's time_based) after an unmeasured `ramp_s`.
Writes go through their files at most once, so that every block written is verified once. fio
cannot verify a write its runtime cut short (3.33 skips the inline verify, and its saved verify
state replays blocks that were never written), so the fio engine spends `ramp_s` on an unmeasured
write that sizes the measured one to last about `runtime_s`; the Python engine, which records every
block it writes, simply stops at `runtime_s`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

# The figure each kind of job produces (clusterbench.metrics names).
METRIC_BY_RW = {
    "randread": "storage.randread_iops",
    "randwrite": "storage.randwrite_iops",
    "read": "storage.seqread_gbps",
    "write": "storage.seqwrite_gbps",
}
RANDREAD_LATENCY_METRIC = "storage.randread_p99_us"
# Synchronous jobs (psync, Python threads) issue one I/O each, so queue depth becomes jobs; 16 is
# where the reference psync runs stop (axboe/fio#1501).
MAX_SYNC_JOBS = 16
ALIGNMENT = 4096  # O_DIRECT alignment every block size must respect


@dataclass(frozen=True)
class Workload:
    name: str  # job name, file-name stem and the key results are reported under
    rw: str  # fio's rw: randread, randwrite, read (sequential) or write (sequential)
    block_size: int  # bytes per I/O
    iodepth: int  # I/Os in flight per job (1 for synchronous engines)
    numjobs: int  # parallel jobs (fio processes, Python threads), one file each
    size_per_job: int  # bytes of each job's file
    runtime_s: float  # measured time (writes: about this long, and never more than one pass)
    ramp_s: float = 0.0  # unmeasured warm-up; for fio writes, the write that sizes the measured one
    direct: bool = True  # O_DIRECT; False only where the filesystem refuses it

    def __post_init__(self) -> None:
        if self.rw not in METRIC_BY_RW:
            raise ValueError(f"workload {self.name}: rw must be one of {', '.join(METRIC_BY_RW)}, got {self.rw!r}")
        if self.block_size <= 0 or self.block_size % ALIGNMENT:
            raise ValueError(f"workload {self.name}: block size must be a positive multiple of "
                             f"{ALIGNMENT}, got {self.block_size}")
        if self.size_per_job < self.block_size or self.size_per_job % self.block_size:
            raise ValueError(f"workload {self.name}: size per job must be a whole number of "
                             f"blocks, got {self.size_per_job}")
        if self.iodepth < 1 or self.numjobs < 1 or self.runtime_s <= 0 or self.ramp_s < 0:
            raise ValueError(f"workload {self.name}: iodepth, numjobs and runtime must be positive, ramp not negative")

    @property
    def is_write(self) -> bool:
        return self.rw in ("randwrite", "write")

    @property
    def is_random(self) -> bool:
        return self.rw.startswith("rand")

    @property
    def metric(self) -> str:
        return METRIC_BY_RW[self.rw]

    @property
    def footprint(self) -> int:
        """Bytes on disk while the workload runs (its files are deleted when it ends)."""
        return self.size_per_job * self.numjobs

    def file_names(self) -> list[str]:
        """One file per job, named as fio's `$jobname.$jobnum.$filenum` names them."""
        return [f"{self.name}.{job}.0" for job in range(self.numjobs)]

    def fitted(self, max_bytes: int) -> Workload:
        """The same job with files shrunk, if need be, so that the footprint fits in `max_bytes`."""
        per_job = min(self.size_per_job, max_bytes // self.numjobs)
        per_job -= per_job % self.block_size
        if per_job < self.block_size:
            raise ValueError(
                f"workload {self.name} needs at least {self.numjobs * self.block_size} bytes ({self.numjobs} files of "
                f"one block), not {max_bytes}"
            )
        return replace(self, size_per_job=per_job)

    def synchronous(self, max_jobs: int = MAX_SYNC_JOBS) -> Workload:
        """The comparable synchronous job: one job (psync process, Python thread) per I/O in flight,
        at most `max_jobs`, on the same footprint (more jobs, each with a smaller file)."""
        numjobs = max(1, min(self.numjobs * self.iodepth, max_jobs))
        per_job = max(self.block_size, self.footprint // numjobs // self.block_size * self.block_size)
        return replace(self, numjobs=numjobs, iodepth=1, size_per_job=per_job)


def standard_workloads(quick: bool) -> tuple[Workload, ...]:
    """4 KiB random read/write (IOPS and latency) and 1 MiB sequential read/write (bandwidth).

    Full: fio's usual cloud-disk settings (queue depth 64 x 4 jobs, 30 s after a 2 s ramp) on
    2-4 GiB files. Quick: the same jobs for 2 s each on files that lay out in well under a second.
    """
    if quick:
        return (
            Workload("randread_4k", "randread", 4 * KiB, iodepth=32, numjobs=1, size_per_job=256 * MiB, runtime_s=2),
            Workload("randwrite_4k", "randwrite", 4 * KiB, iodepth=32, numjobs=1, size_per_job=256 * MiB, runtime_s=2, ramp_s=0.5),  # noqa: E501 (a table row)
            Workload("seqread_1m", "read", MiB, iodepth=16, numjobs=1, size_per_job=512 * MiB, runtime_s=2),
            Workload("seqwrite_1m", "write", MiB, iodepth=16, numjobs=1, size_per_job=512 * MiB, runtime_s=2, ramp_s=0.5),  # noqa: E501 (a table row)
        )
    return (
        Workload("randread_4k", "randread", 4 * KiB, iodepth=64, numjobs=4, size_per_job=2 * GiB, runtime_s=30, ramp_s=2),  # noqa: E501 (a table row)
        Workload("randwrite_4k", "randwrite", 4 * KiB, iodepth=64, numjobs=4, size_per_job=2 * GiB, runtime_s=30, ramp_s=2),  # noqa: E501 (a table row)
        Workload("seqread_1m", "read", MiB, iodepth=64, numjobs=4, size_per_job=4 * GiB, runtime_s=30, ramp_s=2),
        Workload("seqwrite_1m", "write", MiB, iodepth=64, numjobs=4, size_per_job=4 * GiB, runtime_s=30, ramp_s=2),
    )
