"""Test figures as JUnit XML properties.

pytest's `record_property` fixture warns under the default xunit2 family, so the plugin appends these
pairs to the item's `user_properties` itself; junitxml writes them as <property> elements.
"""

from __future__ import annotations

from clusterbench.model import Check, Measurement


def junit_properties(verdict: str, measurements: list[Measurement], checks: list[Check]) -> list[tuple[str, str]]:
    properties = [("verdict", verdict)]
    for i, m in enumerate(measurements):
        prefix = f"measurement.{i}"
        properties += [
            (f"{prefix}.metric", m.metric),
            (f"{prefix}.params", ",".join(f"{k}={v}" for k, v in sorted(m.params.items()))),
            (f"{prefix}.where", f"{m.location.host}/{m.location.device}"),
            (f"{prefix}.value", f"{m.value:.6g}"),
            (f"{prefix}.unit", m.unit),
        ]
    for i, c in enumerate(checks):
        prefix = f"check.{i}"
        properties += [
            (f"{prefix}.metric", c.metric),
            (f"{prefix}.verdict", c.verdict.value),
            (f"{prefix}.observed", "" if c.observed is None else f"{c.observed:.6g}"),
            (f"{prefix}.target", "" if c.target is None else f"{c.target:.6g}"),
            (f"{prefix}.unit", c.unit),
            (f"{prefix}.provenance", c.provenance),
            (f"{prefix}.source", c.source),
        ]
    return properties
