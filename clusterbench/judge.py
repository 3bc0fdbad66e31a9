"""Checks: compare measurements with expectations (or with their peers) and give verdicts.

The judge measures nothing and renders nothing; it only turns data into `Check`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterbench.metrics import METRICS
from clusterbench.model import Better, Check, Expectation, Location, Measurement, ParamValue, Provenance, Verdict


@dataclass(frozen=True)
class Scope:
    """What one acceptance test set out to measure: a metric, narrowed by some params."""

    metric: str
    params: dict[str, ParamValue] = field(default_factory=dict)

    def label(self) -> str:
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.metric}[{inner}]" if inner else self.metric


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    text = f"{value:.0f}" if magnitude >= 1000 else f"{value:.3g}" if magnitude < 10 else f"{value:.1f}"
    return f"{text} {unit}"


def _where(location: Location) -> str:
    return f"{location.host}/{location.device}"


def judge_measurement(expectation: Expectation, measurement: Measurement) -> Check:
    """PASS at or beyond the warn threshold, WARN between it and the fail threshold, else FAIL."""
    observed = measurement.value
    if expectation.better is Better.HIGHER:
        failing = observed < expectation.fail_threshold
        warning = observed < expectation.warn_threshold
        relation = "<"
    else:
        failing = observed > expectation.fail_threshold
        warning = observed > expectation.warn_threshold
        relation = ">"
    verdict = Verdict.FAIL if failing else Verdict.WARN if warning else Verdict.PASS
    threshold = expectation.fail_threshold if failing else expectation.warn_threshold
    if verdict is Verdict.PASS:
        message = f"{format_value(observed, expectation.unit)} meets target {format_value(expectation.target, expectation.unit)}"
        if expectation.tolerance:
            message += f" (tolerance {expectation.tolerance:.0%})"
    else:
        band = "fail threshold" if failing else "warning threshold"
        message = (
            f"{format_value(observed, expectation.unit)} {relation} {band} {format_value(threshold, expectation.unit)}"
            f" (target {format_value(expectation.target, expectation.unit)}, {expectation.provenance.value}:"
            f" {expectation.source})"
        )
    return Check(
        metric=measurement.metric,
        params=dict(measurement.params),
        verdict=verdict,
        observed=observed,
        target=expectation.target,
        unit=expectation.unit,
        provenance=expectation.provenance.value,
        source=expectation.source,
        message=message,
        better=expectation.better,
        location=measurement.location,
    )


def judged_measurements(expectation: Expectation, measurements: list[Measurement]) -> list[Measurement]:
    """The measurements `expectation` is judged on.

    A sweep yields one figure per message size; an expectation that names no size speaks of the
    sweep's largest, where a fabric reaches its bus bandwidth (the metric's `judged_at_max` param).
    """
    matching = [m for m in measurements if expectation.matches(m.metric, m.params)]
    sweep_param = METRICS[expectation.metric].judged_at_max
    if not matching or sweep_param is None or sweep_param in expectation.params:
        return matching
    largest = max(m.params.get(sweep_param, 0) for m in matching)
    return [m for m in matching if m.params.get(sweep_param, 0) == largest]


def aggregate_ranks(measurements: list[Measurement]) -> list[Measurement]:
    """The job's figure from ranks that measured at the same time, per metric and params: one
    Measurement per group measured by at least two ranks, its samples the ranks' figures."""
    groups: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.metric, tuple(sorted((k, str(v)) for k, v in m.params.items()))), []).append(m)
    combined = []
    for group in groups.values():
        rule = METRICS[group[0].metric].aggregate
        ranks = len({m.location.rank for m in group})
        if rule is None or ranks < 2:
            continue
        values = [m.value for m in group]
        value = {"sum": sum(values), "max": max(values), "n_min": ranks * min(values)}[rule]
        first = group[0]
        combined.append(
            Measurement(
                metric=first.metric,
                value=value,
                unit=first.unit,
                params={**first.params, "ranks": ranks},
                location=Location(host="*", rank=-1, device=f"aggregate of {ranks} ranks"),
                samples=values,
                details={"rule": rule, "by_rank": {f"{m.location.host}/{m.location.rank}": m.value for m in group}},
            )
        )
    return combined


