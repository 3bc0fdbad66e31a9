"""Small-file metadata rate: create, stat and delete N empty files, as mdtest-easy does.

One thread in one directory, no fsync (mdtest's default): the figure is what a data loader opening
many small files, or a job writing many small outputs, sees from this process. Each round times its
three phases separately; the headline is the median over rounds of all operations / their total time.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

from clusterbench.metrics import METRICS
from clusterbench.model import Location, Measurement
from clusterbench.probes.stats import summarize
from clusterbench.probes.storage.errors import StorageRunError
from clusterbench.probes.storage.filesystem import TargetFacts
from clusterbench.probes.storage.workspace import Workspace

METRIC = "storage.metadata_ops"
PHASES = ("create", "stat", "delete")


@dataclass(frozen=True)
class MetadataPlan:
    files: int  # per round
    rounds: int

    @classmethod
    def standard(cls, quick: bool) -> MetadataPlan:
        return cls(files=1000, rounds=3) if quick else cls(files=10000, rounds=5)


def _round(workspace: Workspace, names: list[str]) -> dict[str, float]:
    """Seconds each phase took for `names`."""
    directory = workspace.dir_fd
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
    for name in names:
        workspace.file(name)  # claimed before the clock starts: the ledger is not what we time
    start = time.perf_counter()
    for name in names:
        os.close(os.open(name, flags, 0o600, dir_fd=directory))
    created = time.perf_counter()
    for name in names:
        os.stat(name, dir_fd=directory, follow_symlinks=False)
    statted = time.perf_counter()
    for name in names:
        workspace.remove(name)
    deleted = time.perf_counter()
    return {"create": created - start, "stat": statted - created, "delete": deleted - statted}


def measure_metadata(workspace: Workspace, facts: TargetFacts, location: Location, plan: MetadataPlan) -> Measurement:
    per_round: list[dict[str, float]] = []
    for round_index in range(plan.rounds):
        names = [f"md-{round_index}-{i:07d}" for i in range(plan.files)]
        try:
            per_round.append(_round(workspace, names))
        except OSError as exc:
            raise StorageRunError(
                f"metadata rate in {workspace.path}: {exc.strerror} while creating, stating and "
                f"deleting {plan.files} empty files"
            ) from None
    totals = [len(PHASES) * plan.files / sum(phases.values()) for phases in per_round]
    phases = {
        phase: {"ops_per_s": statistics.median(plan.files / r[phase] for r in per_round),
                "samples": [plan.files / r[phase] for r in per_round]}
        for phase in PHASES
    }
    return Measurement(
        METRIC,
        statistics.median(totals),
        METRICS[METRIC].unit,
        {"target": facts.target, "engine": "python", "threads": 1, "files": plan.files},
        location,
        samples=totals,
        details={
            "phases": phases,
            "rounds": plan.rounds,
            "file_size": 0,
            "fsync": False,
            "filesystem": facts.filesystem,
            "sample_summary": summarize(totals).to_json(),
            "caveat": f"{facts.filesystem} keeps files in RAM: this rate is memory's" if facts.memory_backed else None,
        },
    )
