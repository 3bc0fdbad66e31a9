"""Storage measurement: IOPS, bandwidth, latency, metadata rate and checkpoint throughput of a path.

    result = measure_storage(Path("/mnt/nvme"), quick=True)
    for m in result.measurements: print(m.metric, m.value, m.unit, m.details["caveat"])

Everything happens in a fresh directory of the probe's own inside the target, removed afterwards
(`workspace`). fio runs the I/O workloads where it is installed; otherwise the Python engine does,
and the result says so (`engine`, `engine_reason`, `fallbacks`). A workload that cannot finish is
recorded in `failures` (its metrics are then not measured) and the others still run; data that
reads back wrong raises StorageIntegrityError once everything has run, carrying the result.

One process, one node: multi-rank runs and pytest wiring live above this package.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from clusterbench.model import Location, Measurement
from clusterbench.probes.storage.checkpoint import LOAD_METRIC, SAVE_METRIC, CheckpointPlan, measure_checkpoint
from clusterbench.probes.storage.distributed_checkpoint import CheckpointGroup, measure_distributed_checkpoint
from clusterbench.probes.storage.errors import (
    FioUnavailable,
    StorageIntegrityError,
    StorageRunError,
    StorageTargetError,
)
from clusterbench.probes.storage.figures import AfterWrite, IOFigures, to_measurements
from clusterbench.probes.storage.filesystem import TargetFacts, probe_target
from clusterbench.probes.storage.fio_engine import FioEngine
from clusterbench.probes.storage.metadata import METRIC as METADATA_METRIC
from clusterbench.probes.storage.metadata import MetadataPlan, measure_metadata
from clusterbench.probes.storage.python_engine import run_python, thread_limit
from clusterbench.probes.storage.workloads import RANDREAD_LATENCY_METRIC, Workload, standard_workloads
from clusterbench.probes.storage.workspace import CleanupReport, Workspace, space_needed
from clusterbench.progress import StepCallback
from clusterbench.registry import declare_probe, metric

# What a storage figure is measured on and how; a profile narrows its expectations by them.
# `ranks` appears on the aggregate of several ranks only; an expectation naming it judges that.
PARAMS = ("target", "engine", "direct", "block_size", "iodepth", "numjobs", "bytes", "files", "threads", "ranks")
# (metric, unit, better, description, how the figures of ranks measuring at once combine)
FIGURES = (
    ("storage.randread_iops", "IOPS", "higher", "4 KiB random read IOPS", "sum"),
    ("storage.randwrite_iops", "IOPS", "higher", "4 KiB random write IOPS", "sum"),
    ("storage.seqread_gbps", "GB/s", "higher", "1 MiB sequential read bandwidth", "sum"),
    ("storage.seqwrite_gbps", "GB/s", "higher", "1 MiB sequential write bandwidth", "sum"),
    ("storage.randread_p99_us", "us", "lower", "4 KiB random read p99 latency", "max"),
    ("storage.metadata_ops", "ops/s", "higher", "small-file create+stat+delete rate", "sum"),
    ("checkpoint.save_gbps", "GB/s", "higher", "checkpoint save throughput incl. fsync", "n_min"),
    ("checkpoint.load_gbps", "GB/s", "higher", "checkpoint load throughput", "n_min"),
)
PROBE = declare_probe("storage", per="rank", settings=("[storage]",), module=__name__, metrics=[
    metric(name, unit, better, "storage", description, PARAMS, aggregate=rule)
    for name, unit, better, description, rule in FIGURES
])

__all__ = [
    "CheckpointGroup",
    "CheckpointPlan",
    "CleanupReport",
    "FioEngine",
    "FioUnavailable",
    "MetadataPlan",
    "StorageIntegrityError",
    "StorageResult",
    "StorageRunError",
    "StorageTargetError",
    "TargetFacts",
    "Workload",
    "WorkloadFailure",
    "Workspace",
    "measure_checkpoint",
    "measure_metadata",
    "measure_storage",
    "measure_workload",
    "probe_target",
    "standard_workloads",
]

EngineChoice = Literal["auto", "fio", "python"]
CACHE_DEFEATING_FACTOR = 2  # buffered reads over twice RAM mostly miss the page cache


@dataclass(frozen=True)
class WorkloadFailure:
    """A workload that did not produce its figures, and why, in one line."""

    workload: str
    metrics: tuple[str, ...]
    message: str
    integrity: bool  # data read back wrong (a failure of the storage, not of the measurement)


@dataclass
class StorageResult:
    target: str
    engine: str  # what ran the I/O workloads: "fio" or "python"
    engine_reason: str
    direct: bool  # whether the I/O workloads bypassed the page cache
    filesystem: str
    measurements: list[Measurement] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)  # each visible fallback taken, one line
    failures: list[WorkloadFailure] = field(default_factory=list)
    cleanup: CleanupReport | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "engine": self.engine,
            "engine_reason": self.engine_reason,
            "direct": self.direct,
            "filesystem": self.filesystem,
            "measurements": [m.to_json() for m in self.measurements],
            "fallbacks": list(self.fallbacks),
            "failures": [vars(f) | {"metrics": list(f.metrics)} for f in self.failures],
            "cleanup": vars(self.cleanup) if self.cleanup else None,
            "seconds": self.seconds,
        }


def default_location() -> Location:
    return Location(socket.gethostname(), 0, "node")  # a storage figure belongs to the host


def measure_workload(
    workload: Workload,
    workspace: Workspace,
    facts: TargetFacts,
    *,
    fio: FioEngine | None,
    location: Location,
    after_write: AfterWrite | None = None,
) -> list[Measurement]:
    """One I/O workload with fio (or, with `fio=None`, its synchronous form in the Python engine),
    direct I/O where the target allows it. `after_write` sees the data files before verification."""
    workload = replace(workload, direct=workload.direct and facts.direct)
    figures: IOFigures
    if fio is not None:
        figures = fio.run(workload, workspace, after_write=after_write)
    else:
        figures = run_python(workload.synchronous(thread_limit()), workspace, after_write=after_write)
    return to_measurements(figures, facts, location)


def _cache_defeating(workload: Workload, facts: TargetFacts, room: int) -> Workload:
    """A buffered read workload grown to twice RAM, or as near as `room` allows; the caveat in its
    figures says whether the page cache could still have served it."""
    grown = min(CACHE_DEFEATING_FACTOR * facts.memory_bytes, room)
    if workload.is_write or grown <= workload.footprint:
        return workload
    return replace(workload, size_per_job=grown // workload.numjobs // workload.block_size * workload.block_size)


def _choose_engine(engine: EngineChoice) -> tuple[FioEngine | None, str, list[str]]:
    if engine == "python":
        return None, "the Python engine was requested", []
    try:
        fio = FioEngine.find()
    except FioUnavailable as exc:
        if engine == "fio":
            raise
        return None, str(exc), [f"fio unavailable ({exc}): the Python engine measured the I/O workloads"]
    return fio, f"{fio.version} at {fio.binary}", []


def measure_storage(
    target: Path,
    *,
    quick: bool = True,
    engine: EngineChoice = "auto",
    location: Location | None = None,
    working_size: int | None = None,
    workloads: tuple[Workload, ...] | None = None,
    metadata: MetadataPlan | None = None,
    checkpoint: CheckpointPlan | None = None,
    checkpoint_group: CheckpointGroup | None = None,
    on_step: StepCallback | None = None,
) -> StorageResult:
    """Every storage figure of `target` (a directory), measured in a workspace removed afterwards.

    `working_size` caps the bytes held on disk at once (files shrink to fit); the target must have
    that much free plus a margin, checked before anything is written. `workloads`, `metadata` and
    `checkpoint` replace the standard quick/full plans (tests use tiny ones). With `checkpoint_group`
    (a shared target under a launcher), the checkpoint is one sharded torch.distributed.checkpoint
    that every rank of the group writes at once, and every rank of the group must call this.
    Raises StorageTargetError (bad target), FioUnavailable (engine="fio" without fio) and, after
    everything has run, StorageIntegrityError (with `.result`) if any data read back wrong.
    `on_step(done, total, detail)`, if given, is called after each workload (progress).
    """
    began = time.perf_counter()
    location = location or default_location()
    plans = list(workloads if workloads is not None else standard_workloads(quick))
    metadata = metadata or MetadataPlan.standard(quick)
    checkpoint = checkpoint or CheckpointPlan.standard(quick, working_size)
    if working_size is not None:
        try:
            plans = [w.fitted(working_size) for w in plans]
        except ValueError as exc:
            raise StorageTargetError(f"storage target {target}: the working size is too small: {exc}") from None
    needed = max([w.footprint for w in plans] + [checkpoint.approx_bytes])
    fio, reason, fallbacks = _choose_engine(engine)

    with Workspace.create(target, needed) as workspace:
        facts = probe_target(workspace)
        result = StorageResult(facts.target, "fio" if fio else "python", reason, facts.direct, facts.filesystem,
                               fallbacks=fallbacks)
        if not facts.direct:
            result.fallbacks.append(f"{facts.direct_refused} in {facts.target}: buffered I/O, flagged "
                                    "in each I/O figure's caveat")
        for index, workload in enumerate(plans, start=1):
            if not facts.direct and not quick:  # quick runs keep their small files, flagged
                vfs = os.statvfs(workspace.path)
                free = vfs.f_bavail * vfs.f_frsize - space_needed(0)
                workload = _cache_defeating(workload, facts, min(working_size or free, free))
            metrics = (workload.metric, RANDREAD_LATENCY_METRIC) if workload.rw == "randread" else (workload.metric,)
            _attempt(result, workload.name, metrics,
                     functools.partial(measure_workload, workload, workspace, facts, fio=fio, location=location))
            if on_step is not None:
                on_step(index, len(plans), workload.name)
        _attempt(result, "metadata", (METADATA_METRIC,),
                 lambda: [measure_metadata(workspace, facts, location, metadata)])
        if checkpoint_group is None:
            _attempt(result, "checkpoint", (SAVE_METRIC, LOAD_METRIC),
                     lambda: measure_checkpoint(workspace, facts, location, checkpoint))
        else:
            _attempt(result, "checkpoint", (SAVE_METRIC, LOAD_METRIC), lambda: measure_distributed_checkpoint(
                workspace, facts, location, checkpoint, checkpoint_group))
    result.cleanup = workspace.cleanup_report
    result.seconds = time.perf_counter() - began
    corrupt = [f for f in result.failures if f.integrity]
    if corrupt:
        raise StorageIntegrityError("; ".join(f.message for f in corrupt), result=result)
    return result


def _attempt(result: StorageResult, name: str, metrics: tuple[str, ...],
             measure: Callable[[], list[Measurement]]) -> None:
    """Run one workload; a failure is recorded and the next workload still runs."""
    try:
        result.measurements.extend(measure())
    except StorageIntegrityError as exc:
        result.failures.append(WorkloadFailure(name, metrics, str(exc), integrity=True))
    except StorageRunError as exc:
        result.failures.append(WorkloadFailure(name, metrics, str(exc), integrity=False))