def judge_exact(measurement: Measurement) -> Check:
    """A count of errors (wrong elements, failed verifications) passes only at zero."""
    wrong = measurement.value
    return Check(
        metric=measurement.metric,
        params=dict(measurement.params),
        verdict=Verdict.PASS if wrong == 0 else Verdict.FAIL,
        observed=wrong,
        target=0.0,
        unit=measurement.unit,
        provenance=Provenance.RULE.value,
        source="results must be exact: a wrong element is silent data corruption (nccl-tests #wrong)",
        message="no wrong elements" if wrong == 0 else f"{wrong:g} wrong elements: the collective corrupted data",
        better=Better.LOWER,
        location=measurement.location,
    )


def not_measured(
    expectation: Expectation, scope: Scope, reason: str, location: Location | None, *, blocking: bool = True
) -> Check:
    """A required expectation that was not measured fails (`blocking`); an optional one is reported."""
    prefix = "required, " if expectation.required else ""
    return Check(
        metric=expectation.metric,
        params={**scope.params, **expectation.params},
        verdict=Verdict.NOT_MEASURED,
        observed=None,
        target=expectation.target,
        unit=expectation.unit,
        provenance=expectation.provenance.value,
        source=expectation.source,
        message=f"not measured ({prefix}{reason})",
        better=expectation.better,
        location=location,
        blocking=expectation.required and blocking,
    )


MIN_PEERS = 2  # with one peer there is no telling which of the two is the slow one


def _leave_one_out_medians(values: list[float]) -> list[float]:
    """For each value, the median of all the others: one sort, then an index per value (a fresh
    median per value would be quadratic, 20 s per test at 8,192 ranks)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranked = [values[i] for i in order]
    position = {index: rank for rank, index in enumerate(order)}
    rest = len(values) - 1

    def without(rank: int, k: int) -> float:  # the k-th smallest once the value at `rank` is gone
        return ranked[k] if k < rank else ranked[k + 1]

    medians = []
    for index in range(len(values)):
        rank = position[index]
        middle = rest // 2
        if rest % 2:
            medians.append(without(rank, middle))
        else:
            medians.append((without(rank, middle - 1) + without(rank, middle)) / 2)
    return medians


def judge_peers(measurements: list[Measurement], tolerance: float, better: Better) -> list[Check]:
    """Name each device that falls behind the median of its peers by more than `tolerance`.

    This needs no profile figure: on a node of eight identical GPUs the slow one is visible from the
    other seven alone. It needs at least MIN_PEERS peers, and distinct devices: several ranks that
    share one CPU measure the same hardware, so comparing them would blame noise.
    """
    devices = {(m.location.host, m.location.device) for m in measurements}
    if len(measurements) < MIN_PEERS + 1 or len(devices) < len(measurements):
        return []
    checks = []
    peer_medians = _leave_one_out_medians([m.value for m in measurements])
    peers = range(len(measurements) - 1)  # only its length is named below
    for measurement, peer_median in zip(measurements, peer_medians):
        gap = (measurement.value - peer_median) / peer_median if peer_median else 0.0
        shortfall = -gap if better is Better.HIGHER else gap  # positive when worse than the peers
        behind = shortfall > tolerance
        relation = "behind" if shortfall > 0 else "ahead of"
        message = (
            f"{_where(measurement.location)} at {format_value(measurement.value, measurement.unit)} is "
            f"{abs(gap):.1%} {relation} the median {format_value(peer_median, measurement.unit)} of its "
            f"{len(peers)} peers (outlier beyond {tolerance:.0%})"
        )
        checks.append(
            Check(
                metric=measurement.metric,
                params=dict(measurement.params),
                verdict=Verdict.FAIL if behind else Verdict.PASS,
                observed=measurement.value,
                target=peer_median,
                unit=measurement.unit,
                provenance=Provenance.PEERS.value,
                source=f"median of {len(peers)} peer devices in this run, outlier_tolerance {tolerance:.0%}",
                message=message,
                better=better,
                location=measurement.location,
            )
        )
    return checks
