"""report.html and summary.md rendered from recorded and synthetic runs: every section and plot is
there, stragglers and problems come first, hostile names stay text, evidence matches the files, and
a run of thousands of devices still gives a bounded page."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from clusterbench import results as results_module  # its TestOutcome is no test class for pytest to collect
from clusterbench.reports import atomic as atomic_module
from clusterbench.reports import render as render_module
from clusterbench.reports.command import load_results
from clusterbench.reports.overview import build_overview
from clusterbench.reports.render import ReportError, render_reports
from clusterbench.reports.results_json import write_results_json
from clusterbench.results import NO_EXPECTATION, RunResults
from synthetic_run import (
    HOSTILE_CLUSTER,
    HOSTILE_DEVICE,
    HOSTILE_HOST,
    HOSTILE_MESSAGE,
    SECRET_VALUE,
    synthetic_results,
)

RECORDED = Path(__file__).parent / "data" / "reports" / "recorded-cpu-run.json"
SECTION_IDS = ("stragglers", "problems", "family-compute", "family-memory", "family-network", "family-storage",
               "family-training", "family-health", "scaling", "trends", "tests", "evidence")


class _Page(HTMLParser):
    """The page's structure as a browser's parser sees it: element ids, tags, script and text."""

    def __init__(self, html: str):
        super().__init__()
        self.ids: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.ids += [value for name, value in attrs if name == "id"]

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """An 8-node synthetic run with hostile names, saved and rendered as a run would."""
    results, faults = synthetic_results(8, hostile=True)
    out = tmp_path_factory.mktemp("hostile")
    results_path = write_results_json(results, out)
    written = render_reports(results, out, results_path)
    return results, faults, out, written


def test_every_section_and_plot_is_present(hostile_run):
    _, _, out, written = hostile_run
    assert written == [out / "report.html", out / "summary.md", out / "bad-nodes.txt", out / "metrics.prom"]
    html = (out / "report.html").read_text()
    page = _Page(html)
    assert [i for i in SECTION_IDS if i not in page.ids] == []
    # Plots: 4 collectives, GEMM and copy per device and per node, each rank's step time per rank and
    # per node, 3 storage, 3 scaling, 2 trends.
    assert page.tags.count("svg") == 4 + 4 + 2 + 3 + 3 + 2
    for title in ("allreduce.busbw_gbps", "gemm.tflops[dtype=bf16] per device", "memory.copy_gbps per node", "per rank",
                  "IOPS per target", "completion latency percentiles per target", "train.tokens_per_s["):
        # A long plot title is wrapped over lines (one <text> each): read them joined by a space.
        svg_texts = " ".join(re.findall(r">([^<>]+)</text>", html))
        assert title in (html + svg_texts).replace("&lt;", "<").replace("&gt;", ">"), title
    assert "target 360.0 GB/s (achievable" in html  # the expectation marked on the busbw plot


def test_stragglers_and_problems_come_first_and_name_the_planted_faults(hostile_run):
    _, faults, out, _ = hostile_run
    html = (out / "report.html").read_text()
    assert html.index('id="stragglers"') < html.index('id="problems"') < html.index('id="family-compute"')
    stragglers = html[html.index('id="stragglers"'):html.index('id="problems"')]
    host, device = faults.slow_device
    assert f"<strong>{_escaped(host)}/{device}</strong>" in stragglers
    assert f"<strong>{faults.slow_node}</strong>" in stragglers  # the whole node, at node level
    assert f"/rank {faults.slow_rank}</strong>" in stragglers  # the training rank whose own steps lag
    first_host = faults.slow_link.split("<->")[0]
    assert f"<strong>{_escaped(f'{first_host}/link {faults.slow_link}')}</strong>" in stragglers  # the slow link
    first_row = stragglers.index("<td>node</td>")
    assert first_row < stragglers.index("<td>device</td>")  # nodes first


def test_the_scaling_section_tabulates_efficiency_cost_and_the_largest_scale(hostile_run):
    _, faults, out, _ = hostile_run
    html = (out / "report.html").read_text()
    scaling = html[html.index('id="scaling"'):html.index('id="trends"')]
    tokens = scaling[scaling.index("train.tokens_per_s"):scaling.index("train.step_time_ms")]
    largest = max(r for r in (1, 2, 4, 8, 16, 32, 64) if r < faults.floor_breaks_at)
    assert f"Largest scale meeting the floor: {largest} ranks." in tokens
    assert "82.0%" in tokens and "97.0%" in tokens and "USD per Mtokens" in tokens
    assert '<span class="verdict  v-fail">FAIL</span>' in tokens  # the efficiency check at the scale that broke
    busbw = scaling[scaling.index("scaling.allreduce_busbw_gbps"):scaling.index("train.tokens_per_s")]
    assert "not priced" in busbw and "is for training throughput" in busbw


def test_hostile_names_are_text_everywhere(hostile_run):
    _, _, out, _ = hostile_run
    html = (out / "report.html").read_text()
    page = _Page(html)
    assert "script" not in page.tags and "img" not in page.tags and "b" not in page.tags
    shown = "".join(page.text)  # what a reader sees: the names exactly as the machine gave them
    for hostile in (HOSTILE_HOST, HOSTILE_DEVICE, HOSTILE_CLUSTER, HOSTILE_MESSAGE):
        assert hostile not in html and hostile in shown, hostile
    assert "<title>clusterbench FAIL: prod&lt;/title&gt;&lt;script&gt;" in html
    # Inside the SVG plots too: matplotlib wrote the host names as escaped text (mathtext off: "$" kept).
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.DOTALL)
    assert any("&lt;script&gt;alert" in svg for svg in svgs)
    assert any("gpu$node|*_3_*" in svg for svg in svgs)
    summary = (out / "summary.md").read_text()
    assert "<script" not in summary and "<b>" not in summary and "](javascript" not in summary
    assert "&lt;script&gt;alert\\(\"host\"\\)&lt;/script&gt;" in summary


def test_evidence_matches_the_files_and_secrets_stay_out(hostile_run):
    results, _, out, _ = hostile_run
    html = (out / "report.html").read_text()
    summary = (out / "summary.md").read_text()
    digest = hashlib.sha256((out / "results.json").read_bytes()).hexdigest()
    assert html.count(digest) == 2 and digest in summary
    profile_file = results.run.profile["files"][0]
    assert profile_file["sha256"] in html and "purchase agreement, annex B, item 3 &lt;b&gt;signed&lt;/b&gt;" in html
    assert "pytest --cluster" in html and "clusterbench version</th><td>0.1.0" in html
    assert "NCCL_IB_HCA" in html and "mlx5_0,mlx5_1" in html
    assert SECRET_VALUE not in html and SECRET_VALUE not in summary and "CLUSTERBENCH_API_TOKEN" in html


def test_the_summary_is_short_and_says_verdict_failures_and_blame(hostile_run):
    _, faults, out, _ = hostile_run
    summary = (out / "summary.md").read_text()
    assert summary.startswith("## clusterbench: **FAIL** on ")
    assert "### Failed and missing" in summary and "### Warned" in summary and "### Blamed nodes" in summary
    assert f"**{faults.slow_node}**" in summary and "straggling: memory.copy\\_gbps" in summary
    assert "| gemm.tflops | dtype=bf16 |" in summary and "| 592.4 TFLOP/s | 750.0 TFLOP/s | \\-21.0% |" in summary
    assert "### Tests failed without a failed check (1)" in summary  # the crash; check-failed tests are not repeated
    assert "\n8 nodes \\(profile: 8\\) · 8 hosts · world size 64 · launcher slurm · " in summary
    assert len(summary) < 65536


def test_a_recorded_run_renders_with_its_real_figures(tmp_path):
    results_path = tmp_path / "results.json"
    results_path.write_bytes(RECORDED.read_bytes())
    render_reports(load_results(results_path), tmp_path, results_path)
    html = (tmp_path / "report.html").read_text()
    page = _Page(html)
    assert {"stragglers", "problems", "family-compute", "family-network", "family-storage", "evidence"} <= set(page.ids)
    assert page.tags.count("svg") >= 6 + 3  # six collectives against message size, three storage plots
    assert "0.0222 TFLOP/s" in html and "fail threshold 4.5 TFLOP/s" in html  # the recorded GEMM FAIL
    assert "NOT MEASURED" in html and "not an MPI launcher" in html
    assert (tmp_path / "summary.md").read_text().startswith("## clusterbench: **FAIL** on cpu\\-recorded")


def test_a_run_of_thousands_of_devices_gives_a_bounded_page(tmp_path):
    results, faults = synthetic_results(256)  # 2,048 GPUs
    results_path = write_results_json(results, tmp_path)
    render_reports(results, tmp_path, results_path)
    html = (tmp_path / "report.html").read_text()
    assert len(html) < 3_000_000  # a page a laptop opens, not a copy of results.json
    assert html.count("<tr>") < 2500
    assert "worst 24 of 2048" in html and "all 2048" in html and "worst 24 of 256" in html
    assert f"<strong>{faults.slow_node}</strong>" in html and f"<strong>{faults.slow_device[0]}/cuda:3</strong>" in html
    assert "passing checks summarised above" in html  # thousands of PASS rows stand as one summary row
    assert len((tmp_path / "summary.md").read_text()) < 65536


def _run_without_figures():
    """A recorded run's header alone: quick to render, for the tests of failures."""
    return RunResults(load_results(RECORDED).run)


