"""An honest verdict in every report (issue 16): no PASS without a judged performance figure, one
set of counts, world size and local ranks, caveats that travel, weak scaling drawn right, bad nodes
listed with the commands that drain them, and trend runs told apart."""

from __future__ import annotations

import html as html_module
import re
from types import SimpleNamespace

import pytest

from clusterbench import results as results_module  # its TestOutcome is no test class for pytest to collect
from clusterbench.judge import aggregate_ranks, judge_cluster, judge_exact, judge_measurement
from clusterbench.model import Better, Expectation, Location, Measurement, Provenance, Verdict
from clusterbench.profile import ClusterInfo, Profile, Settings
from clusterbench.reports import plots
from clusterbench.reports.bad_nodes import BAD_NODES_FILENAME
from clusterbench.reports.html import render_html
from clusterbench.reports.junit import junit_properties, junit_run_properties
from clusterbench.reports.markdown import render_markdown
from clusterbench.reports.overview import build_overview
from clusterbench.reports.render import render_reports
from clusterbench.reports.sections import run_labels
from clusterbench.reports.terminal import render_summary
from clusterbench.results import NO_EXPECTATION, RunInfo, RunResults, TrendPoint
from clusterbench.session.context import RunContext
from clusterbench.session.items import coverage_checks

TMPFS = "tmpfs keeps files in RAM: this figure measures memory, not a disk"
CPU_NOTE = "no accelerator: measuring the CPU (Xeon); no expectation is stated for a CPU"


def _run_info(**overrides) -> RunInfo:
    info = dict(
        cluster="local", profile={"name": "local", "cluster": {"nodes": 1}, "notes": [CPU_NOTE], "expectations": []},
        hosts=["vm"], world_size=1, launcher="local", backend=None, started_at="2026-12-01T08:00:00+00:00",
        command_line=["--cluster=local"], versions={"clusterbench": "0.1.0"}, devices=[{"kind": "cpu", "name": "Xeon"}],
        quick=True, finished_at="2026-12-01T08:02:00+00:00", run_id="20261201T080000Z-abcd",
    )
    info.update(overrides)
    return RunInfo(**info)


def _figure(metric="gemm.tflops", value=0.1, unit="TFLOP/s", params=None, host="vm", device="cpu", rank=0, **details):
    return Measurement(metric, value, unit, dict(params or {"dtype": "fp32"}), Location(host, rank, device),
                       samples=[value], details=details)


def _outcome(nodeid, verdict, outcome):
    return results_module.TestOutcome(nodeid, verdict, outcome, "")


def _cpu_run() -> RunResults:
    """The CPU run of the issue: figures nobody states an expectation for, the collectives' #wrong
    judged by the exactness rule, and tests skipped as NOT MEASURED."""
    wrong = _figure("collective.wrong", 0.0, "count", {"op": "all_reduce", "ranks": 2}, device="2 ranks")
    results = RunResults(run=_run_info(local_ranks=2))
    results.measurements = [_figure(), wrong]
    results.checks = [judge_exact(wrong)]
    results.tests = [
        _outcome("t.py::test_gemm[fp32]", NO_EXPECTATION, "passed"),
        _outcome("t.py::test_exact[all_reduce]", "PASS", "passed"),
        _outcome("t.py::test_gemm[fp8]", "NOT MEASURED", "skipped"),
        _outcome("t.py::test_h2d", "NOT MEASURED", "skipped"),
        _outcome("::clusterbench-required-expectations", NO_EXPECTATION, "passed"),
    ]
    return results


def _documents(results: RunResults) -> dict[str, str]:
    overview = build_overview(results, None, None)
    return {
        "terminal": render_summary(results, width=200, color=False),
        "html": html_module.unescape(render_html(results, overview)),
        "markdown": render_markdown(overview).replace("\\", ""),
    }


