"""The history in an acceptance run: options, the early check, regression checks, trends, storing
the run and calibrating from it. Everything here runs on rank 0 only.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clusterbench.errors import ClusterbenchError
from clusterbench.history.calibrate import (
    DEFAULT_MARGIN,
    CalibrationError,
    write_calibrated_profile,
)
from clusterbench.history.compare import (
    KEY_METRICS,
    SUMMARY_METRIC,
    CompareSpec,
    HistoryComparison,
    RunKey,
    compare_run,
    parse_compare_spec,
)
from clusterbench.history.fingerprint import run_fingerprint
from clusterbench.history.noise import RegressionRule
from clusterbench.history.store import (
    DEFAULT_BUSY_TIMEOUT_S,
    HistoryError,
    HistoryReadOnly,
    HistoryStore,
    file_size,
)
from clusterbench.model import Check, Provenance, Verdict
from clusterbench.profile import Profile

if TYPE_CHECKING:
    from clusterbench.acceptance import AcceptanceRun

REGRESSION_ITEM_NAME = "clusterbench-regressions"


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


def run_key(run: AcceptanceRun) -> RunKey:
    info = run.results.run
    return RunKey(info.cluster, run_fingerprint(asdict(info))[0], info.quick)


def key_metrics(profile: Profile) -> set[str]:
    return set(KEY_METRICS) | {e.metric for e in profile.expectations}


def _compare(run: AcceptanceRun, spec: CompareSpec | None) -> HistoryComparison:
    rule, verdict = regression_rule(run.profile)
    with HistoryStore.open(run.history.path) as store:
        return compare_run(store, run.results.measurements, run_key(run), spec, rule, verdict, key_metrics(run.profile))


def regression_checks(run: AcceptanceRun) -> list[Check]:
    """The regressions item's checks; a history that cannot be read fails it (the comparison was
    asked for and not made)."""
    try:
        comparison = _compare(run, run.history.compare)
    except HistoryError as exc:
        return [Check(
            metric=SUMMARY_METRIC, params={"compare": run.history.compare.text}, verdict=Verdict.NOT_MEASURED,
            observed=None, target=None, unit="", provenance=Provenance.HISTORY.value,
            source="the run history (--history)", message=f"not compared: {exc}", blocking=True,
        )]
    run.results.trends = comparison.trends
    return comparison.checks


def add_trends(run: AcceptanceRun) -> None:
    """Trends without a comparison (--history alone), or after an interrupted one."""
    if run.history.path is None or run.results.trends:
        return
    try:
        run.results.trends = _compare(run, None).trends
    except HistoryError as exc:
        run.history_notes.append(f"no trends: {exc}")


def store_and_calibrate(run: AcceptanceRun) -> None:
    """After results.json: store the run, then write the calibrated profile. A failure is kept as
    one line in `run.history_error` (the session then exits non-zero); results.json has it all."""
    results = run.results.to_json()
    info = run.results.run
    if run.history.path is not None:
        path = run.history.path
        before = file_size(path) if path.exists() else 0
        try:
            with HistoryStore.open(path, busy_timeout_s=run.history.busy_timeout_s) as store:
                store.record(results, info.run_id)
            grown = file_size(path) - before
            run.history_notes.append(f"stored run {info.run_id} in {path} (+{grown / 1e3:.1f} kB)")
        except HistoryReadOnly as exc:
            run.history_notes.append(f"{exc}: this run was compared but not stored; store it later with "
                                     f"`clusterbench history add {path} {run.report_dir / 'results.json'}`")
        except HistoryError as exc:
            run.history_error = f"{exc}; the run is kept in {run.report_dir / 'results.json'} (`clusterbench history add` stores it)"
    if run.history.calibrate is not None:
        _calibrate(run, results)


def _calibrate(run: AcceptanceRun, results: dict[str, Any]) -> None:
    target = run.history.calibrate
    if results["verdict"] == Verdict.FAIL.value:
        run.history_error = f"--calibrate {target}: not written: the run failed; calibrate on a run of a known-good cluster"
        return
    info = run.results.run
    try:
        count = write_calibrated_profile(
            target, run.profile, run.results.measurements, run_id=info.run_id, date=info.started_at[:10],
            fingerprint=run_key(run).fingerprint, margin=run.history.calibrate_margin,
            storage_targets=run.storage_targets,
        )
    except (CalibrationError, ClusterbenchError) as exc:
        run.history_error = f"--calibrate: {exc}"
        return
    run.history_notes.append(f"wrote calibrated profile {target} ({count} expectations, margin "
                             f"{run.history.calibrate_margin:.0%}; use it with --cluster={target})")
