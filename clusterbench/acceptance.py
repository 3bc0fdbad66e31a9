"""The state of one acceptance run, and the handle each acceptance test measures through.

A test measures on its own rank (`AcceptanceTest.measure`). When it ends, every rank sends what it
saw to rank 0, which judges all of it against the profile and the peers, records it, and decides
the test's outcome for every rank (`AcceptanceRun.settle`). A world of one follows the same path.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import pytest

from clusterbench.distributed import Decision, Exchange
from clusterbench.history.session import (
    REGRESSION_ITEM_NAME,
    HistoryOptions,
    add_trends,
    regression_checks,
    store_and_calibrate,
)
from clusterbench.history.store import new_run_id
from clusterbench.judge import (
    Scope,
    aggregate_ranks,
    judge_cluster,
    judge_exact,
    judge_measurement,
    judge_peers,
    judged_measurements,
    not_measured,
)
from clusterbench.metrics import METRICS
from clusterbench.model import Check, Location, Measurement, NotMeasured, ProbeFailed, Verdict
from clusterbench.profile import Profile
from clusterbench.reports.results_json import RESULTS_FILENAME, GrowingResultsFile
from clusterbench.results import NO_EXPECTATION, RunInfo, RunResults, TestOutcome, utc_now
from clusterbench.runinfo import describe_profile, host_versions, recorded_environment

if TYPE_CHECKING:
    from clusterbench.collective_runs import CollectiveRuns
    from clusterbench.storage_runs import StorageRuns
    from clusterbench.training_runs import TrainingRuns
    from clusterbench.probes.devices import LocalDevice

log = logging.getLogger("clusterbench")

MeasureFn = Callable[[], "Measurement | list[Measurement]"]
# Run on rank 0 when a test settles, with what each rank shared: {rank: data}. Returns more checks.
SharedJudge = Callable[[dict[int, Any]], list[Check]]
COVERAGE_ITEM_NAME = "clusterbench-required-expectations"


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
    def from_json(cls, data: dict[str, Any]) -> "Attempt":
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


def _failure_line(check: Check) -> str:
    where = f" on {check.location.host}/{check.location.device} (rank {check.location.rank})" if check.location else ""
    return f"{check.verdict.value} {Scope(check.metric, check.params).label()}{where}: {check.message}"


@dataclass
class AcceptanceRun:
    """Session-wide state: the profile, the world, everything measured so far, and where reports go."""

    profile: Profile
    exchange: Exchange
    report_dir: Path
    quick: bool
    # True when -m/-k/explicit paths narrowed the suite: expectations outside it are then reported
    # as not measured without failing the run, because nobody asked for them this time.
    narrowed: bool
    results: RunResults
    devices: list["LocalDevice"] = field(default_factory=list)
    accounted: set[int] = field(default_factory=set)  # indexes of profile expectations a test covered
    records: dict[str, TestRecord] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    _collectives: "CollectiveRuns | None" = None
    tables: list[str] = field(default_factory=list)  # nccl-tests style tables for the summary
    write_error: str | None = None  # the last failure to write results.json, if it is still failing
    # NVML samples taken while the GEMM tests loaded the GPUs, by dtype (probes.health.LoadReport).
    gpu_load_reports: dict[str, Any] = field(default_factory=dict)
    node_health: Any = None  # clusterbench.health_checks.NodeHealth, read on first use
    storage_targets: tuple[str, ...] = ()  # --storage-target, replacing the profile's targets
    _storage: "StorageRuns | None" = None
    history: HistoryOptions = field(default_factory=HistoryOptions)  # --history, --compare, --calibrate
    history_notes: list[str] = field(default_factory=list)  # lines for the summary: stored, calibrated
    history_error: str | None = None  # storing or calibrating failed: the session exits non-zero
    _training: "TrainingRuns | None" = None
    _results_file: GrowingResultsFile | None = None  # made on first write: report_dir is known by then

    @classmethod
    def start(
        cls,
        *,
        profile: Profile,
        exchange: Exchange,
        report_dir: Path,
        quick: bool,
        narrowed: bool,
        command_line: list[str],
        storage_targets: tuple[str, ...] = (),
        history: HistoryOptions = HistoryOptions(),
    ) -> "AcceptanceRun":
        from clusterbench.probes.devices import local_devices  # imports torch: only when a run starts

        world = exchange.world
        devices = local_devices()
        if world.is_distributed and devices and devices[0].kind != "cpu":
            # Under a launcher each rank owns one accelerator, as torchrun and srun lay ranks out.
            devices = [devices[world.local_rank % len(devices)]]
        info = RunInfo(
            cluster=profile.cluster.name,
            profile=describe_profile(profile),
            hosts=sorted(set(exchange.hosts.values())),
            world_size=world.size,
            launcher=world.launcher,
            backend=exchange.backend,
            started_at=utc_now(),
            command_line=command_line,
            versions=host_versions(),
            devices=[asdict(d) for d in devices],
            quick=quick,
            environment=recorded_environment(),
        )
        info.run_id = new_run_id(info.started_at)
        return cls(
            profile=profile,
            exchange=exchange,
            report_dir=report_dir,
            quick=quick,
            narrowed=narrowed,
            results=RunResults(run=info),
            devices=devices,
            storage_targets=storage_targets,
            history=history,
        )

    @property
    def is_reporter(self) -> bool:
        """Only rank 0 prints the summary and writes reports."""
        return self.exchange.world.rank == 0

    def location(self, device: str) -> Location:
        world = self.exchange.world
        return Location(host=world.host, rank=world.rank, device=device)

    @property
    def collectives(self) -> "CollectiveRuns":
        """The collective sweeps: over the launcher's world, or over local ranks started here."""
        from clusterbench.collective_runs import CollectiveRuns, sweep_plan  # imports torch

        if self._collectives is None:
            world = self.exchange.world
            on_gpu = bool(self.devices) and self.devices[0].kind != "cpu"
            if world.is_distributed:
                backend, ranks = self.exchange.backend or "gloo", world.size
            else:
                backend = "nccl" if on_gpu else "gloo"
                ranks = len(self.devices) if on_gpu else self.profile.settings.local_ranks
                self.results.run.local_ranks = ranks  # the world is 1 process; the reports say what ran
            self._collectives = CollectiveRuns(
                distributed=world.is_distributed,
                backend=backend,
                ranks=ranks,
                plan=sweep_plan(on_gpu=on_gpu, quick=self.quick, timeout_s=self.profile.settings.collective_timeout_s),
                location=Location(host=self.exchange.hosts.get(0, world.host), rank=0, device=f"{ranks} ranks"),
                hosts=dict(self.exchange.hosts) if world.is_distributed else {r: world.host for r in range(ranks)},
            )
        return self._collectives

    @property
    def storage(self) -> "StorageRuns":
        """The storage probes over the targets of --storage-target, else of the profile's [storage]."""
        from clusterbench.storage_runs import StorageRuns

        if self._storage is None:
            settings = self.profile.storage
            if self.storage_targets:
                settings = replace(settings, targets=self.storage_targets)
            world = self.exchange.world
            hosts = dict(self.exchange.hosts) if world.is_distributed else None
            self._storage = StorageRuns(
                settings, self.quick, self.location, world.rank, hosts, self.profile.settings.collective_timeout_s
            )
        return self._storage

    @property
    def training(self) -> "TrainingRuns":
        """The training scaling run: over the launcher's world, or over local ranks started here."""
        from clusterbench.training_runs import training_runs  # imports torch

        if self._training is None:
            self._training = training_runs(self.profile, self.collectives, self.devices, self.quick)
        return self._training

    def test_record(self, nodeid: str) -> TestRecord:
        return self.records.setdefault(nodeid, TestRecord(nodeid))

    # -- settling a test across ranks -------------------------------------------------------------

    def settle(self, nodeid: str, outcome: str, message: str) -> Decision:
        """Agree the outcome of `nodeid` with every rank; rank 0 judges and records on the way."""
        record = self.test_record(nodeid)
        decision = self.exchange.settle(
            nodeid, record.payload(outcome, message), lambda payloads, missing: self._decide(record, payloads, missing)
        )
        record.decision = decision
        if self.is_reporter:
            self.results.tests.append(TestOutcome(nodeid, decision.verdict, decision.outcome, decision.message))
            self._write()  # after every test, so a crash later loses nothing already measured
        return decision

    def _decide(self, record: TestRecord, payloads: dict[int, dict[str, Any]], missing: list[int]) -> Decision:
        attempts = [Attempt.from_json(a) for rank in sorted(payloads) for a in payloads[rank]["attempts"]]
        if record.aggregate:
            combined = aggregate_ranks([m for a in attempts for m in a.measurements])
            if combined:
                attempts.append(Attempt(combined[0].location, combined, aggregate=True))
        if record.nodeid.endswith(COVERAGE_ITEM_NAME):
            checks = self._coverage_checks()
        elif record.nodeid.endswith(REGRESSION_ITEM_NAME):
            checks = regression_checks(self)
        else:
            checks = self._judge(record, attempts)
        if record.shared_judge is not None:
            checks += record.shared_judge({rank: p["shared"] for rank, p in sorted(payloads.items())})
        measurements = [m for a in attempts for m in a.measurements]
        for check in checks:
            check.test = record.nodeid
        record.all_measurements, record.checks = measurements, checks
        self.results.measurements.extend(measurements)
        self.results.checks.extend(checks)

        problems = [
            f"rank {rank} ({self.exchange.hosts.get(rank, '?')}): {p['message']}"
            for rank, p in sorted(payloads.items())
            if p["outcome"] == "failed"
        ]
        problems += [f"{a.location.host}/{a.location.device} (rank {a.location.rank}): {a.reason}" for a in attempts if a.crashed]
        problems += [_failure_line(c) for c in checks if c.blocking]
        if problems:
            worst = Verdict.worst([c.verdict for c in checks if c.blocking])
            return Decision("failed", (worst or Verdict.FAIL).value, "\n".join(problems))
        if record.nodeid.endswith(REGRESSION_ITEM_NAME) and checks and all(c.verdict is Verdict.NOT_MEASURED for c in checks):
            # Too little history: say so as a skip, never as a pass.
            return Decision("skipped", Verdict.NOT_MEASURED.value, checks[0].message)
        skipped = [p for p in payloads.values() if p["outcome"] == "skipped"]
        if skipped and len(skipped) == len(payloads):
            return Decision("skipped", Verdict.NOT_MEASURED.value, skipped[0]["message"])
        if record.scope is not None and not measurements:
            reasons = sorted({a.reason for a in attempts if a.reason}) or ["nothing to measure"]
            return Decision("skipped", Verdict.NOT_MEASURED.value, f"NOT MEASURED {record.scope.label()}: {'; '.join(reasons)}")
        judged = Verdict.worst([c.verdict for c in checks if c.verdict is not Verdict.NOT_MEASURED])
        if judged is None:
            # Nothing judged: say so, unless this is the coverage item of a profile that has
            # expectations and saw every required one measured.
            covered = record.nodeid.endswith(COVERAGE_ITEM_NAME) and bool(self.profile.expectations)
            verdict = Verdict.PASS.value if covered else NO_EXPECTATION
        else:
            verdict = judged.value
        return Decision("passed", verdict, "")

    def _judge(self, record: TestRecord, attempts: list[Attempt]) -> list[Check]:
        if record.scope is None:
            return []
        scope = record.scope
        checks: list[Check] = []
        for index, expectation in enumerate(self.profile.expectations):
            if expectation not in self.profile.expectations_for(scope.metric, scope.params):
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
            checks += judge_peers(measurements, self.profile.settings.outlier_tolerance, METRICS[scope.metric].better)
        if record.must_be_zero:
            checks += [judge_exact(m) for m in measurements]
        return checks

    def _coverage_checks(self) -> list[Check]:
        """The job against the profile's nodes and hosts (whatever -m/-k selected: a run on too few
        nodes is never the cluster's acceptance), then NOT MEASURED for every expectation no test
        covered; blocking unless the run was narrowed."""
        checks = self._cluster_checks()
        for index, expectation in enumerate(self.profile.expectations):
            if index in self.accounted:
                continue
            scope = Scope(expectation.metric, dict(expectation.params))
            family = METRICS[expectation.metric].family
            if self.narrowed:
                reason = f"outside this run's selection ({family} tests were narrowed by -m/-k or paths)"
            else:
                reason = f"no test in this run measures {scope.label()}"
            checks.append(not_measured(expectation, scope, reason, None, blocking=not self.narrowed))
        return checks

    def _cluster_checks(self) -> list[Check]:
        cluster = self.profile.cluster
        stated = f"[cluster] nodes = {cluster.nodes}" + (f', hosts = "{cluster.hosts}"' if cluster.hosts else "")
        where = f" ({self.profile.files[0].path})" if self.profile.files else ""
        return judge_cluster(cluster.nodes, cluster.host_names(), list(self.exchange.hosts.values()), stated + where)

    def finish(self) -> None:
        """Rank 0's last steps, in this order: checks that need the whole run (history), the final
        results.json, then what is derived from it (reports, the history record)."""
        self.results.run.finished_at = utc_now()
        if not self.is_reporter:
            return
        add_trends(self)  # regression checks joined self.results when the regressions item settled
        self._write(exact=True)
        self._render_reports()
        store_and_calibrate(self)

    def _write(self, exact: bool = False) -> None:
        """Write results.json; a failure (full disk, lost mount) is kept as one line, not raised,
        so the run goes on measuring and the session ends with that line and a non-zero exit.
        `exact`: encode every record afresh (the final write) instead of reusing earlier lines."""
        if self._results_file is None:
            self._results_file = GrowingResultsFile(self.report_dir)
        try:
            path = self._results_file.write(self.results, exact=exact)
        except OSError as exc:
            self.write_error = f"cannot write {self.report_dir / 'results.json'}: {exc.strerror or exc}"
            log.error("clusterbench: %s", self.write_error)
            return
        self.write_error = None
        if path not in self.written:
            self.written.append(path)

    def _render_reports(self) -> None:
        """report.html and summary.md, derived from the results.json just written (whose SHA-256
        they carry). A failure to render is one more line in write_error, hence a non-zero exit;
        results.json is never touched by it."""
        from clusterbench.reports.render import ReportError, render_reports  # imports matplotlib: only now

        results_path = None if self.write_error else self.report_dir / RESULTS_FILENAME
        try:
            paths = render_reports(self.results, self.report_dir, results_path)
        except ReportError as exc:
            log.error("clusterbench: %s", exc)
            self.write_error = "; ".join(filter(None, (self.write_error, str(exc))))
            paths = exc.written
        self.written.extend(path for path in paths if path not in self.written)


