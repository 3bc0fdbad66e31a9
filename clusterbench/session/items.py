"""The two items that judge the run as a whole, after every test: coverage and regressions.

Each brings its own checks (TestRecord.run_checks), made by rank 0 when it settles; the items
themselves have nothing to run. Their checks settle like any test's, so a blocking one fails the
pytest run itself, on every rank.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from clusterbench.history.session import HistorySession
from clusterbench.judge import Scope, judge_cluster, not_measured
from clusterbench.metrics import METRICS
from clusterbench.model import Check
from clusterbench.results import RunResults
from clusterbench.session.context import RunContext
from clusterbench.session.settle import Settler

COVERAGE_ITEM_NAME = "clusterbench-required-expectations"
REGRESSION_ITEM_NAME = "clusterbench-regressions"


class CoverageItem(pytest.Item):
    """A final item that fails when a required expectation of the profile was measured by no test.

    Without it, an expectation on a metric that no test measures (or a mistyped param value) would
    never be judged, and the run would pass without the figure it exists to prove.
    """

    def runtest(self) -> None:
        pass

    def reportinfo(self):
        return self.path, None, "the job spans the profile's nodes and every required expectation was measured"


class RegressionItem(CoverageItem):
    """A final item that fails on a blocking regression against the run history (--compare)."""

    def reportinfo(self):
        return self.path, None, "no figure regressed against the run history"


def coverage_checks(context: RunContext, accounted: set[int]) -> list[Check]:
    """The job against the profile's nodes and hosts (whatever -m/-k selected: a run on too few
    nodes is never the cluster's acceptance), then NOT MEASURED for every expectation no test
    covered; blocking unless the run was narrowed."""
    profile = context.profile
    cluster = profile.cluster
    stated = f"[cluster] nodes = {cluster.nodes}" + (f', hosts = "{cluster.hosts}"' if cluster.hosts else "")
    where = f" ({profile.files[0].path})" if profile.files else ""
    checks = judge_cluster(cluster.nodes, cluster.host_names(), list(context.exchange.hosts.values()), stated + where)
    for index, expectation in enumerate(profile.expectations):
        if index in accounted:
            continue
        scope = Scope(expectation.metric, dict(expectation.params))
        if context.narrowed:
            family = METRICS[expectation.metric].family
            reason = f"outside this run's selection ({family} tests were narrowed by -m/-k or paths)"
        else:
            reason = f"no test in this run measures {scope.label()}"
        checks.append(not_measured(expectation, scope, reason, None, blocking=not context.narrowed))
    return checks


def final_items(
    session: pytest.Session, settler: Settler, history: HistorySession, results: RunResults
) -> list[pytest.Item]:
    """The coverage item, and the regressions item when --compare asks for one, with their checks."""
    coverage = CoverageItem.from_parent(session, name=COVERAGE_ITEM_NAME)
    items: list[pytest.Item] = [coverage]
    _bring_checks(settler, coverage, lambda: coverage_checks(settler.context, settler.accounted), passes_unjudged=True)
    if history.compares:
        regressions = RegressionItem.from_parent(session, name=REGRESSION_ITEM_NAME)
        _bring_checks(settler, regressions, lambda: history.regression_checks(results), skip_when_unjudged=True)
        items.append(regressions)
    return items


def _bring_checks(settler: Settler, item: pytest.Item, checks: Callable[[], list[Check]], **flags: bool) -> None:
    record = settler.record(item.nodeid)
    record.run_checks = checks
    for name, value in flags.items():
        setattr(record, name, value)
