"""The reports of a real acceptance run: rank 0 renders them after results.json, and a report that
cannot be written is one line and a non-zero exit, with results.json kept."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

PASSING_PROFILE = """
[cluster]
name = "cpu-reports"
accelerator = "cpu"

[[expect]]
metric = "gemm.tflops"
params = { dtype = "fp32" }
target = 0.000001
unit = "TFLOP/s"
provenance = "baseline"
source = "test fixture: any CPU meets it"
"""


def test_a_run_writes_its_reports_and_a_report_that_cannot_be_written_fails_the_run_in_one_line(tmp_path):
    profile = tmp_path / "cpu-reports.toml"
    profile.write_text(PASSING_PROFILE)
    report_dir = tmp_path / "report"
    (report_dir / "summary.md").mkdir(parents=True)  # a directory where summary.md must go
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--quick", f"--cluster={profile}",
               f"--report-dir={report_dir}", "-m", "compute", "-k", "fp32"]  # one word: not read as a path to test
    proc = subprocess.run(command, cwd=REPO_ROOT, check=False, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr

    # The figures were judged PASS, yet the run fails: its summary.md could not be written.
    assert proc.returncode != 0 and "verdict: PASS" in proc.stdout, output
    errors = [line for line in proc.stdout.splitlines() if line.startswith("clusterbench: ERROR:")]
    assert len(errors) == 1 and f"cannot write {report_dir / 'summary.md'}" in errors[0], output
    assert "Traceback" not in output

    # Nothing measured is lost: results.json is whole, and report.html was written and names it.
    results_bytes = (report_dir / "results.json").read_bytes()
    assert json.loads(results_bytes)["verdict"] == "PASS"
    html = (report_dir / "report.html").read_text()
    assert hashlib.sha256(results_bytes).hexdigest() in html
    assert f"clusterbench: wrote {report_dir / 'report.html'}" in proc.stdout
    assert "cpu-reports" in html and "gemm.tflops" in html
