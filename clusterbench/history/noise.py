"""The noise-aware regression rule, on plain numbers: is this figure worse than its history, and is
the difference bigger than the figure's own run-to-run variation?

A change is flagged only when it exceeds a threshold that is the larger of
- a floor: the minimum effect (a fraction of the baseline, as asv's --factor and Otava's magnitude),
  raised for families whose figures have heavy tails (FAMILY_FLOORS), and
- a noise band: k standard deviations of the difference between this run and the baseline (a
  lookback z-score as conbench uses), with k widened to Student's t for the number of stored runs
  the spread was estimated from, as a prediction interval is: a spread seen in 5 runs is itself
  uncertain, and a plain 3-deviation band drawn from it is crossed by chance by 3-9% of unchanged
  figures, against the 0.13% that 3 deviations promise (tools/history_scale.py --false-alarms).

The spread is always run-to-run: one figure's per-run values over the stored runs, the larger of
their standard deviation and their MAD-based robust deviation, far-off runs left out
(run_to_run_spreads). The raw samples inside one run say nothing of it (a GEMM's 20 iterations
agree to 0.1% on a node whose next run is 30% slower because a neighbour's job started), so they
are not used. Where fewer than `min_runs` stored runs show a
figure, its spread is unknown and only changes beyond the stated `unknown_noise_floor` are judged
(the comparison reports those as WARN: see clusterbench.history.compare).
Direction comes from the metric: a throughput regresses down, a latency up.
"""

from __future__ import annotations

import enum
import functools
import math
import statistics
import warnings
from dataclasses import dataclass

import numpy as np

from clusterbench.model import Better

# The MAD of a normal distribution times this is its standard deviation.
MAD_TO_SIGMA = 1.4826
# A stored run further than this many robust deviations (and than the floor) from the median is
# another night, not noise: it is left out of the spread (a normal figure lies 5 deviations out
# about once in 2 million runs).
OUTLIER_DEVIATIONS = 5.0

# Per family, the smallest change flagged however steady the stored runs were. Storage and fabric
# figures depend on what other tenants do on a shared filesystem or fabric, a heavy tail that a
# spread seen over a few quiet runs understates (issue 16's false alarm: seqwrite 8.3% down on
# unchanged hardware). Families not named here use the rule's min_effect (default 5%).
FAMILY_FLOORS: dict[str, float] = {"storage": 0.10, "network": 0.10}

# With too few stored runs to know a figure's run-to-run spread (`last` on a young history), only
# changes beyond this are judged, and as a WARN, never a FAIL: nobody knows yet whether the figure
# moves that much by itself. On dedicated GPU nodes figures move a few % between runs, so a drop of
# a quarter is news; on the shared 2-core VM of docs/history.md's replay, 30 of 180 comparisons of
# two consecutive unchanged runs moved further than this (up to 87%), which is why it cannot FAIL.
UNKNOWN_NOISE_FLOOR = 0.25


class Change(str, enum.Enum):
    REGRESSION = "regression"  # worse beyond the threshold
    WITHIN_NOISE = "within noise"  # worse beyond the minimum effect, but inside the threshold
    IMPROVEMENT = "improvement"  # better beyond the threshold
    UNCHANGED = "unchanged"
    TOO_LITTLE_HISTORY = "too little history"


@dataclass(frozen=True)
class RegressionRule:
    min_effect: float = 0.05  # a fraction of the baseline
    noise_k: float = 3.0  # standard deviations of the difference (as for a known spread: widened to Student's t)
    min_runs: int = 5  # stored runs a figure needs before its run-to-run spread is trusted
    unknown_noise_floor: float = UNKNOWN_NOISE_FLOOR
    family_floors: tuple[tuple[str, float], ...] = tuple(FAMILY_FLOORS.items())

    def floor(self, family: str) -> float:
        """The smallest change flagged for a figure of `family`."""
        return max(self.min_effect, dict(self.family_floors).get(family, 0.0))


@dataclass(frozen=True)
class Spread:
    """One figure's run-to-run spread: one standard deviation of its per-run values (run_to_run_spreads)."""

    sigma: float | None  # in the metric's unit; None when fewer than the rule's min_runs runs show it
    runs: int  # stored runs it was estimated from
    left_out: int = 0  # far-off stored runs left out of it (run_to_run_spreads)


