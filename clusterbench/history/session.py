"""The history in an acceptance run: options, the early check, regression checks, trends, storing
the run and calibrating from it. Everything here runs on rank 0 only.

`HistorySession` is the run's history plugin: it returns its checks, trends and notes and never
writes into the run; the run puts them where they belong.

Order within a run:
1. at collection: the options are checked and the history file is opened once, so that a file that
   is not a history, is newer than this toolkit or names an unknown run fails before any measuring;
2. the final `clusterbench-regressions` item compares every figure with the stored runs; its
   checks settle like any test's, so a blocking regression fails the pytest run itself;
3. at the end, after results.json: the run is stored in one transaction, then calibrated.
A run that crashes before step 3 leaves the history exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clusterbench.errors import ClusterbenchError
from clusterbench.history.calibrate import (
    DEFAULT_MARGIN,
    CalibrationError,
    write_calibrated_profile,
)
from clusterbench.history.compare import (
    KEY_METRICS,
    CompareSpec,
    HistoryComparison,
    RunKey,
    compare_run,
    parse_compare_spec,
)
from clusterbench.history.fingerprint import run_fingerprint
from clusterbench.history.noise import RegressionRule
from clusterbench.history.sqlite_errors import HistoryError, HistoryReadOnly
from clusterbench.history.store import DEFAULT_BUSY_TIMEOUT_S, HistoryStore, file_size
from clusterbench.judge import judge_regressions, not_compared
from clusterbench.model import Check, Verdict
from clusterbench.profile import Profile
from clusterbench.results import RunResults, Trend


@dataclass(frozen=True)
class HistoryOptions:
    path: Path | None = None
    compare: CompareSpec | None = None
    calibrate: Path | None = None
    calibrate_margin: float = DEFAULT_MARGIN
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S  # how long storing waits for another run's write


def history_options(getoption: Callable[[str], Any]) -> HistoryOptions:
    """From pytest's options; a wrong combination is one ClusterbenchError line."""
    path = getoption("history")
    compare = getoption("compare")
    calibrate = getoption("calibrate")
    margin = getoption("calibrate_margin")
    if compare is not None and not path:
        raise ClusterbenchError(f"--compare {compare} needs --history PATH: the stored runs to compare with")
    if margin is not None and not calibrate:
        raise ClusterbenchError("--calibrate-margin needs --calibrate OUT.toml")
    if margin is not None and not 0 < margin < 1:
        raise ClusterbenchError(f"--calibrate-margin {margin}: must be a fraction between 0 and 1 (e.g. 0.1 for 10%)")
    if calibrate is not None and not calibrate.endswith(".toml"):
        raise ClusterbenchError(f"--calibrate {calibrate}: the profile's file name must end in .toml")
    return HistoryOptions(
        path=Path(path) if path else None,
        compare=parse_compare_spec(compare) if compare is not None else None,
        calibrate=Path(calibrate) if calibrate else None,
        calibrate_margin=margin if margin is not None else DEFAULT_MARGIN,
    )


def check_history(options: HistoryOptions) -> None:
    """Open the history once before measuring, and find a named run. An absent file is not created
    yet (only its folder is checked): a run that crashes leaves no trace in the history."""
    if options.path is None:
        return
    if not options.path.exists():
        if not options.path.parent.is_dir():
            raise HistoryError(f"{options.path}: folder {options.path.parent} does not exist")
        if options.compare is not None and options.compare.run_id is not None:
            raise HistoryError(f"{options.path}: no such history file, so no stored run '{options.compare.run_id}'")
        return
    with HistoryStore.open(options.path) as store:
        if options.compare is not None and options.compare.run_id is not None:
            store.run(options.compare.run_id)


def regression_rule(profile: Profile) -> tuple[RegressionRule, Verdict]:
    settings = profile.settings
    rule = RegressionRule(settings.regression_min_effect, settings.regression_noise_k, settings.regression_min_runs)
    return rule, Verdict.WARN if settings.regression_verdict == "warn" else Verdict.FAIL


def run_key(results: RunResults) -> RunKey:
    info = results.run
    return RunKey(info.cluster, run_fingerprint(asdict(info))[0], info.quick)