def test_a_run_that_judged_only_the_correctness_rules_does_not_say_pass_anywhere():
    results = _cpu_run()
    assert results.verdict == NO_EXPECTATION and results.performance_judged == 0
    note = results.verdict_note()
    assert "only 1 check of correctness rules, peers or health judged" in note
    assert "no performance figure judged" in note
    assert CPU_NOTE in note and "--calibrate" in note and "[[expect]]" in note
    documents = _documents(results)
    assert "verdict: NO EXPECTATION" in documents["terminal"] and "verdict: PASS" not in documents["terminal"]
    assert 'class="verdict big v-no-expectation">NO EXPECTATION<' in documents["html"]
    assert documents["markdown"].startswith("## clusterbench: **NO EXPECTATION** on local")
    for name, text in documents.items():
        assert "no performance figure judged" in " ".join(text.split()), name
    suite = dict(junit_run_properties(results))
    assert suite["clusterbench.verdict"] == NO_EXPECTATION
    assert "no performance figure judged" in suite["clusterbench.verdict_note"]


def test_a_judged_performance_figure_still_passes_and_a_broken_rule_still_fails():
    results = _cpu_run()
    expectation = Expectation("gemm.tflops", 0.05, "TFLOP/s", Better.HIGHER, 0.05, 0.0, Provenance.BASELINE,
                              "last week's run", {"dtype": "fp32"})
    results.checks.append(judge_measurement(expectation, results.measurements[0]))
    assert results.verdict == "PASS"
    assert results.verdict_note() == "1 performance figure judged against expected figures"
    corrupt = _figure("collective.wrong", 3.0, "count", {"op": "all_reduce", "ranks": 2})
    results.checks.append(judge_exact(corrupt))
    assert results.verdict == "FAIL"


def test_one_set_of_counts_in_every_report_that_adds_up_with_pytests():
    """The tests as pytest's last line counts them (passed, no expectation, skipped), beside the checks."""
    results = _cpu_run()
    assert results.test_counts() == {"passed": 1, "no expectation": 2, "skipped": 2}
    documents = _documents(results)
    tally = "(tests: 1 passed · 2 no expectation · 2 skipped; checks: 1 PASS · 0 WARN · 0 NOT MEASURED · 0 FAIL)"
    assert tally in documents["terminal"]
    counts = "tests: 1 passed · 2 no expectation · 2 skipped (5 in all) · checks: 1 PASS · 0 WARN"
    assert counts in documents["markdown"]
    header = re.search(r'<table class="counts".*?</table>', documents["html"], re.S).group(0)
    cells = re.findall(r"<t[hd]>([^<]*)</t[hd]>", header)
    assert cells == ["", "passed", "no expectation", "skipped", "all", "tests", "1", "2", "2", "5"]
    suite = dict(junit_run_properties(results))
    tests = ("passed", "no_expectation", "skipped")
    assert [suite[f"clusterbench.tests.{label}"] for label in tests] == ["1", "2", "2"]


def test_world_size_and_the_local_ranks_beside_it():
    documents = _documents(_cpu_run())
    for name, text in documents.items():
        assert "world size 1 (collectives and training on 2 local ranks started by clusterbench)" in text, name


def _storage_on_tmpfs() -> RunResults:
    results = RunResults(run=_run_info())
    params = {"target": "/dev/shm", "engine": "fio", "ranks": 1}
    figures = [_figure("storage.seqread_gbps", 9.0, "GB/s", params, device="storage /dev/shm", rank=r, caveat=TMPFS)
               for r in (0, 1)]
    results.measurements = figures + aggregate_ranks(figures)
    expectation = Expectation("storage.seqread_gbps", 5.0, "GB/s", Better.HIGHER, 0.05, 0.0, Provenance.CONTRACT,
                              "annex B", {"target": "/dev/shm"})
    results.checks = [judge_measurement(expectation, figures[0])]
    results.tests = [_outcome("t.py::test_storage[storage.seqread_gbps]", "PASS", "passed")]
    return results


def test_a_caveat_travels_with_its_figure_into_every_report_and_junit():
    results = _storage_on_tmpfs()
    job = results.measurements[-1]
    assert job.location.rank < 0 and job.details["caveat"] == TMPFS  # the job's sum is still memory's
    assert results.checks[0].message.endswith(f"; caveat: {TMPFS}")
    for name, text in _documents(results).items():
        assert TMPFS in " ".join(text.split()), name
    properties = dict(junit_properties("PASS", results.measurements, results.checks))
    assert properties["measurement.0.caveat"] == TMPFS and TMPFS in properties["check.0.message"]


