"""Comparing this run with stored runs of the same cluster and hardware: regression checks and trends.

`--compare last` takes the newest stored run, `--compare RUN_ID` one named run, `--compare window:N`
the newest N. Only runs of the same cluster, hardware fingerprint and mode (--quick or not: quick
sweeps use other sizes) are candidates, figure by figure: same metric, params, rank and device.
"""

from __future__ import annotations

import json
import statistics
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from clusterbench.errors import ClusterbenchError
from clusterbench.history.figures import at_largest_sweep_point, is_performance_figure
from clusterbench.history.findings import FigureChange, RegressionFindings
from clusterbench.history.keys import StoredRun, canonical_params, measurement_series_key
from clusterbench.history.noise import (
    Change,
    Comparison,
    RegressionRule,
    Spread,
    Spreads,
    judge_change,
    run_to_run_spreads,
)
from clusterbench.history.store import HistoryStore
from clusterbench.judge import format_value
from clusterbench.metrics import METRICS
from clusterbench.model import Measurement
from clusterbench.results import Trend, TrendPoint

# Figures the HTML report plots over time, besides every metric the profile has expectations on.
KEY_METRICS = (
    "gemm.tflops", "memory.copy_gbps", "memory.h2d_gbps", "allreduce.busbw_gbps", "storage.randread_iops",
    "storage.seqread_gbps", "checkpoint.save_gbps", "train.tokens_per_s", "train.step_time_ms",
)
TREND_RUNS = 30  # stored runs a trend shows when --compare names no larger window


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
            raise CompareSpecError(f"--compare {text}: the window must be a whole number of runs, "
                                   "1 or more (e.g. window:10)")
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
    regression: RegressionFindings | None  # None when no comparison was asked for (trends only)
    trends: list[Trend]


