"""What every report says first, computed once for the HTML report and the Markdown summary: the
verdict, the run's facts, the problems worst first, who is to blame, and the evidence.

Plain data only; escaping is the renderers' job (jinja2 autoescaping, Markdown escaping).
"""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from clusterbench.judge import Scope, format_value
from clusterbench.model import Check, Verdict
from clusterbench.profile import Settings
from clusterbench.reports.stragglers import (
    Straggler,
    find_stragglers,
    is_job_level,
    per_rank_measurements,
)
from clusterbench.results import RunResults
from clusterbench.runinfo import redact_environment

# Problems ordered worst first: a failure, then a required figure that is missing, then a warning.
_PROBLEM_ORDER = {Verdict.FAIL: 0, Verdict.NOT_MEASURED: 1, Verdict.WARN: 2}


@dataclass(frozen=True)
class CheckRow:
    """One check as every report shows it."""

    verdict: str
    metric: str
    params: str
    where: str
    observed: str
    target: str
    margin: str
    provenance: str
    source: str
    message: str
    blocking: bool

    @classmethod
    def of(cls, check: Check) -> CheckRow:
        where = "-" if check.location is None else f"{check.location.host}/{check.location.device}"
        return cls(
            verdict=check.verdict.value,
            metric=check.metric,
            params=", ".join(f"{k}={v}" for k, v in sorted(check.params.items())),
            where=where,
            observed=format_value(check.observed, check.unit),
            target=format_value(check.target, check.unit),
            margin="-" if check.margin is None else f"{check.margin:+.1%}",
            provenance=check.provenance,
            source=check.source,
            message=check.message,
            blocking=check.blocking,
        )