def _weak_scaling_run() -> RunResults:
    """The issue's run: 1 rank (span single) at 11.3 ms, 2 ranks (intra-node) at 32.2 ms, which the
    training probe measured at 35% efficiency."""
    results = RunResults(run=_run_info(local_ranks=2))
    base = {"preset": "tiny", "dtype": "fp32", "batch": 8, "seq_len": 64, "parallel": "ddp"}
    for ranks, span, step_ms in ((1, "single", 11.27), (2, "intra-node", 32.2)):
        params = {**base, "ranks": ranks, "span": span}
        where = f"{ranks} ranks {span}"
        results.measurements.append(_figure("train.step_time_ms", step_ms, "ms", params, device=where))
        results.measurements.append(_figure("train.tokens_per_s", 512 * ranks / step_ms * 1e3, "tokens/s", params,
                                            device=where))
        if ranks == 2:
            results.measurements.append(_figure("train.scaling_efficiency", 11.27 / 32.2, "fraction", params,
                                                device=where))
    return results


def _scaling_rows(page: str, metric: str) -> list[list[str]]:
    section = page[page.index(f"<h3><code>{metric}"):]
    table = section[section.index("<tbody>"):section.index("</tbody>")]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]


def _number(text: str) -> float:
    return float(text.split()[0].rstrip("%"))


def test_weak_scaling_ideal_and_efficiency_agree_in_the_table_and_the_plot():
    page = _documents(_weak_scaling_run())["html"]
    rows = _scaling_rows(page, "train.step_time_ms")
    by_ranks = {int(r[0]): r for r in rows}
    value, ideal, efficiency = by_ranks[2][2], by_ranks[2][3], by_ranks[2][4]
    assert (value, ideal, efficiency) == ("32.2 ms", "11.3 ms", "35.0%")  # the ideal of 2 ranks is the 1-rank time
    assert abs(_number(ideal) / _number(value) - _number(efficiency) / 100) < 0.005
    section = page[page.index("<h3><code>train.step_time_ms"):]
    svg = section[section.index("<svg"):section.index("</svg>")]
    assert "35%" in re.findall(r"<text[^>]*>([^<]*)</text>", svg)  # the plot labels the same efficiency
    tokens = {int(r[0]): r for r in _scaling_rows(page, "train.tokens_per_s")}
    assert tokens[2][4] == "35.0%"  # throughput and step time tell one story


def test_the_node_accounting_names_what_is_missing():
    (short,) = judge_cluster(16, [], ["gpu001", "gpu002"], "[cluster] nodes = 16")
    assert short.verdict is Verdict.FAIL and short.blocking
    assert short.message == "the job spans 2 nodes (gpu001, gpu002); the profile's cluster has 16"
    named = [f"gpu{i:03d}" for i in range(1, 17)]
    nodes, hosts = judge_cluster(16, named, [f"gpu{i:03d}.cluster.example" for i in range(1, 16)], "hosts")
    assert nodes.verdict is Verdict.FAIL and hosts.verdict is Verdict.FAIL
    assert hosts.message == "1 of the 16 hosts the profile names did not join the job: gpu016"
    _, all_there, strangers = judge_cluster(2, ["a", "b"], ["a", "b", "c"], "hosts")
    assert all_there.verdict is Verdict.PASS and strangers.verdict is Verdict.WARN and "c" in strangers.message
    (more,) = judge_cluster(1 + 1, [], ["a", "b", "c"], "nodes")  # a one-node profile run on many: no fault
    assert more.verdict is Verdict.PASS
    assert judge_cluster(1, [], ["a"], "nodes") == []


def test_a_run_on_fewer_nodes_than_the_profile_fails_its_coverage_item(tmp_path):
    profile = Profile(ClusterInfo("prod", nodes=2, hosts="vm,gpu002"), Settings(), ())
    context = RunContext(profile, SimpleNamespace(hosts={0: "vm"}), tmp_path, quick=True, narrowed=True)
    checks = coverage_checks(context, accounted=set())
    assert [c.verdict for c in checks] == [Verdict.FAIL, Verdict.FAIL] and all(c.blocking for c in checks)
    assert "did not join the job: gpu002" in checks[1].message and 'hosts = "vm,gpu002"' in checks[0].source