def _window_statistics(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: how many runs have a figure, and their median."""
    counts = np.count_nonzero(~np.isnan(matrix), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns no stored run has: all NaN, by design
        median = np.nanmedian(matrix, axis=0) if len(matrix) else np.full(matrix.shape[1], np.nan)
    return counts, median


@dataclass(frozen=True)
class Baseline:
    """What this run's figures are compared with, column by column (one column a figure): the
    baseline's figures, and the run-to-run spread of each figure over the recent stored runs."""

    runs: list[StoredRun]
    counts: np.ndarray  # stored figures each baseline value stands on (0: none)
    values: np.ndarray  # the one run's figure, or the window's median
    shown: np.ndarray  # recent stored runs that show the figure
    spreads: Spreads  # the figure's run-to-run spread over them
    # With `last`, the stored run's figure was far off the recent runs (a lucky or a bad night):
    # `values` holds their median instead, so tonight's ordinary figure is no "regression" from it.
    rebased: np.ndarray
    stored_values: np.ndarray  # the one stored run's own figures, as they were


def _baseline(store: HistoryStore, spec: CompareSpec, recent: list[StoredRun], measurements: list[Measurement],
              current_ids: np.ndarray, rule: RegressionRule) -> Baseline:
    """The spread always comes from the recent runs (the newest 30, or the window if larger), not
    from the window alone: a spread seen in 5 runs is so uncertain that the band drawn from it must
    be twice as wide (Student's t) as one drawn from 30."""
    recent_matrix = store.value_matrix([r.pk for r in recent], current_ids)
    shown, _ = _window_statistics(recent_matrix)
    floors = np.array([rule.floor(METRICS[m.metric].family) if m.metric in METRICS else rule.min_effect
                       for m in measurements])
    spreads = run_to_run_spreads(recent_matrix, floors)
    if spec.run_id is not None:
        runs = [store.run(spec.run_id)]
        matrix = store.value_matrix([runs[0].pk], current_ids)
    else:
        runs, matrix = recent[: spec.window], recent_matrix[: spec.window]
    counts, values = _window_statistics(matrix)
    stored_values = values.copy()
    rebased = np.zeros(len(values), dtype=bool)
    if spec.window == 1:  # `last`: a named run is the baseline its user chose, whatever it shows
        rebased = (shown >= rule.min_runs) & (counts > 0) & spreads.far_off(values)
        values = np.where(rebased, spreads.median, values)
        counts = np.where(rebased, shown, counts)
    return Baseline(runs, counts, values, shown, spreads, rebased, stored_values)


def _recent_runs(store: HistoryStore, key: RunKey, spec: CompareSpec | None) -> list[StoredRun]:
    """The newest stored runs of the same cluster, hardware and mode: the trends' and the spread's."""
    return store.runs(cluster=key.cluster, fingerprint=key.fingerprint, quick=key.quick,
                      limit=max(TREND_RUNS, spec.window or 0) if spec else TREND_RUNS)


def _series_ids(store: HistoryStore, measurements: list[Measurement]) -> tuple[dict, np.ndarray]:
    """Every stored series' id by key, and the id of each of these figures' series (-1: never stored)."""
    ids = {k: i for i, k in store.series_by_id().items()}
    return ids, np.array([ids.get(measurement_series_key(m), -1) for m in measurements], dtype=np.int64)


def compare_run(
    store: HistoryStore,
    measurements: list[Measurement],
    key: RunKey,
    spec: CompareSpec | None,
    rule: RegressionRule,
    key_metrics: set[str],
) -> HistoryComparison:
    """What changed against the baseline (when `spec` is given) and trends of the key metrics, from the store."""
    recent = _recent_runs(store, key, spec)
    ids, current_ids = _series_ids(store, measurements)
    regression = None
    if spec is not None:
        baseline = _baseline(store, spec, recent, measurements, current_ids, rule)
        regression = _regression_findings(measurements, baseline, key, spec, rule)
    return HistoryComparison(regression, _trends(store, measurements, ids, recent, key_metrics))


def _baseline_label(baseline: list[StoredRun], spec: CompareSpec, key: RunKey) -> str:
    if spec.single_run:
        run = baseline[0]
        other = "" if run.fingerprint == key.fingerprint else f", other hardware {run.fingerprint}"
        return f"stored run {run.run_id} ({run.started_at}{other})"
    return (
        f"median of the {len(baseline)} newest stored runs ({baseline[-1].run_id} .. {baseline[0].run_id}) of "
        f"cluster '{key.cluster}' on hardware {key.fingerprint}"
    )


def _compare_figure(measurement: Measurement, column: int, baseline: Baseline, spec: CompareSpec,
                    rule: RegressionRule) -> Comparison:
    spec_of = METRICS[measurement.metric]
    points = int(baseline.counts[column])
    if not points or (not spec.single_run and points < rule.min_runs):
        return Comparison(Change.TOO_LITTLE_HISTORY, measurement.value, None, None, points, None)
    if int(baseline.shown[column]) >= rule.min_runs:
        spreads = baseline.spreads
        spread = Spread(float(spreads.sigma[column]), int(spreads.used[column]), int(spreads.left_out[column]))
    else:
        spread = Spread(None, int(baseline.shown[column]))
    return judge_change(measurement.value, float(baseline.values[column]), points, spread, spec_of.better,
                        spec_of.family, rule)


def figure_comparisons(measurements: list[Measurement], baseline: Baseline, spec: CompareSpec, rule: RegressionRule,
                       *, all_columns: bool = False) -> Iterator[tuple[Measurement, Comparison | None]]:
    """Each performance figure of this run beside its baseline: what the checks are made of.
    With `all_columns`, every figure in order, None for those that are not performance figures."""
    for column, measurement in enumerate(measurements):
        if is_performance_figure(measurement.metric):
            yield measurement, _compare_figure(measurement, column, baseline, spec, rule)
        elif all_columns:
            yield measurement, None


def _rebased_note(baseline: Baseline, column: int, unit: str) -> str:
    return (f"; its figure {format_value(float(baseline.stored_values[column]), unit)} lay far off the "
            f"{int(baseline.shown[column])} recent runs, so this is their median")


def baseline_for(store: HistoryStore, measurements: list[Measurement], key: RunKey, spec: CompareSpec,
                 rule: RegressionRule) -> Baseline:
    """The baseline `spec` gives these figures, from the store (for tools that replay a history)."""
    _, current_ids = _series_ids(store, measurements)
    return _baseline(store, spec, _recent_runs(store, key, spec), measurements, current_ids, rule)


def _regression_findings(
    measurements: list[Measurement], baseline: Baseline, key: RunKey, spec: CompareSpec, rule: RegressionRule,
) -> RegressionFindings:
    mode = "quick" if key.quick else "full"
    if not baseline.runs:
        return RegressionFindings(spec.text, rule, f"no stored run of cluster '{key.cluster}' on hardware "
                                  f"{key.fingerprint} ({mode} mode) yet; this run will be the first")
    if not spec.single_run and len(baseline.runs) < rule.min_runs:
        return RegressionFindings(spec.text, rule, f"only {len(baseline.runs)} stored run(s) of cluster "
                                  f"'{key.cluster}' on hardware {key.fingerprint} ({mode} mode); {spec.text} needs at "
                                  f"least {rule.min_runs} to tell a regression from noise (profile setting "
                                  "regression_min_runs)")
    findings = RegressionFindings(spec.text, rule, label=_baseline_label(baseline.runs, spec, key),
                                  tally={change: 0 for change in Change})
    for column, (measurement, comparison) in enumerate(figure_comparisons(measurements, baseline, spec, rule,
                                                                          all_columns=True)):
        if comparison is None:
            continue
        findings.tally[comparison.change] += 1
        if comparison.change is not Change.TOO_LITTLE_HISTORY and not comparison.noise_known:
            findings.unknown_noise += 1
        findings.rebased += bool(baseline.rebased[column])
        if comparison.change in (Change.REGRESSION, Change.WITHIN_NOISE, Change.IMPROVEMENT):
            note = _rebased_note(baseline, column, measurement.unit) if baseline.rebased[column] else ""
            findings.changes.append(FigureChange(measurement, comparison, note))
    return findings


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
