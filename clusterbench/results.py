"""What one run produced: run metadata, measurements, checks and test outcomes, kept in order."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from clusterbench.metrics import METRICS
from clusterbench.model import PROFILE_PROVENANCES, Check, Measurement, Provenance, Verdict

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
    # Rank 0's NCCL_*, CUDA_*, SLURM_*... variables, for reproducing the run; secret-looking values redacted.
    environment: dict[str, str] = field(default_factory=dict)
    # The run's ID (time-sortable, unique): its key in the run history and in calibrated profiles.
    run_id: str = ""
    # Ranks clusterbench started on this host itself (collectives, training) in a world of one
    # process: the world size says 1 while the collectives ran on these. None when it started none.
    local_ranks: int | None = None


@dataclass
class TestOutcome:
    """The verdict of one acceptance test, as shown in every report."""

    nodeid: str
    verdict: str  # a Verdict value, "NO EXPECTATION" when it measured but nothing judged it, or "ERROR"
    outcome: str  # the pytest outcome: passed, failed or skipped
    message: str = ""


NO_EXPECTATION = "NO EXPECTATION"
# What would let a run judge its performance figures, for the verdict's note.
HOW_TO_JUDGE = (
    "a profile with [[expect]] entries (--cluster=NAME), a baseline from a known-good run"
    " (--history FILE --calibrate), or an accelerator the hardware table knows"
)
# Where a performance figure's expected value comes from: the profile, or the cluster's own history.
PERFORMANCE_PROVENANCES = frozenset(p.value for p in (*PROFILE_PROVENANCES, Provenance.HISTORY))


def judges_performance(check: Check) -> bool:
    """True for a check of a measured performance figure against an expected one (a profile's target
    or the run history). Not: the correctness rules (#wrong = 0), peers (eight equally slow GPUs
    agree with each other), health and inventory, node accounting, a history summary line."""
    spec = METRICS.get(check.metric)
    return (
        check.provenance in PERFORMANCE_PROVENANCES
        and check.observed is not None
        and spec is not None
        and spec.family != "health"
        and spec.unit != "count"
    )


# The order tests are counted in everywhere (pytest's own words, then clusterbench's).
TEST_LABELS = ("passed", "warn", "no expectation", "failed", "skipped")


def outcome_label(outcome: str, verdict: str | None) -> str:
    """How a test is counted wherever tests are counted (pytest's terminal line, the report's
    banner): a passed test that warned is 'warn', one that measured with nothing to judge it
    against is 'no expectation'; any other test counts as its pytest outcome."""
    if outcome == "passed" and verdict == Verdict.WARN.value:
        return "warn"
    if outcome == "passed" and verdict == NO_EXPECTATION:
        return "no expectation"
    return outcome


@dataclass
class TrendPoint:
    """One stored run's figure for a trended metric."""

    run_id: str
    started_at: str
    value: float


@dataclass
class Trend:
    """A key metric's history over the comparison window, with this run's figure: what the HTML
    report plots. Filled by the history comparison; empty when no history was given."""

    metric: str
    params: dict[str, Any]
    unit: str
    better: str  # "higher" or "lower"
    points: list[TrendPoint]
    current: float | None


# The lists of records in results.json, in the file's order. A run only ever appends to them.
RECORD_LISTS = ("tests", "measurements", "checks", "trends")


def record_json(record: Any) -> dict[str, Any]:
    """One element of a record list as JSON: Measurement and Check encode themselves (fast, by hand)."""
    return record.to_json() if hasattr(record, "to_json") else asdict(record)


@dataclass
class RunResults:
    run: RunInfo
    measurements: list[Measurement] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    tests: list[TestOutcome] = field(default_factory=list)
    trends: list[Trend] = field(default_factory=list)

    @property
    def performance_judged(self) -> int:
        """How many checks judged a performance figure against an expected one (judges_performance)."""
        return sum(1 for c in self.checks if judges_performance(c))

    @property
    def verdict(self) -> str:
        """FAIL when any check fails or a required figure is missing; otherwise the worst verdict,
        except that a run which judged no performance figure never says PASS: on a CPU or an
        accelerator the table does not know, passing the correctness rules alone is NO EXPECTATION."""
        if (self.run.interrupted or any(t.outcome == "failed" for t in self.tests)
                or any(c.blocking for c in self.checks)):
            return Verdict.FAIL.value
        worst = Verdict.worst([c.verdict for c in self.checks if c.verdict is not Verdict.NOT_MEASURED])
        if worst is None:
            return NO_EXPECTATION if self.measurements else Verdict.NOT_MEASURED.value
        if worst is Verdict.PASS and not self.performance_judged:
            return NO_EXPECTATION
        return worst.value

    def verdict_note(self) -> str:
        """One line under the verdict: what it rests on, and (when it judged no performance figure)
        what would make it judge. Empty when performance figures were judged and nothing needs saying."""
        judged = self.performance_judged
        if judged:
            return f"{judged} performance figure{'s' if judged != 1 else ''} judged against expected figures"
        rules = [c for c in self.checks if c.verdict is not Verdict.NOT_MEASURED]
        plural = "s" if len(rules) != 1 else ""
        rested = f"only {len(rules)} check{plural} of correctness rules, peers or health judged; " if rules else ""
        profile = self.run.profile
        why = "; ".join(str(n) for n in profile.get("notes", []) if n) if isinstance(profile, dict) else ""
        return f"{rested}no performance figure judged{f' ({why})' if why else ''}: to judge, give {HOW_TO_JUDGE}"

    def counts(self) -> dict[str, int]:
        """Checks by verdict."""
        counts = {v.value: 0 for v in Verdict}
        for check in self.checks:
            counts[check.verdict.value] += 1
        return counts

    def test_counts(self) -> dict[str, int]:
        """Tests by how pytest's terminal line counts them (outcome_label), in TEST_LABELS order,
        labels with no test left out: the same numbers as pytest's last line, in every report."""
        counts = {label: 0 for label in TEST_LABELS}
        for test in self.tests:
            label = outcome_label(test.outcome, test.verdict)
            counts[label] = counts.get(label, 0) + 1
        return {label: n for label, n in counts.items() if n}

    def header_json(self) -> dict[str, Any]:
        """Everything but the record lists: small, and recomputed whenever the file is written."""
        return {
            "schema": SCHEMA_VERSION, "run": asdict(self.run), "verdict": self.verdict,
            "verdict_note": self.verdict_note(),
            "counts": self.counts(), "test_counts": self.test_counts(),
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.header_json(), **{key: [record_json(r) for r in getattr(self, key)] for key in RECORD_LISTS}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResults:
        """The inverse of to_json, to re-render reports from a results.json. Raises KeyError,
        TypeError or ValueError on a document that is not one; `verdict` and `counts` are derived
        again from the checks rather than trusted. Keys this version does not know are ignored, so a
        newer results.json still renders."""
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"schema is {data.get('schema')!r}, expected {SCHEMA_VERSION!r}")
        trends = [
            Trend(**{**_known(Trend, t), "points": [TrendPoint(**_known(TrendPoint, p)) for p in t["points"]]})
            for t in data.get("trends", [])
        ]
        return cls(
            run=RunInfo(**_known(RunInfo, data["run"])),
            measurements=[Measurement.from_json(m) for m in data["measurements"]],
            checks=[Check.from_json(c) for c in data["checks"]],
            tests=[TestOutcome(**_known(TestOutcome, t)) for t in data.get("tests", [])],
            trends=trends,
        )


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of `data` that are fields of the dataclass `cls`."""
    if not isinstance(data, dict):
        raise TypeError(f"expected an object for {cls.__name__}, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
