"""The state of one acceptance run, and the handle each acceptance test measures and judges through.

An acceptance test names what it measures (a `Scope`) and how to measure it at each location; this
module runs the probe, keeps every figure, asks the judge for verdicts against the profile and turns
the worst verdict into the test's pytest outcome.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import pytest

from clusterbench.judge import Scope, judge_measurement, judge_peers, not_measured
from clusterbench.metrics import METRICS
from clusterbench.model import Check, Expectation, Location, Measurement, NotMeasured, Verdict
from clusterbench.profile import Profile
from clusterbench.reports.results_json import write_results_json
from clusterbench.results import NO_EXPECTATION, RunInfo, RunResults, TestOutcome, utc_now
from clusterbench.runinfo import describe_profile, host_versions

if TYPE_CHECKING:
    from clusterbench.probes.devices import LocalDevice

log = logging.getLogger("clusterbench")

MeasureFn = Callable[[], Measurement]


@dataclass
class TestRecord:
    """What one test measured and concluded, until its outcome is known."""

    nodeid: str
    measurements: list[Measurement] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def verdict_for(self, outcome: str) -> str:
        worst = Verdict.worst([c.verdict for c in self.checks])
        if outcome == "skipped":
            return Verdict.NOT_MEASURED.value
        if outcome == "failed":
            return worst.value if worst in (Verdict.FAIL, Verdict.NOT_MEASURED) else Verdict.FAIL.value
        if worst is None:
            return NO_EXPECTATION if self.measurements else Verdict.PASS.value
        # A passed test may still hold optional NOT MEASURED checks; its verdict is its worst judgement.
        judged = [c.verdict for c in self.checks if c.verdict is not Verdict.NOT_MEASURED]
        return (Verdict.worst(judged) or Verdict.PASS).value


@dataclass
class AcceptanceRun:
    """Session-wide state: the profile, everything measured so far, and where reports go."""

    profile: Profile
    results: RunResults
    report_dir: Path
    quick: bool
    # True when -m/-k/explicit paths narrowed the suite: expectations outside it are then reported
    # as not measured without failing the run, because nobody asked for them this time.
    narrowed: bool
    devices: list[LocalDevice] = field(default_factory=list)
    host: str = field(default_factory=socket.gethostname)
    accounted: set[int] = field(default_factory=set)  # indexes of profile expectations a test covered
    records: dict[str, TestRecord] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)

    @classmethod
    def start(cls, *, profile: Profile, report_dir: Path, quick: bool, narrowed: bool, command_line: list[str]) -> "AcceptanceRun":
        from clusterbench.probes.devices import local_devices  # imports torch: only when a run starts

        host = socket.gethostname()
        devices = local_devices()
        info = RunInfo(
            cluster=profile.cluster.name,
            profile=describe_profile(profile),
            hosts=[host],
            world_size=1,
            launcher="local",
            started_at=utc_now(),
            command_line=command_line,
            versions=host_versions(),
            devices=[asdict(d) for d in devices],
            quick=quick,
        )
        return cls(profile=profile, results=RunResults(run=info), report_dir=report_dir, quick=quick, narrowed=narrowed, devices=devices, host=host)

    def test_record(self, nodeid: str) -> TestRecord:
        return self.records.setdefault(nodeid, TestRecord(nodeid))

    def record(self, nodeid: str, measurements: list[Measurement], checks: list[Check]) -> None:
        record = self.test_record(nodeid)
        for check in checks:
            check.test = nodeid
        record.measurements.extend(measurements)
        record.checks.extend(checks)
        self.results.measurements.extend(measurements)
        self.results.checks.extend(checks)

    def claim_expectations(self, scope: Scope) -> list[Expectation]:
        """The profile's expectations within `scope`, marked as covered by the calling test."""
        claimed = []
        for index, expectation in enumerate(self.profile.expectations):
            if expectation in self.profile.expectations_for(scope.metric, scope.params):
                self.accounted.add(index)
                claimed.append(expectation)
        return claimed

    def unaccounted_expectations(self) -> list[Expectation]:
        return [e for i, e in enumerate(self.profile.expectations) if i not in self.accounted]

    def finish_test(self, outcome: TestOutcome) -> None:
        self.results.tests.append(outcome)
        self._write()  # after every test, so a crash later loses nothing already measured

    def finish(self) -> None:
        self.results.run.finished_at = utc_now()
        self._write()

    def _write(self) -> None:
        path = write_results_json(self.results, self.report_dir)
        if path not in self.written:
            self.written.append(path)