def test_a_failed_render_keeps_the_old_reports_and_says_so_in_one_line(tmp_path, monkeypatch):
    results = _run_without_figures()
    results_path = write_results_json(results, tmp_path)
    (tmp_path / "report.html").write_text("the previous report")

    def crash(*args, **kwargs):
        raise RuntimeError("template exploded\nsecond line")

    monkeypatch.setattr(render_module, "render_html", crash)
    with pytest.raises(ReportError) as raised:
        render_reports(results, tmp_path, results_path)
    assert str(raised.value) == "cannot render the reports: RuntimeError: template exploded"
    assert (tmp_path / "report.html").read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "results.json"]


def test_a_write_that_fails_midway_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    (tmp_path / "summary.md").write_text("previous")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_module.os, "replace", full_disk)
    with pytest.raises(OSError):
        atomic_module.write_atomically(tmp_path / "summary.md", "new")
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]
    assert (tmp_path / "summary.md").read_text() == "previous"


def test_an_unwritable_report_dir_is_one_line(tmp_path):
    results = _run_without_figures()
    blocker = tmp_path / "report.html"
    blocker.mkdir()  # a directory where the report should go: the rename cannot replace it
    with pytest.raises(ReportError) as raised:
        render_reports(results, tmp_path, None)
    assert str(raised.value).startswith("cannot write ") and "\n" not in str(raised.value)


