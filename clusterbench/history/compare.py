"""Comparing this run with stored runs of the same cluster and hardware: regression checks and trends.

`--compare last` takes the newest stored run, `--compare RUN_ID` one named run, `--compare window:N`
the newest N. Only runs of the same cluster, hardware fingerprint and mode (--quick or not: quick
sweeps use other sizes) are candidates, figure by figure: same metric, params, rank and device.
"""

from __future__ import annotations

import json
import statistics
import warnings
from dataclasses import dataclass

import numpy as np

from clusterbench.errors import ClusterbenchError
from clusterbench.history.figures import at_largest_sweep_point, is_performance_figure
from clusterbench.history.noise import (
    MAD_TO_SIGMA,
    Change,
    Comparison,
    RegressionRule,
    classify,
    compare_with_run,
)
from clusterbench.history.store import (
    HistoryStore,
    StoredRun,
    canonical_params,
    measurement_series_key,
)
from clusterbench.judge import format_value
from clusterbench.metrics import METRICS
from clusterbench.model import Better, Check, Measurement, Provenance, Verdict
from clusterbench.results import Trend, TrendPoint

# Figures the HTML report plots over time, besides every metric the profile has expectations on.
KEY_METRICS = (
    "gemm.tflops", "memory.copy_gbps", "memory.h2d_gbps", "allreduce.busbw_gbps", "storage.randread_iops",
    "storage.seqread_gbps", "checkpoint.save_gbps", "train.tokens_per_s", "train.step_time_ms",
)
TREND_RUNS = 30  # stored runs a trend shows when --compare names no larger window
SUMMARY_METRIC = "history.regression"


class CompareSpecError(ClusterbenchError):
    pass


@dataclass(frozen=True)
class CompareSpec:
    text: str
    window: int | None = None  # `last` is a window of 1
    run_id: str | None = None

    @property
    def single_run(self) -> bool:
        return self.run_id is not None or self.window == 1


def parse_compare_spec(text: str) -> CompareSpec:
    """'last', 'window:N' (N >= 1) or a stored run ID."""
    text = text.strip()
    if text == "last":
        return CompareSpec(text, window=1)
    if text.startswith("window:"):
        size = text.split(":", 1)[1]
        if not size.isdigit() or int(size) < 1:
            raise CompareSpecError(f"--compare {text}: the window must be a whole number of runs, 1 or more (e.g. window:10)")
        return CompareSpec(text, window=int(size))
    if not text or text.startswith("window"):
        raise CompareSpecError(f"--compare '{text}': expected last, window:N or a stored run ID")
    return CompareSpec(text, run_id=text)


@dataclass(frozen=True)
class RunKey:
    """What a stored run must share with this one to be compared with it."""

    cluster: str
    fingerprint: str
    quick: bool


@dataclass
class HistoryComparison:
    checks: list[Check]
    trends: list[Trend]