def _failure_line(check: Check) -> str:
    where = f" on {check.location.host}/{check.location.device}" if check.location else ""
    return f"{check.verdict.value} {Scope(check.metric, check.params).label()}{where}: {check.message}"


class AcceptanceTest:
    """The `acceptance` fixture: measure at each location, judge, and end the test accordingly."""

    def __init__(self, run: AcceptanceRun, item: pytest.Item):
        self.run = run
        self.item = item

    @property
    def quick(self) -> bool:
        return self.run.quick

    @property
    def profile(self) -> Profile:
        return self.run.profile

    @property
    def devices(self) -> list[LocalDevice]:
        return self.run.devices

    def location(self, device: str) -> Location:
        return Location(host=self.run.host, rank=0, device=device)

    def measure(
        self, scope: Scope, attempts: Iterable[tuple[Location, MeasureFn]], *, compare_peers: bool = False
    ) -> list[Measurement]:
        """Run each attempt, judge what it measured against the profile, and end the test.

        Returns the measurements when the test passes (possibly with WARN); fails the test when any
        check fails, a probe crashed, or a required figure could not be measured; skips it, with
        the reason, when nothing could be measured and nothing required it.
        """
        measured: list[tuple[Location, Measurement | None, str]] = []
        crashes: list[str] = []
        for location, measure_fn in attempts:
            try:
                measurement = measure_fn()
            except NotMeasured as exc:
                measured.append((location, None, str(exc)))
                continue
            except Exception as exc:  # a probe bug or a device fault: keep going, fail the test
                log.exception("probe %s crashed on %s", scope.label(), location.device)
                reason = f"probe crashed: {type(exc).__name__}: {exc}"
                crashes.append(f"{scope.label()} on {location.host}/{location.device}: {reason}")
                measured.append((location, None, reason))
                continue
            measured.append((location, measurement, ""))

        measurements = [m for _, m, _ in measured if m is not None]
        checks = self._judge(scope, measured)
        if compare_peers:
            checks += judge_peers(measurements, self.profile.settings.outlier_tolerance, METRICS[scope.metric].better)
        self.run.record(self.item.nodeid, measurements, checks)

        failures = crashes + [_failure_line(c) for c in checks if c.blocking]
        if failures:
            pytest.fail("\n".join(failures), pytrace=False)
        if not measurements:
            reasons = sorted({reason for _, _, reason in measured})
            pytest.skip(f"NOT MEASURED {scope.label()}: {'; '.join(reasons) or 'nothing to measure'}")
        return measurements

    def _judge(self, scope: Scope, measured: list[tuple[Location, Measurement | None, str]]) -> list[Check]:
        checks: list[Check] = []
        for expectation in self.run.claim_expectations(scope):
            for location, measurement, reason in measured:
                if measurement is None:
                    checks.append(not_measured(expectation, scope, reason, location))
                elif expectation.matches(measurement.metric, measurement.params):
                    checks.append(judge_measurement(expectation, measurement))
                else:
                    detail = f"measured with {measurement.params}, which does not match {dict(expectation.params)}"
                    checks.append(not_measured(expectation, scope, detail, location))
        return checks


class CoverageFailure(Exception):
    pass


class CoverageItem(pytest.Item):
    """A final check that every required expectation of the profile was measured by some test.

    Without it, an expectation on a metric that no test measures (or a typo'd param value) would
    silently never be judged, and the run would pass without the figure it exists to prove.
    """

    def __init__(self, *, run: AcceptanceRun, **kwargs):
        super().__init__(**kwargs)
        self.run = run

    def runtest(self) -> None:
        checks = []
        for expectation in self.run.unaccounted_expectations():
            family = METRICS[expectation.metric].family
            if self.run.narrowed:
                reason = f"outside this run's selection ({family} tests were narrowed by -m/-k or paths)"
            else:
                reason = f"no test in this run measures {Scope(expectation.metric, dict(expectation.params)).label()}"
            checks.append(
                not_measured(expectation, Scope(expectation.metric, {}), reason, None, blocking=not self.run.narrowed)
            )
        self.run.record(self.nodeid, [], checks)
        blocking = [_failure_line(c) for c in checks if c.blocking]
        if blocking:
            raise CoverageFailure("\n".join(blocking))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, CoverageFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, "every required expectation of the profile was measured"