def _escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;").replace("'",
                                                                                                              "&#39;")


def test_a_run_cut_short_says_so_at_the_top_of_both_reports(tmp_path):
    results = _run_without_figures()
    results.run.interrupted, results.run.finished_at = "the session was interrupted before every test ran", None
    render_reports(results, tmp_path, None)
    html = (tmp_path / "report.html").read_text()
    assert html.index("<strong>Interrupted:</strong> the session was interrupted") < html.index('id="stragglers"')
    assert "results.json was not written" in html and "to not finished (unfinished)" in html
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("## clusterbench: **FAIL**")
    assert "> **Interrupted:** the session was interrupted" in summary
    assert "1 host · world size 1 · launcher" in summary


def test_the_banner_counts_tests_as_the_terminal_does():
    """A test that measured with nothing to judge it against is 'no expectation', one that warned
    'warn': never 'passed'."""
    results = _run_without_figures()
    results.tests = [
        results_module.TestOutcome("t::judged", "PASS", "passed"),
        results_module.TestOutcome("t::warned", "WARN", "passed"),
        results_module.TestOutcome("t::unjudged_a", NO_EXPECTATION, "passed"),
        results_module.TestOutcome("t::unjudged_b", NO_EXPECTATION, "passed"),
        results_module.TestOutcome("t::absent", "NOT MEASURED", "skipped", "no GPU"),
    ]
    assert build_overview(results, None, None).tests == {"passed": 1, "warn": 1, "no expectation": 2, "skipped": 1}


def test_bar_axes_never_put_an_si_prefix_before_a_unit_below_one_thousand():
    """0.55 GB/s is ticked 0.4, 0.6, never "400m" (which reads as 400 milli-GB/s); IOPS still read 80k."""
    from clusterbench.reports.plots import grouped_bars

    below_one = grouped_bars("bandwidth per target", "GB/s", ["/data"], {"seqread": [0.55], "seqwrite": [0.46]})
    ticks = re.findall(r">([^<>]+)</text>", below_one)
    assert "0.4" in ticks and not any(re.fullmatch(r"[\d.]+m", t) for t in ticks), ticks
    large = grouped_bars("IOPS per target", "IOPS", ["/data"], {"randread": [78038.0]})
    assert "80k" in re.findall(r">([^<>]+)</text>", large)


def test_a_long_plot_title_is_wrapped_not_cut_off():
    from clusterbench.model import Better
    from clusterbench.reports.plots import Bar, location_bars

    title = ("train.step_time_ms[batch=8,dtype=fp32,parallel=ddp,preset=tiny,ranks=2,seq_len=64,span=intra-node]"
             " per rank")
    svg = location_bars(title, "ms", Better.LOWER, [Bar("n0/rank 0", 29.0, False), Bar("n0/rank 1", 30.0, False)], 29.5)
    lines = [t for t in re.findall(r">([^<>]+)</text>", svg) if "=" in t]  # the title's lines: only they hold params
    assert len(lines) == 2 and " ".join(lines) == title.replace(",", ", ")
    short = location_bars("gemm.tflops per device", "TFLOP/s", Better.HIGHER,
                          [Bar("a", 1.0, False), Bar("b", 1.0, False)], 1.0)
    height = lambda svg: float(re.search(r'height="([\d.]+)pt"', svg).group(1))  # noqa: E731
    assert height(svg) > height(short)  # the extra line got its own room
