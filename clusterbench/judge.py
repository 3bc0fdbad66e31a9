"""Checks: compare measurements with expectations (or with their peers) and give verdicts.

The judge measures nothing and renders nothing; it only turns data into `Check`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterbench.hostlist import short_name
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
    caveat = measurement.caveat
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


CLUSTER_NODES_METRIC = "cluster.nodes"  # node accounting: the job spans the profile's nodes
CLUSTER_HOSTS_METRIC = "cluster.hosts"  # and every host the profile names


def _named(hosts: list[str], limit: int = 20) -> str:
    shown = ", ".join(hosts[:limit])
    return shown + (f" and {len(hosts) - limit} more" if len(hosts) > limit else "")


def judge_cluster(nodes: int, named_hosts: list[str], seen_hosts: list[str], source: str) -> list[Check]:
    """The job against the profile's [cluster]: FAIL when it spans fewer than `nodes` nodes or misses
    a host of `named_hosts` (naming them), WARN when it ran on hosts the list does not name.

    A 16-node acceptance launched on 15 nodes by mistake must not pass. Hosts are compared by short
    name (Slurm's 'gpu001' is the host's 'gpu001.example.org'). More nodes than `nodes` is no fault:
    a one-node hardware profile (h200-node) is run on many nodes. A profile of one node that names
    no host has nothing to account for (every job spans a node): no check, rather than a PASS of noise.
    """
    if nodes <= 1 and not named_hosts:
        return []
    seen = sorted(set(seen_hosts))
    spans = len(seen)
    if spans < nodes:
        verdict = Verdict.FAIL
        message = f"the job spans {spans} node{'s' if spans != 1 else ''} ({_named(seen)}); the profile's cluster has {nodes}"
    else:
        verdict = Verdict.PASS
        message = f"the job spans {spans} node{'s' if spans != 1 else ''}, the profile's cluster has {nodes}"
    checks = [
        Check(metric=CLUSTER_NODES_METRIC, params={}, verdict=verdict, observed=float(spans), target=float(nodes),
              unit="nodes", provenance=Provenance.SPEC.value, source=source, message=message)
    ]
    if named_hosts:
        seen_short = {short_name(h) for h in seen}
        named_short = {short_name(h) for h in named_hosts}
        missing = [h for h in named_hosts if short_name(h) not in seen_short]
        strangers = [h for h in seen if short_name(h) not in named_short]
        if missing:
            message = f"{len(missing)} of the {len(named_hosts)} hosts the profile names did not join the job: {_named(missing)}"
        else:
            message = f"every one of the {len(named_hosts)} hosts the profile names joined the job"
        checks.append(
            Check(metric=CLUSTER_HOSTS_METRIC, params={}, verdict=Verdict.FAIL if missing else Verdict.PASS,
                  observed=float(len(named_hosts) - len(missing)), target=float(len(named_hosts)), unit="hosts",
                  provenance=Provenance.SPEC.value, source=source, message=message)
        )
        if strangers:
            checks.append(
                Check(metric=CLUSTER_HOSTS_METRIC, params={"outside": "hosts"}, verdict=Verdict.WARN,
                      observed=float(len(strangers)), target=0.0, unit="hosts", provenance=Provenance.SPEC.value,
                      source=source, better=Better.LOWER,
                      message=f"the job ran on {len(strangers)} host{'s' if len(strangers) != 1 else ''} the profile"
                              f" does not name, whose figures are in this run: {_named(strangers)}")
            )
    return checks