@dataclass(frozen=True)
class Comparison:
    change: Change
    current: float
    baseline: float | None  # the window's median, or the one stored run's figure
    noise: float | None  # one standard deviation of the figure from run to run; None: unknown
    points: int  # stored figures the baseline stands on
    worse_by: float | None  # signed fraction of the baseline; positive is worse, whatever the direction
    threshold: float | None = None  # the change, as a fraction of the baseline, a figure must exceed
    noise_band: float | None = None  # the widened k deviations of the difference, in the metric's unit
    floor: float = 0.0  # the family's floor that applied
    spread_runs: int = 0  # stored runs the spread was estimated from
    left_out: int = 0  # far-off stored runs left out of the spread

    @property
    def noise_known(self) -> bool:
        return self.noise is not None


def robust_sigma(values: list[float]) -> float:
    """The median absolute deviation scaled to a standard deviation; 0.0 for fewer than 2 values."""
    if len(values) < 2:
        return 0.0
    middle = statistics.median(values)
    return MAD_TO_SIGMA * statistics.median(abs(v - middle) for v in values)


@dataclass(frozen=True)
class Spreads:
    """run_to_run_spreads' answer, one entry a column (figure)."""

    sigma: np.ndarray  # one standard deviation of the figure from run to run
    used: np.ndarray  # stored runs it stands on
    left_out: np.ndarray  # far-off stored runs left out of it
    median: np.ndarray  # the figure's median over the stored runs that show it
    limit: np.ndarray  # how far from that median a run's figure may lie and still count (in the unit)

    def far_off(self, values: np.ndarray) -> np.ndarray:
        """Which of `values` (one a column) lie beyond the limit: another night, not noise."""
        with np.errstate(invalid="ignore"):
            return np.abs(values - self.median) > self.limit


