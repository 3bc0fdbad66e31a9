"""pytest glue: options, the `acceptance` fixture, verdicts as test outcomes, and the reports.

Kept thin on purpose: probes measure, the judge judges, reports render; this module only connects
them to pytest's collection, outcomes and terminal.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from clusterbench.acceptance import AcceptanceRun, AcceptanceTest, CoverageItem
from clusterbench.catalog import resolve_cluster
from clusterbench.errors import ClusterbenchError
from clusterbench.metrics import FAMILIES
from clusterbench.reports.terminal import render_summary
from clusterbench.results import TestOutcome
from clusterbench.reports.junit import junit_properties

log = logging.getLogger("clusterbench")

RUN_KEY = pytest.StashKey[AcceptanceRun]()
DESELECTED_KEY = pytest.StashKey[int]()
DEFAULT_REPORT_DIR = "clusterbench-report"
FIXTURE = "acceptance"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("clusterbench", "cluster acceptance")
    group.addoption(
        "--cluster",
        default="local",
        metavar="NAME|PATH",
        help="cluster profile: a name in the profiles folder, a path to a .toml file, or 'local' "
        "(built in: derived from this machine). Default: local.",
    )
    group.addoption(
        "--profiles-dir",
        default=None,
        metavar="DIR",
        help="folder of cluster profiles (default: clusters/ under the rootdir)",
    )
    group.addoption(
        "--report-dir",
        default=DEFAULT_REPORT_DIR,
        metavar="DIR",
        help=f"where results.json and the reports are written (default: {DEFAULT_REPORT_DIR}/)",
    )
    group.addoption("--quick", action="store_true", default=False, help="shorten every sweep")


def pytest_configure(config: pytest.Config) -> None:
    for family in FAMILIES:
        config.addinivalue_line("markers", f"{family}: clusterbench {family} probes")


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        config = items[0].config
        config.stash[DESELECTED_KEY] = config.stash.get(DESELECTED_KEY, 0) + len(items)


def _suite_was_narrowed(config: pytest.Config) -> bool:
    """True when -m, -k, --deselect or explicit test paths ran only part of the acceptance suite."""
    if config.stash.get(DESELECTED_KEY, 0):
        return True
    if config.args_source is not pytest.Config.ArgsSource.ARGS:
        return False
    testpaths = {(config.rootpath / p).resolve() for p in config.getini("testpaths")}
    given = {(config.invocation_params.dir / arg).resolve() for arg in config.args}
    return not given <= testpaths


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """After -m/-k selection: load the profile if any acceptance test is left, and add the coverage item."""
    acceptance_items = [item for item in items if FIXTURE in getattr(item, "fixturenames", ())]
    if not acceptance_items:
        return
    profiles_dir = Path(config.getoption("profiles_dir") or config.rootpath / "clusters")
    try:
        profile = resolve_cluster(config.getoption("cluster"), profiles_dir)
    except ClusterbenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    run = AcceptanceRun.start(
        profile=profile,
        report_dir=Path(config.getoption("report_dir")),
        quick=config.getoption("quick"),
        narrowed=_suite_was_narrowed(config),
        command_line=list(config.invocation_params.args),
    )
    config.stash[RUN_KEY] = run
    items.append(CoverageItem.from_parent(session, name="clusterbench-required-expectations", run=run))


@pytest.fixture
def acceptance(request: pytest.FixtureRequest) -> AcceptanceTest:
    """The handle an acceptance test measures and judges through."""
    run = request.config.stash.get(RUN_KEY, None)
    if run is None:  # collected without the plugin's collection hook having run (should not happen)
        pytest.fail("clusterbench: no acceptance run is active", pytrace=False)
    return AcceptanceTest(run, request.node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    run = item.config.stash.get(RUN_KEY, None)
    if run is None or report.when != "call" and not (report.when == "setup" and not report.passed):
        return report
    test = run.test_record(item.nodeid)
    verdict = test.verdict_for(report.outcome)
    report.clusterbench_verdict = verdict  # read by pytest_report_teststatus
    item.user_properties.extend(junit_properties(verdict, test.measurements, test.checks))
    report.user_properties = list(item.user_properties)
    message = report.longreprtext.strip().splitlines()[-1] if report.failed and report.longreprtext else ""
    if report.skipped and isinstance(report.longrepr, tuple):
        message = report.longrepr[2]
    run.finish_test(TestOutcome(item.nodeid, verdict, report.outcome, message))
    return report


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    verdict = getattr(report, "clusterbench_verdict", None)
    if report.when == "call" and report.passed and verdict == "WARN":
        return "warn", "W", ("WARN", {"yellow": True})
    if report.when == "call" and report.passed and verdict == "NO EXPECTATION":
        return "no expectation", "n", ("NO EXPECTATION", {"cyan": True})
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = session.config.stash.get(RUN_KEY, None)
    if run is None:
        return
    try:
        run.finish()
    except OSError as exc:
        log.error("clusterbench: could not write the report: %s", exc)
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        return
    terminalreporter.section("clusterbench summary")
    width = terminalreporter._tw.fullwidth
    terminalreporter.write(render_summary(run.results, width=width, color=terminalreporter.hasmarkup))
    for path in run.written:
        terminalreporter.write_line(f"clusterbench: wrote {path}")
