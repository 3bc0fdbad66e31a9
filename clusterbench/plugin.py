"""pytest glue: options, the world, the `acceptance` fixture, agreed outcomes, and the reports.

Kept thin on purpose: probes measure, the judge judges, reports render; this module only connects
them to pytest's collection, test outcomes and terminal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import IO

import pytest

from clusterbench import progress
from clusterbench.catalog import profile_search_path, resolve_cluster
from clusterbench.distributed import join_world
from clusterbench.errors import ClusterbenchError
from clusterbench.history.benchmark_json import clusterbench_section
from clusterbench.history.session import HistoryOptions, check_history, history_options
from clusterbench.metrics import FAMILIES
from clusterbench.options import PACKAGED_SUITE_KEY
from clusterbench.reports.atomic import check_writable_directory
from clusterbench.reports.junit import (
    as_suite_properties,
    junit_properties,
    junit_run_properties,
    testcase_properties_allowed,
)
from clusterbench.reports.terminal import render_summary
from clusterbench.results import outcome_label
from clusterbench.session import AcceptanceRun
from clusterbench.session.api import AcceptanceTest
from clusterbench.session.items import CoverageItem, final_items
from clusterbench.world import World, detect_world

RUN_KEY = pytest.StashKey[AcceptanceRun]()
WORLD_KEY = pytest.StashKey[World]()
DESELECTED_KEY = pytest.StashKey[int]()
FIXTURE = "acceptance"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """The options live in clusterbench.options, which the pytest11 entry point loads; where entry
    points are not loaded (PYTEST_DISABLE_PLUGIN_AUTOLOAD, -p clusterbench.plugin) they come from here."""
    from clusterbench import options

    if not pluginmanager.is_registered(options):
        pluginmanager.register(options, "clusterbench")


@pytest.hookimpl(tryfirst=True)  # before junitxml and pytest-benchmark read their options (see below)
def pytest_configure(config: pytest.Config) -> None:
    for family in FAMILIES:
        config.addinivalue_line("markers", f"{family}: clusterbench {family} probes")
    config.addinivalue_line("markers", "after_probes: run after every other test of the run (a window over the run)")
    try:
        world = detect_world()
    except ClusterbenchError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[WORLD_KEY] = world
    if world.rank == 0:
        _keep_real_stdout(config)
    else:
        _leave_shared_files_to_rank_0(config)
        report_dir = Path(config.getoption("report_dir"))
        try:
            _send_output_to_rank_log(config, report_dir, world)
        except OSError as exc:
            raise pytest.UsageError(f"--report-dir {report_dir}: cannot write the rank log: {exc.strerror}") from None
    if world.is_distributed:
        signal.signal(signal.SIGTERM, _interrupt)


REAL_STDOUT_KEY = pytest.StashKey[IO[str]]()


def _keep_real_stdout(config: pytest.Config) -> None:
    """Rank 0 shows sweep progress (clusterbench.progress) on the real stdout: a duplicate of it taken
    now, while pytest's capture is suspended, still reaches the terminal or log while a test's own
    output is captured."""
    # No real stdout (an embedding replaced it): no progress, nothing else lost.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        config.stash[REAL_STDOUT_KEY] = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8",
                                                  errors="replace")


def _install_progress(config: pytest.Config) -> None:
    """Once an acceptance run starts on rank 0: a bar with a TTY, one line per finished step without."""
    stream = config.stash.get(REAL_STDOUT_KEY, None)
    if stream is not None:
        progress.install(progress.ProgressReporter(stream, tty=stream.isatty()))


def _leave_shared_files_to_rank_0(config: pytest.Config) -> None:
    """Files that other programs read (--junitxml, --benchmark-json, --benchmark-save/-autosave)
    are written by rank 0 alone: every rank writing the same path left corrupt or partial files.
    Runs before junitxml's and pytest-benchmark's own pytest_configure, which read these options."""
    config.option.xmlpath = None
    benchmark_json = getattr(config.option, "benchmark_json", None)
    if benchmark_json is not None:
        benchmark_json.close()  # argparse opened it; rank 0 holds the same path open and writes it
        config.option.benchmark_json = None
    for name in ("benchmark_save", "benchmark_autosave"):
        if getattr(config.option, name, None):
            setattr(config.option, name, None)


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
    if config.args_source is not pytest.Config.ArgsSource.ARGS or PACKAGED_SUITE_KEY in config.stash:
        return False  # (the packaged suite and the site's own files, added for a run given no path)
    testpaths = {(config.rootpath / p).resolve() for p in config.getini("testpaths")}
    given = {(config.invocation_params.dir / arg).resolve() for arg in config.args}
    return not given <= testpaths


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """After -m/-k selection: load the profile, join the world, and add the coverage item."""
    acceptance_items = [item for item in items if FIXTURE in getattr(item, "fixturenames", ())]
    if not acceptance_items:
        return
    profile_folders = profile_search_path(
        config.getoption("profiles_dir"), invocation_dir=config.invocation_params.dir, rootdir=config.rootpath
    )
    try:
        profile = resolve_cluster(config.getoption("cluster"), profile_folders)
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
    if run.is_reporter:
        _install_progress(config)
    # Tests that read what the whole run did to the nodes (error counters) go last; a stable sort
    # keeps every other test in pytest's order.
    items.sort(key=lambda item: item.get_closest_marker("after_probes") is not None)
    added = final_items(session, run.settler, run.history, run.results)
    items.extend(added)
    # Reported as collected, so that pytest's "collected N items" counts the tests its last line
    # counts (the terminal counts collect reports, not the final item list).
    config.hook.pytest_collectreport(report=pytest.CollectReport(session.nodeid, "passed", None, list(added)))


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
    properties = junit_properties(decision.verdict, record.all_measurements, record.checks)
    if testcase_properties_allowed(item.config.getini("junit_family")):
        item.user_properties.extend(properties)
        report.user_properties = list(item.user_properties)
    elif run.is_reporter:
        _record_junit_run(item.config, as_suite_properties(item.nodeid, properties))
    return report


# How pytest's terminal shows the outcomes clusterbench adds to its own (letter, word and colour).
_TERMINAL_LOOK = {"warn": ("W", ("WARN", {"yellow": True})),
                  "no expectation": ("n", ("NO EXPECTATION", {"cyan": True}))}


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
    if run.is_reporter:
        _record_junit_run(session.config, junit_run_properties(run.results))
    if run.recorder.write_error or run.history_error:
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR


def _record_junit_run(config: pytest.Config, properties: list[tuple[str, str]]) -> None:
    """Pairs as <testsuite> properties of --junitxml (what pytest's record_testsuite_property
    fixture does), written by junitxml at the end of the session."""
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    if xml is not None:
        for name, value in properties:
            xml.add_global_property(name, value)


TABLES_SHOWN_KEY = pytest.StashKey[int]()


def _show_new_tables(config: pytest.Config) -> None:
    """Print the nccl-tests style tables a test produced as soon as it ends (rank 0 only), so a long
    network phase shows each sweep's table when that sweep is done, not all of them at the end."""
    run = config.stash.get(RUN_KEY, None)
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if run is None or not run.is_reporter or terminal is None:
        return
    reporter = progress.current()
    if reporter is not None:
        reporter.close()  # a bar still on screen goes before the table
    shown = config.stash.get(TABLES_SHOWN_KEY, 0)
    tables = run.recorder.tables
    if len(tables) > shown:
        terminal.ensure_newline()
        for table in tables[shown:]:
            terminal.write(table.rstrip() + "\n\n")
        config.stash[TABLES_SHOWN_KEY] = len(tables)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    """Once a test's phases are done (outside their output capture), show the tables it produced."""
    result = yield
    _show_new_tables(item.config)
    return result


def pytest_unconfigure(config: pytest.Config) -> None:
    reporter = progress.current()
    if reporter is not None:
        progress.install(None)
        reporter.close()
    stream = config.stash.get(REAL_STDOUT_KEY, None)
    if stream is not None:
        stream.close()
    run = config.stash.get(RUN_KEY, None)
    if run is not None:
        run.exchange.leave()  # after the terminal summary: rank 0's output is complete by now


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None or not run.is_reporter:
        return
    _show_new_tables(config)  # any not shown yet (a test interrupted before its teardown)
    terminalreporter.section("clusterbench summary")
    # In a terminal, its width; in a CI log (no TTY), none: the tables stay whole, nothing is cut at 80 columns.
    width = terminalreporter._tw.fullwidth if terminalreporter.isatty else None
    terminalreporter.write(render_summary(run.results, width=width, color=terminalreporter.hasmarkup))
    for path in run.recorder.written:
        terminalreporter.write_line(f"clusterbench: wrote {path}")
    if run.recorder.write_error:
        terminalreporter.write_line(f"clusterbench: ERROR: {run.recorder.write_error}", red=True)
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
