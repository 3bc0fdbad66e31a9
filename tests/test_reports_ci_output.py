"""Output for CI logs: the terminal summary kept whole without a TTY, params never cut mid-token,
and metrics.prom parsed by prometheus_client as node_exporter's textfile collector would read it."""

from __future__ import annotations

import pytest

from clusterbench.judge import format_value
from clusterbench.reports.openmetrics import render_openmetrics
from clusterbench.reports.terminal import render_summary
from synthetic_run import synthetic_results


@pytest.fixture(scope="module")
def run():
    return synthetic_results(2)[0]


def _row_of(check, text: str) -> str | None:
    where = f"{check.location.host}/{check.location.device}" if check.location else "-"
    target = format_value(check.target, check.unit)
    return next((line for line in text.splitlines() if check.metric in line and f"{where} " in line and target in line),
                None)


def test_without_a_tty_every_check_is_one_whole_row(run):
    text = render_summary(run, width=None, color=False)
    for check in run.checks:
        row = _row_of(check, text)
        assert row is not None, check
        margin = "-" if check.margin is None else f"{check.margin:+.1%}"
        assert margin in row and check.provenance in row and format_value(check.observed, check.unit) in row


def test_a_narrow_terminal_gets_one_check_a_line_with_every_field(run):
    text = render_summary(run, width=80, color=False)
    assert "one a line" in text
    joined = " ".join(text.split())
    for check in run.checks:
        assert f"metric={check.metric}" in joined and f"provenance={check.provenance}" in joined


@pytest.mark.parametrize("width", [80, 100, 160])
def test_params_are_never_cut_mid_token(run, width):
    text = render_summary(run, width=width, color=False)
    words = set(text.replace("│", " ").replace(",", " ").replace("params=", " ").split())
    for check in run.checks:
        for key, value in check.params.items():
            assert f"{key}={value}" in words, (width, key, value)


def test_metrics_prom_parses_with_every_figure_and_verdict(run):
    parser = pytest.importorskip("prometheus_client.parser")
    text = render_openmetrics(run)
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert all(f.type == "gauge" for f in families.values())
    figure_series = {(m.metric, m.location.host, m.location.device, str(m.location.rank),
                      tuple(sorted((k, str(v)) for k, v in m.params.items())))
                     for m in run.measurements}
    samples = [(name, s) for name, f in families.items() for s in f.samples]
    figures = {(s.labels["host"], s.labels["device"], s.labels["rank"], name) for name,
               s in samples if not name.startswith(("clusterbench_check", "clusterbench_run"))}
    assert len([1 for name,
                s in samples if not name.startswith(("clusterbench_check", "clusterbench_run"))]) == len(figure_series)
    assert {("clusterbench_" + m.metric.replace(".", "_")) for m in run.measurements} <= set(families)
    assert all(len(f) == 4 for f in figures)
    verdicts = [s for s in families["clusterbench_check_verdict"].samples]
    assert len(verdicts) == len({(c.metric, c.location, tuple(sorted(c.params.items()))) for c in run.checks})
    assert {s.labels["verdict"] for s in verdicts} == {c.verdict.value for c in run.checks}
    (run_verdict,) = families["clusterbench_run_verdict"].samples
    assert run_verdict.labels["verdict"] == run.verdict and run_verdict.value == 1


def test_metrics_prom_escapes_hostile_labels():
    parser = pytest.importorskip("prometheus_client.parser")
    hostile = synthetic_results(2, hostile=True)[0]
    families = list(parser.text_string_to_metric_families(render_openmetrics(hostile)))
    hosts = {s.labels.get("host") for f in families for s in f.samples}
    assert any("<script>" in (h or "") for h in hosts)  # the value survives, escaped, and the file still parses
