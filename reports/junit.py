"""Test figures as JUnit XML properties, and the run's verdict as the test suite's.

Where a test's figures go depends on the junit_family in force. pytest's default, xunit2, follows
the Jenkins xUnit schema (junit-10.xsd), which allows <properties> only in <testsuite>: there each
test's pairs become suite properties named `NODEID::NAME`. Under xunit1/legacy, which allow
<properties> in <testcase>, they stay on the test case (what pytest's record_property does).
The run's own verdict, its note and its counts always go on <testsuite>.
"""

from __future__ import annotations

from clusterbench.model import Check, Measurement
from clusterbench.results import RunResults

TESTCASE_PROPERTY_FAMILIES = ("xunit1", "legacy")


def testcase_properties_allowed(junit_family: str) -> bool:
    """Whether this junit_family's schema lets <testcase> hold <properties> (xunit2's does not)."""
    return junit_family in TESTCASE_PROPERTY_FAMILIES


def as_suite_properties(nodeid: str, properties: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A test's pairs as <testsuite> properties, each name led by the test's node id."""
    return [(f"{nodeid}::{name}", value) for name, value in properties]


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
        caveat = m.caveat
        if caveat:  # a RAM figure must not read as a disk figure in CI either
            properties.append((f"{prefix}.caveat", caveat))
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
            (f"{prefix}.message", c.message),  # carries the figure's caveat, where it has one
        ]
    return properties


def junit_run_properties(results: RunResults) -> list[tuple[str, str]]:
    """The run's verdict, what it rests on, and the same counts as the other reports."""
    properties = [("clusterbench.verdict", results.verdict), ("clusterbench.verdict_note", results.verdict_note())]
    properties += [(f"clusterbench.tests.{label.replace(' ', '_')}", str(n)) for label,
                   n in results.test_counts().items()]
    properties += [(f"clusterbench.checks.{v.replace(' ', '_')}", str(n)) for v, n in results.counts().items()]
    return properties
