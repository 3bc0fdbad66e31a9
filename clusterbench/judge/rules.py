"""A figure judged by a rule that holds whatever the profile says (provenance "rule"): a count that
must be zero, the loss that must fall, an Xid whose remedy is a reset."""

from __future__ import annotations

from clusterbench.model import Better, Check, Location, Measurement, ParamValue, Provenance, Verdict


def rule_check(
    figure: Measurement,
    verdict: Verdict,
    *,
    source: str,
    message: str,
    target: float | None = 0.0,
    better: Better = Better.LOWER,
    observed: float | None = None,
    params: dict[str, ParamValue] | None = None,
    location: Location | None = None,
) -> Check:
    """`figure` against its rule: its own metric, unit, params and location unless told otherwise."""
    return Check(
        metric=figure.metric,
        params=dict(figure.params) if params is None else params,
        verdict=verdict,
        observed=figure.value if observed is None else observed,
        target=target,
        unit=figure.unit,
        provenance=Provenance.RULE.value,
        source=source,
        message=message,
        better=better,
        location=figure.location if location is None else location,
    )
