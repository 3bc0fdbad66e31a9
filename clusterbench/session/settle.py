"""Settling a test: every rank sends what it saw to rank 0, which judges it against the profile and
the peers, records it, and decides the test's outcome for every rank. A world of one follows the
same path."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from clusterbench.distributed import Decision
from clusterbench.judge import (
    Scope,
    aggregate_ranks,
    judge_exact,
    judge_measurement,
    judge_peers,
    judged_measurements,
    not_measured,
)
from clusterbench.metrics import METRICS
from clusterbench.model import Check, Location, Verdict
from clusterbench.results import NO_EXPECTATION, TestOutcome
from clusterbench.session.context import RunContext
from clusterbench.session.recorder import ResultsRecorder
from clusterbench.session.records import Attempt, TestRecord

log = logging.getLogger("clusterbench")


def _failure_line(check: Check) -> str:
    where = f" on {check.location.host}/{check.location.device} (rank {check.location.rank})" if check.location else ""
    return f"{check.verdict.value} {Scope(check.metric, check.params).label()}{where}: {check.message}"


@dataclass
class Settler:
    context: RunContext
    recorder: ResultsRecorder
    records: dict[str, TestRecord] = field(default_factory=dict)
    accounted: set[int] = field(default_factory=set)  # indexes of profile expectations a test covered

    def record(self, nodeid: str) -> TestRecord:
        return self.records.setdefault(nodeid, TestRecord(nodeid))

    def settle(self, nodeid: str, outcome: str, message: str) -> Decision:
        """Agree the outcome of `nodeid` with every rank; rank 0 judges and records on the way."""
        record = self.record(nodeid)
        decision = self.context.exchange.settle(
            nodeid, record.payload(outcome, message), lambda payloads, missing: self._decide(record, payloads)
        )
        record.decision = decision
        if self.context.is_reporter:
            results = self.recorder.results
            results.tests.append(TestOutcome(nodeid, decision.verdict, decision.outcome, decision.message))
            self.recorder.write()  # after every test, so a crash later loses nothing already measured
        return decision

    def _decide(self, record: TestRecord, payloads: dict[int, dict[str, Any]]) -> Decision:
        attempts = [Attempt.from_json(a) for rank in sorted(payloads) for a in payloads[rank]["attempts"]]
        if record.aggregate:
            combined = aggregate_ranks([m for a in attempts for m in a.measurements])
            if combined:
                attempts.append(Attempt(combined[0].location, combined, aggregate=True))
        measurements = [m for a in attempts for m in a.measurements]
        judges: list[tuple[str, Callable[[], list[Check]]]] = [
            ("the judge", record.run_checks or partial(self._judge, record, attempts))]
        if record.shared_judge is not None:
            shared = {rank: p["shared"] for rank, p in sorted(payloads.items())}
            judges.append(("the shared judge", partial(record.shared_judge, shared)))
        if record.figures_judge is not None:
            figures = [m for a in attempts if not a.aggregate for m in a.measurements]
            judges.append(("the figures' judge", partial(record.figures_judge, figures)))
        checks: list[Check] = []
        for name, judge in judges:
            try:
                checks += judge()
            except Exception as exc:  # a rule's bug: this test fails with one line, the run goes on
                log.exception("%s of %s crashed", name, record.nodeid)
                where = Location(self.context.world.host, self.context.world.rank, "judge")
                reason = f"{name} crashed: {type(exc).__name__}: {exc}".splitlines()[0]
                attempts.append(Attempt(where, [], reason, crashed=True))
        for check in checks:
            check.test = record.nodeid
        record.all_measurements, record.checks = measurements, checks
        results = self.recorder.results
        results.measurements.extend(measurements)
        results.checks.extend(checks)
        return self._outcome(record, payloads, attempts, checks)

    def _outcome(
        self, record: TestRecord, payloads: dict[int, dict[str, Any]], attempts: list[Attempt], checks: list[Check]
    ) -> Decision:
        hosts = self.context.exchange.hosts
        problems = [
            f"rank {rank} ({hosts.get(rank, '?')}): {p['message']}"
            for rank, p in sorted(payloads.items())
            if p["outcome"] == "failed"
        ]
        problems += [f"{a.location.host}/{a.location.device} (rank {a.location.rank}): {a.reason}"
                     for a in attempts if a.crashed]
        problems += [_failure_line(c) for c in checks if c.blocking]
        if problems:
            worst = Verdict.worst([c.verdict for c in checks if c.blocking])
            return Decision("failed", (worst or Verdict.FAIL).value, "\n".join(problems))
        if record.skip_when_unjudged and checks and all(c.verdict is Verdict.NOT_MEASURED for c in checks):
            return Decision("skipped", Verdict.NOT_MEASURED.value, checks[0].message)
        skipped = [p for p in payloads.values() if p["outcome"] == "skipped"]
        if skipped and len(skipped) == len(payloads):
            return Decision("skipped", Verdict.NOT_MEASURED.value, skipped[0]["message"])
        if record.scope is not None and not any(a.measurements for a in attempts):
            reasons = sorted({a.reason for a in attempts if a.reason}) or ["nothing to measure"]
            return Decision("skipped", Verdict.NOT_MEASURED.value,
                            f"NOT MEASURED {record.scope.label()}: {'; '.join(reasons)}")
        judged = Verdict.worst([c.verdict for c in checks if c.verdict is not Verdict.NOT_MEASURED])
        if judged is None:
            covered = record.passes_unjudged and bool(self.context.profile.expectations)
            return Decision("passed", Verdict.PASS.value if covered else NO_EXPECTATION, "")
        return Decision("passed", judged.value, "")

    def _judge(self, record: TestRecord, attempts: list[Attempt]) -> list[Check]:
        """A test's figures against the profile's expectations on its metric, its peers, and zero."""
        if record.scope is None:
            return []
        scope, profile = record.scope, self.context.profile
        checks: list[Check] = []
        wanted = profile.expectations_for(scope.metric, scope.params)
        for index, expectation in enumerate(profile.expectations):
            if expectation not in wanted:
                continue
            self.accounted.add(index)
            # An expectation naming `ranks` speaks of the job's aggregate; any other, of each rank.
            wants_aggregate = record.aggregate and "ranks" in expectation.params
            for attempt in attempts:
                if attempt.aggregate != wants_aggregate:
                    continue
                if not attempt.measurements:
                    checks.append(not_measured(expectation, scope, attempt.reason, attempt.location))
                    continue
                matching = judged_measurements(expectation, attempt.measurements)
                if matching:
                    checks.extend(judge_measurement(expectation, m) for m in matching)
                else:
                    measured = sorted({str(m.params) for m in attempt.measurements})
                    detail = f"measured with {'; '.join(measured)}, none matching {dict(expectation.params)}"
                    checks.append(not_measured(expectation, scope, detail, attempt.location))
        measurements = [m for a in attempts if not a.aggregate for m in a.measurements]
        if record.compare_peers:
            checks += judge_peers(measurements, profile.settings.outlier_tolerance, METRICS[scope.metric].better)
        if record.must_be_zero:
            checks += [judge_exact(m) for m in measurements]
        return checks
