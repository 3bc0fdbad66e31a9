"""Test support for the history tests: results.json contents built in memory, shaped exactly as
RunResults.to_json() writes them, so the store and the comparison see what a real run gives."""

from __future__ import annotations

import datetime as dt
import random

from clusterbench.model import Location, Measurement
from clusterbench.results import RunInfo, RunResults

CPU_DEVICE = {"torch_device": "cpu", "kind": "cpu", "index": 0, "name": "Test CPU", "memory_bytes": 16 * 2**30,
              "compute_capability": None, "count_cores": 2}


def run_info(started_at: str, *, cluster: str = "test-cluster", quick: bool = True,
             devices: list | None = None) -> RunInfo:
    return RunInfo(
        cluster=cluster, profile={"name": cluster, "files": []}, hosts=["node1"], world_size=1, launcher="none",
        backend=None, started_at=started_at, command_line=["pytest"], versions={"clusterbench": "0.1.0"},
        devices=devices if devices is not None else [dict(CPU_DEVICE)], quick=quick, finished_at=started_at,
    )


def measurement(metric: str, value: float, params: dict | None = None, *, unit: str = "GB/s", rank: int = 0,
                samples: list[float] | None = None) -> Measurement:
    return Measurement(metric, value, unit, params or {}, Location("node1", rank, "cpu"),
                       samples=samples if samples is not None else [value])


def results(measurements: list[Measurement], *, day: int = 1, cluster: str = "test-cluster", quick: bool = True,
            devices: list | None = None) -> RunResults:
    started = (dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=day)).isoformat(timespec="seconds")
    return RunResults(run=run_info(started, cluster=cluster, quick=quick, devices=devices), measurements=measurements)


def many_measurements(count: int, seed: int = 0, scale: float = 1.0) -> list[Measurement]:
    """`count` figures of one run: an allreduce sweep over `count` sizes, each with 5 raw samples."""
    rng = random.Random(seed)
    out = []
    for size in range(count):
        value = scale * (100.0 + size % 50) * rng.uniform(0.98, 1.02)
        samples = [value * rng.uniform(0.97, 1.03) for _ in range(5)]
        out.append(measurement("allreduce.busbw_gbps", value, {"size_bytes": 1024 * (size + 1), "ranks": 8,
                                                               "dtype": "fp32", "backend": "nccl"}, samples=samples))
    return out