def run_to_run_spreads(matrix: np.ndarray, floors: np.ndarray) -> Spreads:
    """Per column of a (runs x figures) matrix, NaN where a run lacks the figure: one standard
    deviation of the figure from run to run, and what it stands on.

    The deviation is the larger of the standard deviation (what Student's t assumes) and the MAD's
    robust one (which a lucky cluster of equal values cannot shrink). Runs further from the median
    than both OUTLIER_DEVIATIONS robust deviations and the column's floor (a fraction of the median)
    are left out of the standard deviation: one bad night, a regression that was fixed since, would
    otherwise widen the band so far that the next regression passed unseen for 30 runs."""
    shown = ~np.isnan(matrix)
    if not len(matrix):
        nothing = np.zeros(matrix.shape[1])
        return Spreads(nothing, nothing.astype(int), nothing.astype(int), nothing, nothing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns no stored run has: all NaN, by design
        median = np.nanmedian(matrix, axis=0)
        robust = np.nan_to_num(MAD_TO_SIGMA * np.nanmedian(np.abs(matrix - median), axis=0))
    limit = np.fmax(OUTLIER_DEVIATIONS * robust, floors * np.abs(np.nan_to_num(median)))
    kept = shown & (np.abs(np.where(shown, matrix, 0.0) - np.nan_to_num(median)) <= limit)
    used = kept.sum(axis=0)
    values = np.where(kept, matrix, 0.0)
    mean = values.sum(axis=0) / np.maximum(used, 1)
    squares = np.where(kept, (values - mean) ** 2, 0.0).sum(axis=0)
    deviation = np.sqrt(squares / np.maximum(used - 1, 1))
    sigma = np.fmax(robust, np.where(used > 1, deviation, 0.0))
    return Spreads(sigma, used, shown.sum(axis=0) - used, median, limit)


def spread_of(values: list[float], rule: RegressionRule, family: str = "") -> Spread:
    """The run-to-run spread of one figure's stored per-run values, or unknown with too few."""
    if len(values) < rule.min_runs:
        return Spread(None, len(values))
    spreads = run_to_run_spreads(np.array([values], dtype=float).T, np.array([rule.floor(family)]))
    return Spread(float(spreads.sigma[0]), int(spreads.used[0]), int(spreads.left_out[0]))


def _incomplete_beta(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (Lentz's
    method, as Numerical Recipes' betacf), for the Student t tail below."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _incomplete_beta(1.0 - x, b, a)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-12:
            break
    return front * fraction


def student_t_tail(t: float, dof: float) -> float:
    """P(T > t) for Student's t with `dof` degrees of freedom, t >= 0."""
    return 0.5 * _incomplete_beta(dof / (dof + t * t), dof / 2.0, 0.5)


@functools.lru_cache(maxsize=256)  # a few (k, runs) pairs per comparison of thousands of figures
def widened_k(k: float, runs: int) -> float:
    """The number of deviations that a spread estimated from `runs` values must be multiplied by to
    keep the one-sided false-alarm rate of k deviations of a known normal spread: Student's t
    quantile at that tail with runs - 1 degrees of freedom (k=3: 6.62 for 5 runs, 3.28 for 30)."""
    if k <= 0 or runs < 2:
        return k
    tail = 0.5 * math.erfc(k / math.sqrt(2.0))
    low, high = k, k * 1e3
    for _ in range(100):  # bisection: the tail falls as t grows
        middle = (low + high) / 2.0
        low, high = (middle, high) if student_t_tail(middle, runs - 1) > tail else (low, middle)
    return (low + high) / 2.0


def difference_sigma(sigma: float, baseline_runs: int) -> float:
    """One standard deviation of (this run's figure - the baseline) when every run's figure varies
    by `sigma`: the baseline is one run's figure (variance sigma^2: the difference has sqrt 2 of
    it) or the median of n runs (variance about pi/2 sigma^2/n, the median's large-sample law)."""
    baseline_variance = 1.0 / baseline_runs if baseline_runs <= 2 else math.pi / (2 * baseline_runs)
    return sigma * math.sqrt(1.0 + baseline_variance)


def _worse_by(current: float, baseline: float, better: Better) -> float | None:
    if baseline == 0:
        return None
    change = (current - baseline) / abs(baseline)
    return -change if better is Better.HIGHER else change


def judge_change(
    current: float, baseline: float, baseline_runs: int, spread: Spread, better: Better, family: str,
    rule: RegressionRule,
) -> Comparison:
    """The rule itself: `baseline` stands on `baseline_runs` stored figures; `spread` is the figure's
    run-to-run spread (unknown: judge only beyond the rule's unknown_noise_floor)."""
    worse_by = _worse_by(current, baseline, better)
    floor = rule.floor(family)
    band = None
    if spread.sigma is None:
        threshold = max(floor, rule.unknown_noise_floor)
    else:
        band = widened_k(rule.noise_k, spread.runs) * difference_sigma(spread.sigma, baseline_runs)
        threshold = max(floor, band / abs(baseline)) if baseline else floor
    if worse_by is None:
        change = Change.UNCHANGED
    elif worse_by > threshold:
        change = Change.REGRESSION
    elif worse_by > rule.min_effect:
        change = Change.WITHIN_NOISE
    elif -worse_by > threshold:
        change = Change.IMPROVEMENT
    else:
        change = Change.UNCHANGED
    return Comparison(change, current, baseline, spread.sigma, baseline_runs, worse_by, threshold, band, floor,
                      spread.runs, spread.left_out)


def compare_with_window(current: float, window: list[float], better: Better, rule: RegressionRule,
                        family: str = "") -> Comparison:
    """Against a window of stored runs' figures: median as baseline, its robust spread as noise."""
    if len(window) < rule.min_runs:
        median = statistics.median(window) if window else None
        return Comparison(Change.TOO_LITTLE_HISTORY, current, median, None, len(window), None)
    spread = spread_of(window, rule, family)
    return judge_change(current, statistics.median(window), len(window), spread, better, family, rule)


def compare_with_run(current: float, baseline: float, history: list[float], better: Better, rule: RegressionRule,
                     family: str = "") -> Comparison:
    """Against one stored run's figure; the noise is the run-to-run spread of the figure over the
    stored runs `history` (the recent runs of the same cluster and hardware), unknown with fewer
    than min_runs of them."""
    return judge_change(current, baseline, 1, spread_of(history, rule, family), better, family, rule)