class AcceptanceTest:
    """The `acceptance` fixture: what a test measures through, on its own rank."""

    def __init__(self, run: AcceptanceRun, item: pytest.Item):
        self.run = run
        self.record = run.test_record(item.nodeid)

    @property
    def quick(self) -> bool:
        return self.run.quick

    @property
    def profile(self) -> Profile:
        return self.run.profile

    @property
    def devices(self) -> list["LocalDevice"]:
        return self.run.devices

    @property
    def is_reporter(self) -> bool:
        return self.run.is_reporter

    @property
    def collectives(self) -> "CollectiveRuns":
        return self.run.collectives

    @property
    def world(self):
        return self.run.exchange.world

    def show(self, text: str) -> None:
        """Text for the terminal summary (rank 0's only), e.g. an nccl-tests style table."""
        if self.run.is_reporter:
            self.run.tables.append(text)

    def location(self, device: str) -> Location:
        return self.run.location(device)

    def measure(
        self,
        scope: Scope,
        attempts: Iterable[tuple[Location, MeasureFn]],
        *,
        compare_peers: bool = False,
        must_be_zero: bool = False,
        aggregate: bool = False,
    ) -> list[Measurement]:
        """Run each attempt on this rank and keep what it measured, or why it could not.

        Judging happens when the test ends, on rank 0, over every rank's figures: against the
        profile, against the median of the other devices (`compare_peers`), and, for counts of
        errors such as a collective's #wrong, against zero whatever the profile says (`must_be_zero`).
        With `aggregate`, figures that several ranks measured at once are also combined into the
        job's figure (the metric's aggregate rule), judged by expectations that name `ranks`.
        """
        self.record.scope = scope
        self.record.compare_peers = compare_peers
        self.record.must_be_zero = must_be_zero
        self.record.aggregate = aggregate
        for location, measure_fn in attempts:
            try:
                result = measure_fn()
            except NotMeasured as exc:
                self.record.attempts.append(Attempt(location, [], str(exc)))
                continue
            except ProbeFailed as exc:
                self.record.attempts.append(Attempt(location, [], f"{scope.label()}: {exc}", crashed=True))
                continue
            except Exception as exc:  # a probe bug or a device fault: keep going, fail the test
                log.exception("probe %s crashed on %s", scope.label(), location.device)
                reason = f"probe {scope.label()} crashed: {type(exc).__name__}: {exc}".splitlines()[0]
                self.record.attempts.append(Attempt(location, [], reason, crashed=True))
                continue
            measurements = result if isinstance(result, list) else [result]
            self.record.attempts.append(Attempt(location, [m for m in measurements if m.metric == scope.metric]))
        return [m for a in self.record.attempts for m in a.measurements]

    def share(self, data: Any, judge: SharedJudge) -> None:
        """Send JSON `data` to rank 0 when the test settles, where `judge` sees every rank's data.

        For judgements that need the whole world at once: the node whose driver differs from the
        majority, the pair of nodes whose link is slow. Every rank must call it the same way.
        """
        self.record.shared = data
        self.record.shared_judge = judge


class CoverageItem(pytest.Item):
    """A final item that fails when a required expectation of the profile was measured by no test.

    Without it, an expectation on a metric that no test measures (or a mistyped param value) would
    never be judged, and the run would pass without the figure it exists to prove. Its checks are
    made by rank 0 when it settles; the item itself has nothing to run.
    """

    def runtest(self) -> None:
        pass

    def reportinfo(self):
        return self.path, None, "the job spans the profile's nodes and every required expectation was measured"


class RegressionItem(CoverageItem):
    """A final item that fails on a blocking regression against the run history (--compare).

    The comparison needs every figure of the run, so it is made by rank 0 when this last item
    settles; its checks then decide the item's outcome like any test's, on every rank.
    """

    def reportinfo(self):
        return self.path, None, "no figure regressed against the run history"
