"""report.html opened in a real headless browser (Debian's chromium): it renders without a console
message, its plots have a size on the page, it fetches nothing, hostile names run no script, and a
screenshot shows the page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from clusterbench.reports.command import load_results
from clusterbench.reports.render import render_reports
from clusterbench.reports.results_json import write_results_json
from clusterbench.results import (
    TestOutcome as Outcome,  # aliased: pytest would collect Test*
)
from synthetic_run import HOSTILE_CLUSTER, HOSTILE_HOST, HOSTILE_MESSAGE

RECORDED = Path(__file__).parent / "data" / "reports" / "recorded-cpu-run.json"

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 90
# Appended to a copy of the page: once it has loaded, what the browser laid out and fetched, written
# into the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener('load', () => {
  const boxes = [...document.querySelectorAll('svg')].map(s => s.getBoundingClientRect());
  document.body.setAttribute('data-probe', JSON.stringify({
    title: document.title,
    svgs: boxes.length,
    svgs_with_area: boxes.filter(b => b.width > 100 && b.height > 50).length,
    resources: performance.getEntriesByType('resource').map(r => r.name),
    scripts: document.scripts.length,
    sections: [...document.querySelectorAll('section[id]')].map(s => s.id),
  }));
});
</script>"""


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"no headless browser found ({', '.join(BROWSERS)}); install Debian's chromium (.ci/run does)")


def _run_browser(browser: str, profile_dir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--disable-gpu", f"--user-data-dir={profile_dir}", "--enable-logging=stderr",
               "--v=0", "--hide-scrollbars", "--proxy-server=http://127.0.0.1:9", *args]  # any fetch would fail
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # chromium refuses to run as root inside its sandbox
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=TIMEOUT_S)


def _console_messages(stderr: str) -> list[str]:
    """What the page wrote to the console (errors included): chromium logs each as INFO:CONSOLE."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """The recorded CPU run (real figures and plots), its cluster, host and a message made hostile."""
    out = tmp_path_factory.mktemp("browser")
    results = load_results(RECORDED)
    results.run.cluster, results.run.hosts = HOSTILE_CLUSTER, [HOSTILE_HOST]
    for item in [*results.measurements, *results.checks]:
        if item.location is not None:
            item.location = replace(item.location, host=HOSTILE_HOST)
    results.tests.append(Outcome("benchmarks/test_x.py::test_crash", "ERROR", "failed", HOSTILE_MESSAGE))
    render_reports(results, out, write_results_json(results, out))
    return out


def _probe(proc: subprocess.CompletedProcess) -> dict:
    marker = 'data-probe="'
    start = proc.stdout.index(marker) + len(marker)
    raw = proc.stdout[start:proc.stdout.index('"', start)]
    return json.loads(raw.replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


def test_the_checks_catch_a_page_that_logs_an_error_and_fetches_an_image(tmp_path):
    """The checks below are only worth something if they can fail: a bad page must be caught."""
    browser = _browser()
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><title>bad</title><body><img src='http://example.invalid/x.png'>"
                   "<script>console.error('deliberate error')</script>" + PROBE + "</body>")
    proc = _run_browser(browser, tmp_path / "profile", "--dump-dom", bad.as_uri())
    assert any("deliberate error" in line for line in _console_messages(proc.stderr)), proc.stderr[-2000:]
    assert _probe(proc)["resources"] == ["http://example.invalid/x.png"]


def test_the_report_renders_without_console_messages_and_screenshots(rendered, tmp_path):
    browser = _browser()
    screenshot = tmp_path / "report.png"
    proc = _run_browser(browser, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,2400",
                        (rendered / "report.html").as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _console_messages(proc.stderr) == []
    with Image.open(screenshot) as image:
        assert image.size == (1280, 2400)
        top = image.convert("RGB").crop((0, 0, 1280, 400))
        colors = top.getcolors(maxcolors=1 << 16)
        # Not a blank page: text and the red FAIL banner are drawn.
        assert colors is None or len(colors) > 50
        assert any(r > 180 and g < 80 and b < 80 for _, (r, g, b) in (colors or [(0, (200, 40, 40))]))


def test_the_browser_lays_out_every_plot_fetches_nothing_and_runs_no_injected_script(rendered, tmp_path):
    browser = _browser()
    probed = tmp_path / "probed.html"
    probed.write_text((rendered / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    proc = _run_browser(browser, tmp_path / "profile", "--dump-dom", probed.as_uri())
    assert proc.returncode == 0 and _console_messages(proc.stderr) == [], proc.stderr[-2000:]
    probe = _probe(proc)
    assert probe["title"].startswith(f"clusterbench FAIL: {HOSTILE_CLUSTER}")  # shown as text, not run
    assert probe["scripts"] == 1  # the probe alone: no hostile name became a script
    assert probe["resources"] == []  # self-contained: no style, font or image fetched
    assert probe["svgs"] >= 9 and probe["svgs_with_area"] == probe["svgs"]
    assert {"stragglers", "problems", "family-compute", "family-network", "tests", "evidence"} <= set(probe["sections"])
