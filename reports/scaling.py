"""How figures scale with the number of ranks: one series per scaled metric, with its ideal and its
efficiency at each scale, and the largest scale that still meets the profile's efficiency floor.

A metric is scaled in a run when its measurements carry a `ranks` param with at least two values
(scaling.allreduce_busbw_gbps, train.tokens_per_s measured at 1, 2, 4... nodes). The ideal follows
the metric's nature:
- bus bandwidth (nccl-tests' busbw is defined so that a perfect fabric shows the same figure at
  every scale): ideal = the smallest scale's figure of the same span (intra-node, inter-node),
  efficiency = X_N / X_min;
- a lower-is-better time (a weak-scaled step time): ideal = the smallest scale's figure, whatever
  its span (one rank is "single", two are "intra-node": the ideal of both is the one-rank time),
  efficiency = X_min / X_N, the training probe's X_N / (N/N_min * X_min) on tokens/s;
- any other throughput (tokens/s): ideal = X_min * N / N_min, efficiency = X_N / ideal, the weak
  scaling efficiency X_N / (N * X_1) of the training issue when N_min = 1.
Where the training probe measured its own efficiency (train.scaling_efficiency, same formula) and
cost (train.cost_per_mtokens, from the profile's price) at a scale, those figures are shown as they
are, and so is the floor it was given and the largest scale it found meeting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clusterbench.judge import format_value
from clusterbench.metrics import METRICS
from clusterbench.model import Better, Check, Measurement, Verdict

FLOOR_METRIC = "train.scaling_efficiency"  # the profile states its efficiency floor on this metric
POINT_PARAMS = ("ranks", "span")  # what varies along a series; the other params name the series
# Figures that are themselves ratios, counts or prices: shown beside a scaled figure (efficiency,
# cost columns) or in the checks, never scaled again.
UNSCALED_UNITS = ("fraction", "count")
COST_UNIT_PREFIX = "cost/"


@dataclass(frozen=True)
class ScalePoint:
    ranks: int
    span: str | None
    value: float
    ideal: float
    efficiency: float | None
    verdict: str  # the worst verdict of the checks on this figure, "-" when none judged it
    meets_floor: bool | None  # None without a floor or an efficiency
    cost: str | None  # cost per unit of work, where the run priced it (the profile gave a price)
    where: str


@dataclass(frozen=True)
class ScalingSeries:
    metric: str
    params: dict[str, Any]  # the params every point shares
    unit: str
    better: Better
    ideal_rule: str  # "constant per span", "constant" or "linear"
    points: list[ScalePoint]
    floor: float | None
    floor_source: str
    largest_meeting_floor: int | None  # the most ranks up to which every scale met the floor

    @property
    def label(self) -> str:
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.metric}[{inner}]" if inner else self.metric

    def value_text(self, value: float) -> str:
        return format_value(value, self.unit)

    @property
    def ideal_text(self) -> str:
        return IDEAL_TEXT[self.ideal_rule]


IDEAL_TEXT = {
    "constant per span": "the smallest scale's figure of the same span (intra-node, inter-node) at every scale",
    "constant": "the smallest scale's figure at every scale (weak scaling: the time of a step should not grow)",
    "linear": "the smallest scale's figure times ranks / its ranks",
}


def efficiency_floor(profile: dict[str, Any]) -> tuple[float | None, str]:
    """The profile's floor: the fail threshold of its expectation on FLOOR_METRIC (the lowest, when
    it states several)."""
    floors = [
        (float(e["fail_threshold"]), str(e.get("source", "")))
        for e in profile.get("expectations", [])
        if e.get("metric") == FLOOR_METRIC and e.get("fail_threshold") is not None
    ]
    if not floors:
        return None, f"the profile states no {FLOOR_METRIC} expectation"
    floor, source = min(floors)
    return floor, f"{FLOOR_METRIC} fail threshold {floor:.0%} ({source})"


def _ideal_rule(metric: str, better: Better) -> str:
    if "busbw" in metric:
        return "constant per span"  # NVLink's figure is not expected of the inter-node fabric
    if better is Better.LOWER:
        return "constant"
    return "linear"


def _efficiency(rule: str, better: Better, value: float, base: float, ranks: int,
                base_ranks: int) -> tuple[float, float | None]:
    ideal = base * ranks / base_ranks if rule == "linear" else base
    if not value or not ideal:
        return ideal, None
    return ideal, (ideal / value if better is Better.LOWER else value / ideal)


def _key(params: dict[str, Any], without: tuple[str, ...] = ()) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in params.items() if k not in without and k != "currency"))


@dataclass
class _Companions:
    """Figures measured beside a scaled one at the same scale: the training probe's own efficiency,
    its cost per unit of work, and the floor it was given."""

    efficiency: dict[tuple, float]
    cost: dict[tuple, str]
    floor: tuple[float, str] | None = None
    largest: int | None = None

    @classmethod
    def of(cls, measurements: list[Measurement]) -> _Companions:
        found = cls({}, {})
        for m in measurements:
            if m.metric == FLOOR_METRIC:
                found.efficiency[_key(m.params)] = m.value
                if isinstance(m.details.get("efficiency_floor"), (int, float)):
                    found.floor = (float(m.details["efficiency_floor"]), str(m.details.get("floor_source", "")))
                    found.largest = m.details.get("largest_efficient_ranks")
            elif m.unit.startswith(COST_UNIT_PREFIX):
                currency = str(m.params.get("currency") or m.details.get("currency") or "")
                per = m.unit.removeprefix(COST_UNIT_PREFIX)
                found.cost[_key(m.params)] = f"{m.value:.4g} {currency} per {per}".replace("  ", " ")
        return found


def _largest_meeting(points: list[ScalePoint]) -> int | None:
    """The most ranks up to which every scale met the floor (the training probe's rule: a scale
    that misses it and a larger one that recovers is noise, not a place to stop); where one rank
    count appears at several spans, the worse efficiency counts."""
    worst: dict[int, bool] = {}
    for p in points:
        if p.meets_floor is not None:
            worst[p.ranks] = worst.get(p.ranks, True) and p.meets_floor
    largest = None
    for ranks in sorted(worst):
        if not worst[ranks]:
            break
        largest = ranks
    return largest


def scaling_series(measurements: list[Measurement],
                   checks: list[Check], profile: dict[str, Any]) -> list[ScalingSeries]:
    profile_floor = efficiency_floor(profile)
    companions = _Companions.of(measurements)
    verdicts: dict[tuple, list[Verdict]] = {}
    for check in checks:
        verdicts.setdefault((check.metric, _key(check.params)), []).append(check.verdict)
    groups: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        if "ranks" in m.params and m.unit not in UNSCALED_UNITS and not m.unit.startswith(COST_UNIT_PREFIX):
            groups.setdefault((m.metric, _key(m.params, POINT_PARAMS)), []).append(m)
    series = []
    for (metric, _), group in groups.items():
        if len({m.params["ranks"] for m in group}) < 2:
            continue
        spec = METRICS.get(metric)
        better = spec.better if spec else Better.HIGHER
        rule = _ideal_rule(metric, better)
        training = metric.startswith("train.")
        if training:
            floor, floor_source = companions.floor or profile_floor
        else:  # the profile's floor is a training figure; a fabric is held to its own expectations
            floor, floor_source = None, f"none: the profile's floor ({FLOOR_METRIC}) is for training throughput"
        # One figure per scale: where several ranks reported the same scale, rank 0's (or the
        # job's aggregate, which has a negative rank) stands for it.
        group.sort(key=lambda m: (int(m.params["ranks"]), str(m.params.get("span", "")), m.location.rank))
        group = list({(m.params["ranks"], str(m.params.get("span", ""))): m for m in reversed(group)}.values())[::-1]
        base = group[0]
        # A constant ideal is held per span: inter-node bandwidth is not expected to match NVLink's,
        # but it is expected to hold as nodes are added.
        span_base = {str(m.params.get("span", "")): m for m in reversed(group)} if rule == "constant per span" else {}
        points = []
        for m in group:
            ranks = int(m.params["ranks"])
            own_base = span_base.get(str(m.params.get("span", "")), base)
            ideal, efficiency = _efficiency(rule, better, m.value, own_base.value, ranks, int(own_base.params["ranks"]))
            if training and _key(m.params) in companions.efficiency:
                efficiency = companions.efficiency[_key(m.params)]  # the probe's own, same formula
            judged = verdicts.get((m.metric, _key(m.params)), [])
            if training:  # the efficiency check at this scale speaks of this figure too
                judged = judged + verdicts.get((FLOOR_METRIC, _key(m.params)), [])
            worst = Verdict.worst(judged)
            points.append(
                ScalePoint(
                    ranks=ranks,
                    span=str(m.params["span"]) if "span" in m.params else None,
                    value=m.value,
                    ideal=ideal,
                    efficiency=efficiency,
                    verdict=worst.value if worst else "-",
                    meets_floor=None if floor is None or efficiency is None else efficiency >= floor,
                    cost=companions.cost.get(_key(m.params)),
                    where=f"{m.location.host}/{m.location.device}",
                )
            )
        largest = companions.largest if training and companions.floor else _largest_meeting(points)
        shared = {k: v for k, v in base.params.items() if k not in POINT_PARAMS}
        series.append(ScalingSeries(metric, shared, base.unit, better, rule, points, floor, floor_source, largest))
    return series
