"""What one run produced: run metadata, measurements, checks and test outcomes, kept in order."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from clusterbench.model import Check, Measurement, Verdict

SCHEMA_VERSION = "clusterbench.results/1"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunInfo:
    """Where, when and with what a run happened; written under `run` in results.json."""

    cluster: str
    profile: dict[str, Any]  # path, sha256 and text of each profile file, or how `local` was derived
    hosts: list[str]
    world_size: int
    launcher: str
    backend: str | None  # the torch.distributed backend, None in a world of one
    started_at: str
    command_line: list[str]
    versions: dict[str, str | None]
    devices: list[dict[str, Any]]
    quick: bool
    finished_at: str | None = None
    interrupted: str | None = None  # why the run stopped before its end, if it did
    inventory: dict[str, Any] = field(default_factory=dict)  # per host: what the node is (health tests)


@dataclass
class TestOutcome:
    """The verdict of one acceptance test, as shown in every report."""

    nodeid: str
    verdict: str  # a Verdict value, "NO EXPECTATION" when it measured but nothing judged it, or "ERROR"
    outcome: str  # the pytest outcome: passed, failed or skipped
    message: str = ""


NO_EXPECTATION = "NO EXPECTATION"


@dataclass
class RunResults:
    run: RunInfo
    measurements: list[Measurement] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    tests: list[TestOutcome] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """FAIL when any check fails or a required figure is missing; otherwise the worst verdict."""
        if self.run.interrupted or any(t.outcome == "failed" for t in self.tests) or any(c.blocking for c in self.checks):
            return Verdict.FAIL.value
        worst = Verdict.worst([c.verdict for c in self.checks if c.verdict is not Verdict.NOT_MEASURED])
        if worst is None:
            return NO_EXPECTATION if self.measurements else Verdict.NOT_MEASURED.value
        return worst.value

    def counts(self) -> dict[str, int]:
        counts = {v.value: 0 for v in Verdict}
        for check in self.checks:
            counts[check.verdict.value] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "run": asdict(self.run),
            "verdict": self.verdict,
            "counts": self.counts(),
            "tests": [asdict(t) for t in self.tests],
            "measurements": [m.to_json() for m in self.measurements],
            "checks": [c.to_json() for c in self.checks],
        }
