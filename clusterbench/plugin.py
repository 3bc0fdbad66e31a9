"""pytest glue: options, the world, the `acceptance` fixture, agreed outcomes, and the reports.

Kept thin on purpose: probes measure, the judge judges, reports render; this module only connects
them to pytest's collection, test outcomes and terminal.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from clusterbench.acceptance import COVERAGE_ITEM_NAME, AcceptanceRun, AcceptanceTest, CoverageItem, RegressionItem
from clusterbench.catalog import resolve_cluster
from clusterbench.distributed import join_world
from clusterbench.errors import ClusterbenchError
from clusterbench.history.benchmark_json import clusterbench_section
from clusterbench.history.session import REGRESSION_ITEM_NAME, HistoryOptions, check_history, history_options
from clusterbench.metrics import FAMILIES
from clusterbench.options import pytest_addoption  # noqa: F401  (a hook: pytest finds it here)
from clusterbench.reports.atomic import check_writable_directory
from clusterbench.reports.junit import junit_properties
from clusterbench.reports.terminal import render_summary
from clusterbench.results import outcome_label
from clusterbench.world import World, detect_world


RUN_KEY = pytest.StashKey[AcceptanceRun]()
WORLD_KEY = pytest.StashKey[World]()
DESELECTED_KEY = pytest.StashKey[int]()
FIXTURE = "acceptance"


def pytest_configure(config: pytest.Config) -> None:
    for family in FAMILIES:
        config.addinivalue_line("markers", f"{family}: clusterbench {family} probes")
    try:
        world = detect_world()
    except ClusterbenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[WORLD_KEY] = world
    if world.rank != 0:
        report_dir = Path(config.getoption("report_dir"))
        try:
            _send_output_to_rank_log(config, report_dir, world)
        except OSError as exc:
            raise pytest.UsageError(f"--report-dir {report_dir}: cannot write the rank log: {exc.strerror}") from None
    if world.is_distributed:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame) -> None:
    """Launchers stop every rank with SIGTERM when one rank fails (torchrun does, at once).
    Raising KeyboardInterrupt lets pytest end the session normally, so rank 0 still finishes its
    reports with everything measured so far instead of dying mid-write."""
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name} (the launcher ended the job)")


def _send_output_to_rank_log(config: pytest.Config, report_dir: Path, world: World) -> None:
    """Ranks other than 0 stay quiet: their output (and the backend's) goes to a per-rank file.

    pytest's capture manager keeps duplicates of the original stdout/stderr and restores them
    whenever it suspends capturing; those duplicates are pointed at the rank's log file as well,
    or the terminal reporter would still reach the terminal between tests.
    """
    log_dir = report_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_dir / f"rank-{world.rank}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    targets = {1, 2}
    capturing = getattr(config.pluginmanager.getplugin("capturemanager"), "_global_capturing", None)
    for capture in (getattr(capturing, "out", None), getattr(capturing, "err", None)):
        saved = getattr(capture, "targetfd_save", None)
        if isinstance(saved, int):
            targets.add(saved)
    for fd in targets:
        os.dup2(log_fd, fd)
    os.close(log_fd)


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
    """After -m/-k selection: load the profile, join the world, and add the coverage item."""
    acceptance_items = [item for item in items if FIXTURE in getattr(item, "fixturenames", ())]
    if not acceptance_items:
        return
    profiles_dir = Path(config.getoption("profiles_dir") or config.rootpath / "clusters")
    try:
        profile = resolve_cluster(config.getoption("cluster"), profiles_dir)
        history = history_options(config.getoption)
        exchange = join_world(config.stash[WORLD_KEY], profile.settings.collective_timeout_s)
        # Before measuring, on every rank: a report directory or history file that rank 0 cannot
        # write fails the run now, not after hours of measuring.
        report_dir = Path(config.getoption("report_dir"))
        exchange.agree_to_start(_start_problem(report_dir, history) if config.stash[WORLD_KEY].rank == 0 else None)
    except ClusterbenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    run = AcceptanceRun.start(
        profile=profile,
        exchange=exchange,
        report_dir=report_dir,
        quick=config.getoption("quick"),
        narrowed=_suite_was_narrowed(config),
        command_line=list(config.invocation_params.args),
        storage_targets=tuple(config.getoption("storage_target") or ()),
        history=history,
    )
    config.stash[RUN_KEY] = run
    items.append(CoverageItem.from_parent(session, name=COVERAGE_ITEM_NAME))
    if history.compare is not None:
        items.append(RegressionItem.from_parent(session, name=REGRESSION_ITEM_NAME))


def _start_problem(report_dir: Path, history: HistoryOptions) -> str | None:
    """What stops rank 0 from keeping this run's results, found before anything is measured."""
    try:
        check_writable_directory(report_dir, "--report-dir")
        check_history(history)
    except ClusterbenchError as exc:
        return str(exc)
    return None


@pytest.fixture
def acceptance(request: pytest.FixtureRequest) -> AcceptanceTest:
    """The handle an acceptance test measures through."""
    return AcceptanceTest(request.config.stash[RUN_KEY], request.node)


def _is_acceptance_item(item: pytest.Item) -> bool:
    return isinstance(item, CoverageItem) or FIXTURE in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """Once a rank has gone missing, a test's body would only wait out another deadline in its
    collectives: it is not run, and fails on every surviving rank as its settling says anyway."""
    run = item.config.stash.get(RUN_KEY, None)
    broken = getattr(run.exchange, "broken", None) if run is not None else None
    if broken and _is_acceptance_item(item):
        pytest.fail(f"not run: {broken}", pytrace=False)


def _local_message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return report.longrepr[2]
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None:
            return crash.message.splitlines()[0]
        lines = report.longreprtext.strip().splitlines()
        return lines[-1] if lines else "failed"
    return ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Settle each acceptance test once across all ranks and make the report say what was agreed.

    The settling point is the call phase, or the setup phase when setup did not pass (then there is
    no call phase), so that every rank settles every test exactly once and in the same order.
    """
    report = yield
    run = item.config.stash.get(RUN_KEY, None)
    settles_now = report.when == "call" or (report.when == "setup" and not report.passed)
    if run is None or not settles_now or not _is_acceptance_item(item):
        return report
    decision = run.settle(item.nodeid, report.outcome, _local_message(report))
    if decision.outcome != report.outcome or decision.message != _local_message(report):
        report.outcome = decision.outcome
        if decision.outcome == "skipped":
            report.longrepr = (str(item.path), item.location[1] or 0, decision.message)
        elif decision.outcome == "failed":
            report.longrepr = decision.message
    report.clusterbench_verdict = decision.verdict  # read by pytest_report_teststatus
    record = run.test_record(item.nodeid)
    item.user_properties.extend(junit_properties(decision.verdict, record.all_measurements, record.checks))
    report.user_properties = list(item.user_properties)
    return report


# How pytest's terminal shows the outcomes clusterbench adds to its own (letter, word and colour).
_TERMINAL_LOOK = {"warn": ("W", ("WARN", {"yellow": True})), "no expectation": ("n", ("NO EXPECTATION", {"cyan": True}))}


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    verdict = getattr(report, "clusterbench_verdict", None)
    label = outcome_label(report.outcome, verdict) if report.when == "call" else None
    if label in _TERMINAL_LOOK:
        letter, word = _TERMINAL_LOOK[label]
        return label, letter, word
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = session.config.stash.get(RUN_KEY, None)
    if run is None:
        return
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        run.results.run.interrupted = "the session was interrupted before every test ran"
    run.finish()
    if run.write_error or run.history_error:
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is not None:
        run.exchange.leave()  # after the terminal summary: rank 0's output is complete by now


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None or not run.is_reporter:
        return
    for table in run.tables:
        terminalreporter.write(table.rstrip() + "\n\n")
    terminalreporter.section("clusterbench summary")
    width = terminalreporter._tw.fullwidth
    terminalreporter.write(render_summary(run.results, width=width, color=terminalreporter.hasmarkup))
    for path in run.written:
        terminalreporter.write_line(f"clusterbench: wrote {path}")
    if run.write_error:
        terminalreporter.write_line(f"clusterbench: ERROR: {run.write_error}", red=True)
    for note in run.history_notes:
        terminalreporter.write_line(f"clusterbench: {note}")
    if run.history_error:
        terminalreporter.write_line(f"clusterbench: ERROR: {run.history_error}", red=True)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    """pytest-benchmark's --benchmark-json: our figures go beside its timings, with units and
    directions, under "clusterbench" (see clusterbench/history/benchmark_json.py for why not inside)."""
    run = config.stash.get(RUN_KEY, None)
    if run is not None and run.is_reporter:
        output_json["clusterbench"] = clusterbench_section(run.results)