@dataclass
class Blame:
    """A host (node or link end) that failed or warned checks, or straggled."""

    host: str
    devices: set[str] = field(default_factory=set)
    failed: Counter = field(default_factory=Counter)  # metric label -> failed or missing checks
    warned: Counter = field(default_factory=Counter)
    straggled: Counter = field(default_factory=Counter)

    @property
    def weight(self) -> tuple[int, int, int]:
        return sum(self.failed.values()), sum(self.straggled.values()), sum(self.warned.values())

    def summary(self, limit: int = 4) -> str:
        parts = []
        for label, counter in (("failed", self.failed), ("straggling", self.straggled), ("warned", self.warned)):
            if counter:
                named = ", ".join(f"{metric} x{n}" if n > 1 else metric for metric, n in counter.most_common(limit))
                more = f" +{len(counter) - limit} more" if len(counter) > limit else ""
                parts.append(f"{label}: {named}{more}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Caveat:
    """One caveat and the figures that carry it: a tmpfs target's figures are memory's, not a disk's."""

    text: str
    figures: list[str]  # figure labels (metric[params]), at most MAX_CAVEAT_FIGURES
    figures_left_out: int
    locations: int  # how many (host, device) places measured them


MAX_CAVEAT_FIGURES = 12


def caveats(results: RunResults) -> list[Caveat]:
    """Every caveat of the run's figures, once each, with the figures it applies to, in the order met."""
    found: dict[str, tuple[dict[str, None], set[tuple[str, str]]]] = {}
    for m in results.measurements:
        text = m.caveat
        if text is None:
            continue
        labels, where = found.setdefault(text, ({}, set()))
        labels[Scope(m.metric, {k: v for k, v in m.params.items() if k != "size_bytes"}).label()] = None
        where.add((m.location.host, m.location.device))
    return [
        Caveat(text, list(labels)[:MAX_CAVEAT_FIGURES], max(0, len(labels) - MAX_CAVEAT_FIGURES), len(where))
        for text, (labels, where) in found.items()
    ]


@dataclass(frozen=True)
class BadNode:
    """A node to take out of service until someone looks at it: it failed checks or was blamed."""

    host: str
    why: str


def bad_nodes(blamed: list[Blame]) -> list[BadNode]:
    """Every host that failed checks or straggled, worst first, with why. A host that only warned is
    not one: a warning is the band above the fail threshold, not a reason to take a node away."""
    return [BadNode(b.host, b.summary()) for b in blamed if b.failed or b.straggled]


@dataclass
class Evidence:
    """What lets a buyer tell the figures were not edited after the run."""

    toolkit_version: str
    command_line: str
    results_path: str | None
    results_sha256: str | None
    profile_name: str
    profile_files: list[dict[str, Any]]  # path, sha256, text
    profile_notes: list[str]
    environment: dict[str, str]


@dataclass
class Overview:
    verdict: str
    verdict_note: str  # what the verdict rests on; says so when no performance figure was judged
    cluster: str
    started_at: str
    finished_at: str | None
    interrupted: str | None
    launcher: str
    backend: str | None
    world_size: int
    local_ranks: int | None  # ranks clusterbench started on this host in a world of one process
    nodes_expected: int  # the profile's [cluster] nodes
    hosts: list[str]
    accelerators: list[tuple[str, int]]  # (name, count) across the nodes the run saw
    versions: dict[str, str | None]
    counts: dict[str, int]  # checks by verdict
    tests: dict[str, int]  # RunResults.test_counts(): tests as pytest's last line counts them
    problems: list[CheckRow]  # FAIL, NOT MEASURED that blocks, WARN: worst first
    failed_tests: list[tuple[str, str]]  # (test, message) of tests that failed other than by a check
    blamed: list[Blame]
    stragglers: list[Straggler]
    outlier_tolerance: float
    evidence: Evidence
    caveats: list[Caveat] = field(default_factory=list)
    bad_nodes: list[BadNode] = field(default_factory=list)

    @property
    def tests_total(self) -> int:
        return sum(self.tests.values())

    @property
    def world_text(self) -> str:
        return describe_world(self.world_size, self.local_ranks)

    @property
    def nodes_text(self) -> str:
        return describe_nodes(len(self.hosts), self.nodes_expected)


def describe_world(world_size: int, local_ranks: int | None) -> str:
    """The world size, and the local ranks that ran beside it in a world of one process."""
    text = f"world size {world_size}"
    if local_ranks and local_ranks != world_size:
        text += f" (collectives and training on {local_ranks} local ranks started by clusterbench)"
    return text


def describe_nodes(spans: int, expected: int) -> str:
    if spans < expected:
        return f"{spans} of {expected} nodes"
    return f"{spans} node{'s' if spans != 1 else ''} (profile: {expected})"


def expected_nodes(results: RunResults) -> int:
    """The profile's [cluster] nodes as recorded in results.json (1 where it is not)."""
    profile = results.run.profile if isinstance(results.run.profile, dict) else {}
    return int((profile.get("cluster") or {}).get("nodes") or 1)


def outlier_tolerance(results: RunResults) -> float:
    """The profile's outlier_tolerance as recorded in results.json (the default where it is not)."""
    settings = results.run.profile.get("settings") or {}
    return float(settings.get("outlier_tolerance", Settings().outlier_tolerance))


def _accelerators(results: RunResults) -> list[tuple[str, int]]:
    """Accelerator names and counts from the node inventories, else from rank 0's own devices."""
    names: Counter = Counter()
    for node in results.run.inventory.values():
        gpus = ((node or {}).get("gpu") or {}).get("gpus") or []
        names.update(gpu.get("name") or "unknown GPU" for gpu in gpus)
    if not names:
        names.update(d.get("name") or d.get("kind") or "unknown" for d in results.run.devices)
        if names and len(results.run.hosts) > 1:
            return [(f"{name} (rank 0's node)", n) for name, n in names.most_common()]
    return names.most_common()


def _is_problem(check: Check) -> bool:
    return check.verdict in (Verdict.FAIL, Verdict.WARN) or check.blocking


def problem_checks(checks: list[Check]) -> list[Check]:
    """Failed, blocking not-measured and warned checks, worst first (then largest miss first)."""
    problems = [c for c in checks if _is_problem(c)]
    return sorted(problems, key=lambda c: (_PROBLEM_ORDER.get(c.verdict, 3), c.margin if c.margin is not None else 0.0))


def _blame(problems: list[Check], stragglers: list[Straggler]) -> list[Blame]:
    blamed: dict[str, Blame] = {}
    for check in problems:
        if check.location is None or is_job_level(check.location):
            continue  # recorded at rank 0's host, but that host is not to blame for the job's figure
        entry = blamed.setdefault(check.location.host, Blame(check.location.host))
        entry.devices.add(check.location.device)
        counter = entry.warned if check.verdict is Verdict.WARN else entry.failed
        counter[Scope(check.metric, check.params).label()] += 1
    for straggler in stragglers:
        entry = blamed.setdefault(straggler.host, Blame(straggler.host))
        entry.devices.add(straggler.device)
        entry.straggled[straggler.label] += 1
    return sorted(blamed.values(), key=lambda b: tuple(-w for w in b.weight) + (b.host,))


def _failed_tests(results: RunResults, problems: list[Check]) -> list[tuple[str, str]]:
    """Tests that failed for a reason no check shows (a crashed probe, a rank that did not arrive);
    a test failed by its checks is already in the problems."""
    explained = {c.test for c in problems if c.blocking}
    return [(t.nodeid, t.message) for t in results.tests if t.outcome == "failed" and t.nodeid not in explained]


def build_overview(results: RunResults, results_path: str | None, results_sha256: str | None) -> Overview:
    run = results.run
    tolerance = outlier_tolerance(results)
    stragglers = find_stragglers(results.measurements + per_rank_measurements(results.measurements), tolerance)
    problems = problem_checks(results.checks)
    blamed = _blame(problems, stragglers)
    profile = run.profile or {}
    evidence = Evidence(
        toolkit_version=str(run.versions.get("clusterbench") or "unknown"),
        command_line=shlex.join(run.command_line),
        results_path=results_path,
        results_sha256=results_sha256,
        profile_name=str(profile.get("name", run.cluster)),
        profile_files=list(profile.get("files", [])),
        profile_notes=[str(n) for n in profile.get("notes", [])],
        # Redacted again here: a results.json from an older version, or edited by hand, may hold secrets.
        environment=redact_environment(run.environment),
    )
    return Overview(
        verdict=results.verdict,
        verdict_note=results.verdict_note(),
        cluster=run.cluster,
        started_at=run.started_at,
        finished_at=run.finished_at,
        interrupted=run.interrupted,
        launcher=run.launcher,
        backend=run.backend,
        world_size=run.world_size,
        local_ranks=run.local_ranks,
        nodes_expected=expected_nodes(results),
        hosts=list(run.hosts),
        accelerators=_accelerators(results),
        versions=dict(run.versions),
        counts=results.counts(),
        tests=results.test_counts(),
        problems=[CheckRow.of(c) for c in problems],
        failed_tests=_failed_tests(results, problems),
        blamed=blamed,
        stragglers=stragglers,
        outlier_tolerance=tolerance,
        evidence=evidence,
        caveats=caveats(results),
        bad_nodes=bad_nodes(blamed),
    )
