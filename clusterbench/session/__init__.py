"""One acceptance run, in parts with one job each:

- context (RunContext): the profile, the world, this rank's devices; read by everyone;
- recorder (ResultsRecorder): results.json after every test, the reports at the end (rank 0);
- settler (Settler): each test's outcome agreed across ranks, judged on rank 0;
- runners (Runners): the collective, storage and training runs, started once on first use;
- history (HistorySession): regression checks, trends, storing and calibrating;
- health (HealthState): what the GEMM tests sampled for the health tests to judge.

The `acceptance` fixture (clusterbench.session.api.AcceptanceTest) is what tests measure through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clusterbench.distributed import Decision, Exchange
from clusterbench.health_checks import HealthState
from clusterbench.history.session import HistoryOptions, HistorySession
from clusterbench.profile import Profile
from clusterbench.results import RunResults, utc_now
from clusterbench.session.context import RunContext, rank_devices
from clusterbench.session.recorder import ResultsRecorder
from clusterbench.session.records import TestRecord
from clusterbench.session.runner_set import Runners
from clusterbench.session.settle import Settler


@dataclass
class AcceptanceRun:
    context: RunContext
    recorder: ResultsRecorder
    settler: Settler
    runners: Runners
    history: HistorySession
    health: HealthState = field(default_factory=HealthState)
    history_notes: list[str] = field(default_factory=list)  # lines for the summary: stored, calibrated
    history_error: str | None = None  # storing or calibrating failed: the session exits non-zero

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
        history: HistoryOptions | None = None,
    ) -> AcceptanceRun:
        context = RunContext(profile, exchange, report_dir, quick, narrowed, rank_devices(exchange.world),
                             storage_targets)
        return cls.of(context, RunResults(run=context.run_info(command_line)), history)

    @classmethod
    def of(cls, context: RunContext, results: RunResults, history: HistoryOptions | None = None) -> AcceptanceRun:
        recorder = ResultsRecorder(context.report_dir, results)
        return cls(context, recorder, Settler(context, recorder), Runners(context, results.run),
                   HistorySession(history or HistoryOptions(), context.profile))

    @property
    def is_reporter(self) -> bool:
        return self.context.is_reporter

    @property
    def exchange(self) -> Exchange:
        return self.context.exchange

    @property
    def profile(self) -> Profile:
        return self.context.profile

    @property
    def results(self) -> RunResults:
        return self.recorder.results

    def test_record(self, nodeid: str) -> TestRecord:
        return self.settler.record(nodeid)

    def settle(self, nodeid: str, outcome: str, message: str) -> Decision:
        return self.settler.settle(nodeid, outcome, message)

    def finish(self) -> None:
        """Rank 0's last steps, in this order: checks that need the whole run (history), the final
        results.json, then what is derived from it (reports, the history record)."""
        self.results.run.finished_at = utc_now()
        if not self.is_reporter:
            return
        self.results.trends, notes = self.history.final_trends(self.results)
        self.history_notes.extend(notes)
        self.recorder.write(exact=True)
        self.recorder.render_reports()
        stored = self.history.store_and_calibrate(self.results, self.context.report_dir, self.context.storage_targets)
        self.history_notes.extend(stored.notes)
        self.history_error = stored.error