def test_bad_nodes_are_listed_with_why_and_the_commands_to_drain_them(tmp_path):
    results = _cpu_run()
    slow = _figure("gemm.tflops", 500.0, "TFLOP/s", {"dtype": "bf16"}, host="gpu007", device="cuda:3")
    expectation = Expectation("gemm.tflops", 750.0, "TFLOP/s", Better.HIGHER, 0.05, 0.0, Provenance.CONTRACT,
                              "annex B", {"dtype": "bf16"})
    hostile = _figure("gemm.tflops", 1.0, "TFLOP/s", {"dtype": "bf16"}, host="x; rm -rf /", device="cuda:0")
    results.measurements += [slow, hostile]
    results.checks += [judge_measurement(expectation, slow), judge_measurement(expectation, hostile)]
    written = render_reports(results, tmp_path, None)
    assert tmp_path / BAD_NODES_FILENAME in written
    lines = (tmp_path / BAD_NODES_FILENAME).read_text().splitlines()
    assert lines[0].startswith("# clusterbench run 20261201T080000Z-abcd")
    assert "gpu007\tfailed: gemm.tflops[dtype=bf16]" in lines
    assert "x; rm -rf /\tfailed: gemm.tflops[dtype=bf16]" in lines
    summary = (tmp_path / "summary.md").read_text()
    assert ("scontrol update nodename=gpu007 state=drain reason='clusterbench: failed: gemm.tflops[dtype=bf16]'"
            in summary)
    assert "kubectl cordon gpu007" in summary and "never runs them" in summary
    assert "rm -rf" not in summary.split("```sh")[1]  # a host name no node can have gets no command
    page = (tmp_path / "report.html").read_text()
    assert "scontrol update nodename=gpu007 state=drain" in page


def test_a_clean_run_still_writes_an_empty_bad_nodes_list(tmp_path):
    (tmp_path / BAD_NODES_FILENAME).write_text("gpu007\tfrom last night\n")
    render_reports(_cpu_run(), tmp_path, None)
    assert (tmp_path / BAD_NODES_FILENAME).read_text().splitlines()[1:] == ["# none"]


def test_trend_runs_of_one_day_are_told_apart():
    points = [TrendPoint("run-a", "2026-12-01T02:00:05+00:00", 1.0),
              TrendPoint("run-b", "2026-12-01T14:30:00+00:00", 2.0),
              TrendPoint("run-c", "2026-12-01T14:30:40+00:00", 3.0)]
    labels = run_labels(points)
    assert labels == ["2026-12-01 02:00", "2026-12-01 14:30 run-b", "2026-12-01 14:30 run-c"]
    svg = plots.trend("gemm.tflops[dtype=bf16]", "TFLOP/s", labels, [1.0, 2.0, 3.0], 2.5)
    assert set(labels) <= set(re.findall(r"<text[^>]*>([^<]*)</text>", svg))


@pytest.mark.parametrize("draw", ["trend", "scaling", "busbw"])
def test_long_plot_titles_are_wrapped_whole_not_cut(draw):
    title = "train.tokens_per_s[" + ",".join(f"param{i}=value{i}" for i in range(12)) + "]"
    if draw == "trend":
        svg = plots.trend(title, "tokens/s", ["2026-12-01 02:00"], [1.0], None)
    elif draw == "scaling":
        svg = plots.scaling(title, "tokens/s", [(1, 1.0, 1.0, "single", 1.0), (2, 1.5, 2.0, "intra-node", 0.75)], None)
    else:
        svg = plots.busbw_by_size(title, [plots.Line("2 ranks", [(1024.0, 1.0), (2048.0, 2.0)])], [], "GB/s")
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    title_lines = [t for t in texts if "param" in t]
    assert len(title_lines) > 1 and "".join(title_lines).replace(" ", "") == title
    assert max(len(line) for line in title_lines) * plots.TITLE_CHAR_IN <= plots.WIDTH_IN
