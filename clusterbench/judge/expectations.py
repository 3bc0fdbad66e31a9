"""Checks against the profile's expectations: which measurements an expectation judges, and its verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterbench.judge.formatting import format_value
from clusterbench.judge.rules import rule_check
from clusterbench.metrics import METRICS
from clusterbench.model import Better, Check, Expectation, Location, Measurement, ParamValue, Verdict


@dataclass(frozen=True)
class Scope:
    """What one acceptance test set out to measure: a metric, narrowed by some params."""

    metric: str
    params: dict[str, ParamValue] = field(default_factory=dict)

    def label(self) -> str:
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.metric}[{inner}]" if inner else self.metric


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
    caveat = measurement.caveat
    threshold = expectation.fail_threshold if failing else expectation.warn_threshold
    if verdict is Verdict.PASS:
        message = (f"{format_value(observed, expectation.unit)} meets target "
                   f"{format_value(expectation.target, expectation.unit)}")
        if expectation.tolerance:
            message += f" (tolerance {expectation.tolerance:.0%})"
    else:
        band = "fail threshold" if failing else "warning threshold"
        message = (
            f"{format_value(observed, expectation.unit)} {relation} {band} {format_value(threshold, expectation.unit)}"
            f" (target {format_value(expectation.target, expectation.unit)}, {expectation.provenance.value}:"
            f" {expectation.source})"
        )
    if caveat:  # the verdict is only as good as the figure: a tmpfs "disk" figure says so beside it
        message += f"; caveat: {caveat}"
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
        # The job's figure is made of the ranks' figures: it carries every caveat they carried
        # (a tmpfs target on every rank is still memory in the sum).
        caveats = list(dict.fromkeys(c for c in (m.caveat for m in group) if c))
        details: dict = {"rule": rule, "by_rank": {f"{m.location.host}/{m.location.rank}": m.value for m in group}}
        if caveats:
            details["caveat"] = "; ".join(caveats)
        combined.append(
            Measurement(
                metric=first.metric,
                value=value,
                unit=first.unit,
                params={**first.params, "ranks": ranks},
                location=Location(host="*", rank=-1, device=f"aggregate of {ranks} ranks"),
                samples=values,
                details=details,
            )
        )
    return combined


def judge_exact(measurement: Measurement) -> Check:
    """A count of errors (wrong elements, failed verifications) passes only at zero."""
    wrong = measurement.value
    if measurement.metric.endswith(".wrong"):  # a collective's or nccl-tests' #wrong
        source = "results must be exact: a wrong element is silent data corruption (nccl-tests #wrong)"
        message = "no wrong elements" if wrong == 0 else f"{wrong:g} wrong elements: the collective corrupted data"
    else:
        description = METRICS[measurement.metric].description
        source = f"must be 0 whatever the profile says: {description}"
        message = f"none: {description}" if wrong == 0 else f"{wrong:g} {measurement.unit}: {description}"
    return rule_check(measurement, Verdict.PASS if wrong == 0 else Verdict.FAIL, source=source, message=message)


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