def key_metrics(profile: Profile) -> set[str]:
    return set(KEY_METRICS) | {e.metric for e in profile.expectations}


@dataclass
class HistoryOutcome:
    """What storing and calibrating did: lines for the summary, and the failure that makes the
    session exit non-zero (results.json has everything either way)."""

    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class HistorySession:
    options: HistoryOptions
    profile: Profile
    trends: list[Trend] = field(default_factory=list)  # from the regression comparison, if it ran

    @property
    def compares(self) -> bool:
        return self.options.compare is not None

    def _compare(self, results: RunResults, spec: CompareSpec | None) -> HistoryComparison:
        assert self.options.path is not None
        rule, _ = regression_rule(self.profile)
        with HistoryStore.open(self.options.path) as store:
            return compare_run(store, results.measurements, run_key(results), spec, rule, key_metrics(self.profile))

    def regression_checks(self, results: RunResults) -> list[Check]:
        """The regressions item's checks (its trends are kept for the end); a history that cannot
        be read fails it: the comparison was asked for and not made."""
        assert self.options.compare is not None
        try:
            comparison = self._compare(results, self.options.compare)
        except HistoryError as exc:
            return [not_compared(self.options.compare.text, str(exc))]
        self.trends = comparison.trends
        assert comparison.regression is not None  # asked for with a spec, so made
        return judge_regressions(comparison.regression, regression_rule(self.profile)[1])

    def final_trends(self, results: RunResults) -> tuple[list[Trend], list[str]]:
        """The trends for the reports: the comparison's, or made now (--history alone, or after an
        interrupted comparison); and a note when they cannot be."""
        if self.options.path is None or self.trends:
            return self.trends, []
        try:
            return self._compare(results, None).trends, []
        except HistoryError as exc:
            return [], [f"no trends: {exc}"]

    def store_and_calibrate(
        self, results: RunResults, report_dir: Path, storage_targets: tuple[str, ...]
    ) -> HistoryOutcome:
        """After results.json: store the run, then write the calibrated profile."""
        outcome = HistoryOutcome()
        data = results.to_json()
        if self.options.path is not None:
            self._store(data, results.run.run_id, report_dir, outcome)
        if self.options.calibrate is not None:
            self._calibrate(results, data, storage_targets, outcome)
        return outcome

    def _store(self, data: dict[str, Any], run_id: str, report_dir: Path, outcome: HistoryOutcome) -> None:
        path = self.options.path
        assert path is not None
        before = file_size(path) if path.exists() else 0
        try:
            with HistoryStore.open(path, busy_timeout_s=self.options.busy_timeout_s) as store:
                store.record(data, run_id)
            outcome.notes.append(f"stored run {run_id} in {path} (+{(file_size(path) - before) / 1e3:.1f} kB)")
        except HistoryReadOnly as exc:
            outcome.notes.append(f"{exc}: this run was compared but not stored; store it later with "
                                 f"`clusterbench history add {path} {report_dir / 'results.json'}`")
        except HistoryError as exc:
            outcome.error = (f"{exc}; the run is kept in {report_dir / 'results.json'} "
                             "(`clusterbench history add` stores it)")

    def _calibrate(self, results: RunResults, data: dict[str, Any], storage_targets: tuple[str, ...],
                   outcome: HistoryOutcome) -> None:
        target = self.options.calibrate
        assert target is not None
        if data["verdict"] == Verdict.FAIL.value:
            outcome.error = (f"--calibrate {target}: not written: the run failed; "
                             "calibrate on a run of a known-good cluster")
            return
        info = results.run
        try:
            count = write_calibrated_profile(
                target, self.profile, results.measurements, run_id=info.run_id, date=info.started_at[:10],
                fingerprint=run_key(results).fingerprint, margin=self.options.calibrate_margin,
                storage_targets=storage_targets,
            )
        except (CalibrationError, ClusterbenchError) as exc:
            outcome.error = f"--calibrate: {exc}"
            return
        outcome.notes.append(f"wrote calibrated profile {target} ({count} expectations, margin "
                             f"{self.options.calibrate_margin:.0%}; use it with --cluster={target})")
