"""What one acceptance test gathered on one rank, as it travels to rank 0 and is kept there."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from clusterbench.distributed import Decision
from clusterbench.judge import Scope
from clusterbench.model import Check, Location, Measurement

# Run on rank 0 when a test settles, with what each rank shared: {rank: data}. Returns more checks.
SharedJudge = Callable[[dict[int, Any]], list[Check]]
# Checks an item makes of the whole run when it settles (the coverage and regression items).
RunChecks = Callable[[], list[Check]]
# Run on rank 0 when a test settles, with every rank's figures of the test. Returns more checks.
FiguresJudge = Callable[[list[Measurement]], list[Check]]


@dataclass
class Attempt:
    """One location's result: what it measured (a probe may return several figures, e.g. one per
    message size), or the reason there is nothing."""

    location: Location
    measurements: list[Measurement]
    reason: str = ""
    crashed: bool = False
    aggregate: bool = False  # the job's figure combined from the ranks (made on rank 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "location": asdict(self.location),
            "measurements": [m.to_json() for m in self.measurements],
            "reason": self.reason,
            "crashed": self.crashed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attempt:
        measurements = [Measurement.from_json(m) for m in data["measurements"]]
        return cls(Location(**data["location"]), measurements, data["reason"], data["crashed"])


@dataclass
class TestRecord:
    """What one rank measured in one test, and (after settling) the verdict all ranks agreed."""

    nodeid: str
    scope: Scope | None = None
    compare_peers: bool = False
    must_be_zero: bool = False
    aggregate: bool = False
    attempts: list[Attempt] = field(default_factory=list)
    shared: Any = None  # JSON data this rank sends rank 0 (e.g. its node inventory)
    shared_judge: SharedJudge | None = None
    figures_judge: FiguresJudge | None = None
    # An item that judges the run as a whole brings its own checks, instead of attempts.
    run_checks: RunChecks | None = None
    # With nothing judged (every check NOT MEASURED), a skip that says why, never a pass: the
    # regression item on a history too young to compare with.
    skip_when_unjudged: bool = False
    # When nothing is judged: PASS rather than NO EXPECTATION (the coverage item of a profile
    # that states expectations and saw every required one measured).
    passes_unjudged: bool = False
    decision: Decision | None = None
    # Filled on rank 0 when the test settles: every rank's figures and the checks made on them.
    all_measurements: list[Measurement] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def payload(self, outcome: str, message: str) -> dict[str, Any]:
        return {
            "outcome": outcome,
            "message": message,
            "attempts": [a.to_json() for a in self.attempts],
            "shared": self.shared,
        }