def _window_statistics(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column: how many runs have a figure, their median, and their robust standard deviation
    (the same numbers noise.robust_sigma gives, computed for every figure at once)."""
    counts = np.count_nonzero(~np.isnan(matrix), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns no stored run has: all NaN, by design
        median = np.nanmedian(matrix, axis=0) if len(matrix) else np.full(matrix.shape[1], np.nan)
        sigma = MAD_TO_SIGMA * np.nanmedian(np.abs(matrix - median), axis=0) if len(matrix) else median
    return counts, median, sigma


def compare_run(
    store: HistoryStore,
    measurements: list[Measurement],
    key: RunKey,
    spec: CompareSpec | None,
    rule: RegressionRule,
    regression_verdict: Verdict,
    key_metrics: set[str],
) -> HistoryComparison:
    """Regression checks (when `spec` is given) and trends of the key metrics, from the store."""
    recent = store.runs(cluster=key.cluster, fingerprint=key.fingerprint, quick=key.quick,
                        limit=max(TREND_RUNS, spec.window or 0) if spec else TREND_RUNS)
    if spec is None:
        baseline: list[StoredRun] = []
    elif spec.run_id is not None:
        baseline = [store.run(spec.run_id)]
    else:
        baseline = recent[: spec.window]
    ids = {k: i for i, k in store.series_by_id().items()}
    current_ids = np.array([ids.get(measurement_series_key(m), -1) for m in measurements], dtype=np.int64)
    checks = []
    if spec is not None:
        matrix = store.value_matrix([r.pk for r in baseline], current_ids)
        checks = _regression_checks(store, measurements, current_ids, matrix, key, spec, baseline, rule, regression_verdict)
    return HistoryComparison(checks, _trends(store, measurements, ids, recent, key_metrics))


def _baseline_label(baseline: list[StoredRun], spec: CompareSpec, key: RunKey) -> str:
    if spec.single_run:
        run = baseline[0]
        other = "" if run.fingerprint == key.fingerprint else f", other hardware {run.fingerprint}"
        return f"stored run {run.run_id} ({run.started_at}{other})"
    return (
        f"median of the {len(baseline)} newest stored runs ({baseline[-1].run_id} .. {baseline[0].run_id}) of "
        f"cluster '{key.cluster}' on hardware {key.fingerprint}"
    )


def _regression_checks(
    store: HistoryStore, measurements: list[Measurement], current_ids: np.ndarray, matrix: np.ndarray,
    key: RunKey, spec: CompareSpec, baseline: list[StoredRun], rule: RegressionRule, regression_verdict: Verdict,
) -> list[Check]:
    mode = "quick" if key.quick else "full"
    if not baseline:
        return [_summary(Verdict.NOT_MEASURED, spec, f"not compared: no stored run of cluster '{key.cluster}' on hardware "
                         f"{key.fingerprint} ({mode} mode) yet; this run will be the first")]
    if not spec.single_run and len(baseline) < rule.min_runs:
        return [_summary(Verdict.NOT_MEASURED, spec, f"not compared: only {len(baseline)} stored run(s) of cluster "
                         f"'{key.cluster}' on hardware {key.fingerprint} ({mode} mode); {spec.text} needs at least "
                         f"{rule.min_runs} to tell a regression from noise (profile setting regression_min_runs)")]
    label = _baseline_label(baseline, spec, key)
    counts, medians, sigmas = _window_statistics(matrix)
    baseline_samples = store.samples(baseline[0].pk) if spec.single_run else {}
    checks: list[Check] = []
    tally = {change: 0 for change in Change}
    for column, measurement in enumerate(measurements):
        if not is_performance_figure(measurement.metric):
            continue
        better = METRICS[measurement.metric].better
        points = int(counts[column])
        if spec.single_run and points:
            comparison = compare_with_run(measurement.value, float(medians[column]), measurement.samples,
                                          baseline_samples.get(int(current_ids[column]), []), better, rule)
        elif points < rule.min_runs or spec.single_run:
            comparison = Comparison(Change.TOO_LITTLE_HISTORY, measurement.value, None, None, points, None)
        else:
            comparison = classify(measurement.value, float(medians[column]), float(sigmas[column]), points, better, rule)
        tally[comparison.change] += 1
        if comparison.change in (Change.REGRESSION, Change.WITHIN_NOISE, Change.IMPROVEMENT):
            checks.append(_change_check(measurement, comparison, better, rule, regression_verdict, label, spec))
    compared = sum(tally.values()) - tally[Change.TOO_LITTLE_HISTORY]
    parts = [f"{tally[c]} {c.value}" for c in Change if tally[c]]
    verdict = Verdict.PASS if compared else Verdict.NOT_MEASURED
    message = f"{compared} figure(s) compared with the {label}: {', '.join(parts) or 'nothing to compare'}"
    if tally[Change.TOO_LITTLE_HISTORY]:
        message += f" (too little history: fewer than {rule.min_runs} stored figures, or none, for the same params)"
    return [_summary(verdict, spec, message), *checks]


def _summary(verdict: Verdict, spec: CompareSpec, message: str) -> Check:
    return Check(
        metric=SUMMARY_METRIC, params={"compare": spec.text}, verdict=verdict, observed=None, target=None, unit="",
        provenance=Provenance.HISTORY.value, source="the run history (--history)", message=message, blocking=False,
    )


def _change_check(
    measurement: Measurement, comparison: Comparison, better: Better, rule: RegressionRule,
    regression_verdict: Verdict, label: str, spec: CompareSpec,
) -> Check:
    unit = measurement.unit
    direction = ("slower" if better is Better.HIGHER else "higher") if (comparison.worse_by or 0) > 0 else (
        "faster" if better is Better.HIGHER else "lower")
    noise = "raw samples of both runs" if spec.single_run else f"the {comparison.points} stored figures"
    band = f"{rule.noise_k:g} robust deviations = {format_value(rule.noise_k * (comparison.noise or 0.0), unit)} of {noise}"
    figures = f"{format_value(comparison.current, unit)} now vs {format_value(comparison.baseline, unit)}"
    size = f"{abs(comparison.worse_by or 0):.1%} {direction}"
    if comparison.change is Change.REGRESSION:
        verdict = regression_verdict
        message = f"regression: {figures}, {size}: beyond the minimum effect {rule.min_effect:.0%} and {band}"
    elif comparison.change is Change.WITHIN_NOISE:
        verdict = Verdict.PASS
        message = f"{figures}, {size}, but within the noise ({band}): not flagged"
    else:
        verdict = Verdict.PASS
        message = f"improvement: {figures}, {size}: beyond the minimum effect {rule.min_effect:.0%} and {band}"
    return Check(
        metric=measurement.metric, params=dict(measurement.params), verdict=verdict, observed=comparison.current,
        target=comparison.baseline, unit=unit, provenance=Provenance.HISTORY.value, source=label, message=message,
        better=better, location=measurement.location,
    )


def _trend_groups(measurements: list[Measurement], key_metrics: set[str]) -> dict[tuple[str, str], list[Measurement]]:
    """(metric, params) -> this run's figures of a key metric; a sweep only at its largest point."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        if m.metric in key_metrics and is_performance_figure(m.metric):
            groups.setdefault((m.metric, canonical_params(m.params)), []).append(m)
    return at_largest_sweep_point(groups)


def _trends(store: HistoryStore, measurements: list[Measurement], ids: dict, recent: list[StoredRun],
            key_metrics: set[str]) -> list[Trend]:
    """Each key figure's value per stored run (the median over devices, the job's aggregate left
    out unless it is all there is), oldest first, beside this run's."""
    groups = _trend_groups(measurements, key_metrics)
    if not recent or not groups:
        return []
    wanted: dict[tuple[str, str], list[int]] = {}
    for (metric, params), group in groups.items():
        aggregate_only = all(m.location.rank < 0 for m in group)
        wanted[(metric, params)] = [
            s for k, s in ids.items() if (k.metric, k.params) == (metric, params) and (k.rank < 0) == aggregate_only
        ]
    columns = sorted({s for series in wanted.values() for s in series})
    column_of = {s: c for c, s in enumerate(columns)}
    oldest_first = list(reversed(recent))
    matrix = store.value_matrix([r.pk for r in oldest_first], np.array(columns, dtype=np.int64))
    trends = []
    for (metric, params), group in sorted(groups.items()):
        aggregate_only = all(m.location.rank < 0 for m in group)
        block = matrix[:, [column_of[s] for s in wanted[(metric, params)]]]
        points = []
        for run, row in zip(oldest_first, block):
            values = row[~np.isnan(row)]
            if len(values):
                points.append(TrendPoint(run.run_id, run.started_at, float(statistics.median(values.tolist()))))
        spec = METRICS[metric]
        current = statistics.median(m.value for m in group if (m.location.rank < 0) == aggregate_only)
        trends.append(Trend(metric, json.loads(params), spec.unit, spec.better.value, points, current))
    return trends
