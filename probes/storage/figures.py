"""One workload's raw figures from either engine, and how they become Measurements.

Both engines report the same quantities with the same math, fio's: IOPS = I/Os completed / measured
time, bandwidth = bytes / measured time (GB/s = 1e9 B/s), latency = completion latency percentiles.
The headline value is that whole-run figure, exactly what fio prints; `samples` are the same figure
per half-second interval of the run (fio's IOPS log, the Python engine's own counts), so the spread
within a run is visible. Every figure carries whether it bypassed the page cache; one that may not
have says so in `details["caveat"]`, so a page-cache figure is never read as a disk figure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterbench.metrics import METRICS
from clusterbench.model import Location, Measurement, ParamValue
from clusterbench.probes.stats import summarize
from clusterbench.probes.storage.filesystem import TargetFacts
from clusterbench.probes.storage.workloads import RANDREAD_LATENCY_METRIC, Workload
from clusterbench.probes.storage.workspace import human_bytes

INTERVAL_S = 0.5  # fio's default averaging window for its IOPS samples
# Called with a write workload's data files after writing and before verifying (tests corrupt data).
AfterWrite = Callable[[Sequence[Path]], None]


@dataclass(frozen=True)
class IOFigures:
    workload: Workload  # as run: the direct flag, sizes and iodepth actually used
    engine: str  # "fio" or "python"
    ioengine: str  # fio's ioengine, or "python-threads"
    iops: float
    bandwidth_bps: float  # bytes per second
    total_ios: int
    seconds: float  # measured time (ramp and layout excluded)
    interval_iops: list[float]  # IOPS in each complete INTERVAL_S window
    latency_ns: dict[str, float]  # completion latency: "mean", "p50", "p99", "p99.9"
    verified_bytes: int | None  # writes: bytes read back and found intact; None for reads
    command: str | None = None  # the exact fio command line, to rerun by hand


def page_cache_caveat(workload: Workload, facts: TargetFacts) -> tuple[bool, str | None]:
    """(page cache may have served this figure, the sentence saying so), from what ran where."""
    notes: list[str] = []
    possible = False
    if facts.memory_backed:
        possible = True
        notes.append(f"{facts.filesystem} keeps files in RAM: this figure measures memory, not a disk")
    if not workload.direct:
        notes.append(f"buffered I/O because {facts.direct_refused}")
        if workload.is_write:
            notes.append("writes were flushed with fsync before the clock stopped")
        elif workload.footprint <= facts.memory_bytes:
            possible = True
            notes.append(
                f"the {human_bytes(workload.footprint)} read set fits in {human_bytes(facts.memory_bytes)} of RAM, "
                "so the page cache may have served it: not a disk figure"
            )
        else:
            notes.append(f"the read set exceeds RAM ({human_bytes(facts.memory_bytes)}), so "
                         "most reads reached the device")
    return possible, "; ".join(notes) or None


def to_measurements(figures: IOFigures, facts: TargetFacts, location: Location) -> list[Measurement]:
    """The workload's headline Measurement, plus p99 latency for 4 KiB random reads."""
    workload = figures.workload
    params: dict[str, ParamValue] = {
        "target": facts.target,
        "engine": figures.engine,
        "direct": workload.direct,
        "block_size": workload.block_size,
        "iodepth": workload.iodepth,
        "numjobs": workload.numjobs,
    }
    page_cache_possible, caveat = page_cache_caveat(workload, facts)
    details: dict[str, Any] = {
        "rw": workload.rw,
        "ioengine": figures.ioengine,
        "direct": workload.direct,
        "filesystem": facts.filesystem,
        "page_cache_possible": page_cache_possible,
        "caveat": caveat,
        "size_per_job": workload.size_per_job,
        "runtime_s": round(figures.seconds, 3),
        "ramp_s": workload.ramp_s,
        "total_ios": figures.total_ios,
        "iops": figures.iops,
        "bandwidth_gbps": figures.bandwidth_bps / 1e9,
        "latency_us": {name: ns / 1e3 for name, ns in figures.latency_ns.items()},
        "sample_interval_s": INTERVAL_S,
        "verified_bytes": figures.verified_bytes,
        "command": figures.command,
    }
    if workload.metric.endswith("_iops"):
        value, samples = figures.iops, list(figures.interval_iops)
    else:
        value = figures.bandwidth_bps / 1e9
        samples = [iops * workload.block_size / 1e9 for iops in figures.interval_iops]
    if samples:
        details["sample_summary"] = summarize(samples).to_json()
    spec = METRICS[workload.metric]
    result = [Measurement(workload.metric, value, spec.unit, dict(params), location, samples, details)]
    if workload.rw == "randread":
        latency = METRICS[RANDREAD_LATENCY_METRIC]
        result.append(
            Measurement(
                RANDREAD_LATENCY_METRIC, figures.latency_ns["p99"] / 1e3, latency.unit, dict(params), location,
                details={**details,
                         "samples_note": "one latency distribution per run; its percentiles are in latency_us"},
            )
        )
    return result
