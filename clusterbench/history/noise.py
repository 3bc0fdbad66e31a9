"""The noise-aware regression rule, on plain numbers: is this figure worse than its history, and is
the difference bigger than the history's own noise?

A change is flagged only when it is BOTH beyond a minimum effect (a fraction of the baseline, as
asv's --factor and Otava's magnitude) AND beyond k robust standard deviations of the baseline's
spread (a lookback z-score as conbench uses, made robust with the median and the MAD so that one
bad night in the window does not widen the band). Direction comes from the metric: a throughput
regresses down, a latency up.
"""

from __future__ import annotations

import enum
import statistics
from dataclasses import dataclass

from clusterbench.model import Better

# The MAD of a normal distribution times this is its standard deviation.
MAD_TO_SIGMA = 1.4826


class Change(str, enum.Enum):
    REGRESSION = "regression"  # worse beyond both the minimum effect and the noise
    WITHIN_NOISE = "within noise"  # worse beyond the minimum effect, but inside the noise band
    IMPROVEMENT = "improvement"  # better beyond both
    UNCHANGED = "unchanged"
    TOO_LITTLE_HISTORY = "too little history"


@dataclass(frozen=True)
class RegressionRule:
    min_effect: float = 0.05  # a fraction of the baseline
    noise_k: float = 3.0  # robust standard deviations
    min_runs: int = 5  # stored runs a window needs before its noise is trusted


@dataclass(frozen=True)
class Comparison:
    change: Change
    current: float
    baseline: float | None  # the window's median, or the one stored run's figure
    noise: float | None  # one robust standard deviation, in the metric's unit
    points: int  # stored figures the baseline stands on
    worse_by: float | None  # signed fraction of the baseline; positive is worse, whatever the direction


def robust_sigma(values: list[float]) -> float:
    """The median absolute deviation scaled to a standard deviation; 0.0 for fewer than 2 values."""
    if len(values) < 2:
        return 0.0
    middle = statistics.median(values)
    return MAD_TO_SIGMA * statistics.median(abs(v - middle) for v in values)


def _worse_by(current: float, baseline: float, better: Better) -> float | None:
    if baseline == 0:
        return None
    change = (current - baseline) / abs(baseline)
    return -change if better is Better.HIGHER else change


def classify(current: float, baseline: float, noise: float, points: int, better: Better, rule: RegressionRule) -> Comparison:
    """The rule itself, given the baseline and one robust standard deviation of its noise."""
    worse_by = _worse_by(current, baseline, better)
    beyond_noise = abs(current - baseline) > rule.noise_k * noise
    if worse_by is None:
        change = Change.UNCHANGED
    elif worse_by > rule.min_effect:
        change = Change.REGRESSION if beyond_noise else Change.WITHIN_NOISE
    elif -worse_by > rule.min_effect and beyond_noise:
        change = Change.IMPROVEMENT
    else:
        change = Change.UNCHANGED
    return Comparison(change, current, baseline, noise, points, worse_by)


def compare_with_window(current: float, window: list[float], better: Better, rule: RegressionRule) -> Comparison:
    """Against a window of stored runs' figures: median as baseline, its robust spread as noise."""
    if len(window) < rule.min_runs:
        return Comparison(Change.TOO_LITTLE_HISTORY, current, statistics.median(window) if window else None, None, len(window), None)
    return classify(current, statistics.median(window), robust_sigma(window), len(window), better, rule)


def compare_with_run(
    current: float, baseline: float, current_samples: list[float], baseline_samples: list[float],
    better: Better, rule: RegressionRule,
) -> Comparison:
    """Against one stored run: the noise is the larger robust spread of the two runs' raw samples,
    the only spread one pair of runs shows (it misses run-to-run drift: prefer a window)."""
    noise = max(robust_sigma(current_samples), robust_sigma(baseline_samples))
    return classify(current, baseline, noise, 1, better, rule)
