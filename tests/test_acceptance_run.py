"""The acceptance suite end to end: real pytest runs of benchmarks/ on this machine's CPU.

Each test starts `python -m pytest` on the real suite in a subprocess, exactly as a user would, and
reads what it printed, its exit status, results.json and the JUnit XML.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class SuiteRun:
    returncode: int
    stdout: str
    stderr: str
    report_dir: Path

    @property
    def results(self) -> dict:
        return json.loads((self.report_dir / "results.json").read_text())

    def checks(self, verdict: str | None = None) -> list[dict]:
        return [c for c in self.results["checks"] if verdict is None or c["verdict"] == verdict]


def run_suite(tmp_path: Path, *args: str, timeout: int = 300) -> SuiteRun:
    report_dir = tmp_path / "report"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--quick", "--report-dir", str(report_dir),
               *args]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    return SuiteRun(proc.returncode, proc.stdout, proc.stderr, report_dir)


def gemm_fp32_profile(tmp_path: Path, target: float, tolerance: float, warn: float, extra: str = "") -> Path:
    path = tmp_path / "cpu.toml"
    path.write_text(
        f"""
[cluster]
name = "cpu-test"
accelerator = "cpu"

[[expect]]
metric = "gemm.tflops"
params = {{ dtype = "fp32" }}
target = {target}
unit = "TFLOP/s"
tolerance = {tolerance}
warn = {warn}
provenance = "baseline"
source = "test fixture"
{extra}
"""
    )
    return path


def test_local_profile_on_a_cpu_measures_and_says_no_expectation(tmp_path):
    run = run_suite(tmp_path, "--cluster=local", "-m", "compute", "-k", "fp32")
    assert run.returncode == 0, run.stdout + run.stderr
    results = run.results
    assert results["schema"].startswith("clusterbench.results/")
    assert {"schema", "run", "verdict", "measurements", "checks"} <= set(results)
    assert results["run"]["cluster"] == "local" and results["run"]["world_size"] == 1
    assert results["run"]["launcher"] == "local" and results["run"]["versions"]["torch"]
    assert results["run"]["started_at"] and results["run"]["finished_at"]
    (gemm,) = [m for m in results["measurements"] if m["metric"] == "gemm.tflops"]
    assert gemm["params"]["dtype"] == "fp32" and gemm["unit"] == "TFLOP/s" and gemm["value"] > 0
    assert gemm["host"] and gemm["rank"] == 0 and gemm["device"] == "cpu" and len(gemm["samples"]) >= 3
    assert results["verdict"] == "NO EXPECTATION"
    assert "NO EXPECTATION" in run.stdout and "no expectation in the profile" in run.stdout


def test_unmeasurable_probes_are_skipped_not_passed(tmp_path):
    run = run_suite(tmp_path, "--cluster=local", "-k", "tf32 or h2d")
    assert run.returncode == 0, run.stdout + run.stderr
    outcomes = {t["nodeid"].split("::")[-1]: t for t in run.results["tests"]}
    for name in ("test_gemm_throughput[tf32]", "test_memory_bandwidth[memory.h2d_gbps]"):
        assert outcomes[name]["outcome"] == "skipped" and outcomes[name]["verdict"] == "NOT MEASURED"
        assert outcomes[name]["message"].startswith("NOT MEASURED")
    summary_line = run.stdout.strip().splitlines()[-1]
    assert "2 skipped" in summary_line and "passed" not in summary_line, summary_line
    # pytest's "collected" counts the item clusterbench adds, so its counts add up with its last line.
    collected, deselected, selected = map(int,
                                          re.search(r"collected (\d+) items / (\d+) deselected / (\d+) selected",
                                                    run.stdout).groups())
    assert collected - deselected == selected == len(run.results["tests"]) == 3
    assert "tests: 1 no expectation · 2 skipped;" in " ".join(run.stdout.split())


@pytest.mark.parametrize(
    "target, tolerance, warn, verdict, returncode",
    [
        (1e-6, 0.05, 0.0, "PASS", 0),
        # fail below target * 1e-6, warn below target * (1 - 1e-6): any CPU lands in the band.
        (100.0, 0.999999, 0.999998, "WARN", 0),
        (1e9, 0.05, 0.0, "FAIL", 1),
    ],
)
def test_verdicts_become_outcomes_and_junit_properties(tmp_path, target, tolerance, warn, verdict, returncode):
    profile = gemm_fp32_profile(tmp_path, target, tolerance, warn)
    junit = tmp_path / "junit.xml"
    run = run_suite(tmp_path, f"--cluster={profile}", "-m", "compute", "-k", "fp32", f"--junitxml={junit}")
    assert run.returncode == returncode, run.stdout + run.stderr
    (check,) = run.checks()
    assert check["verdict"] == verdict and check["provenance"] == "baseline" and check["device"] == "cpu"
    assert check["target"] == target and check["observed"] > 0
    assert run.results["verdict"] == verdict
    assert "PytestWarning" not in run.stdout + run.stderr
    root = ET.parse(junit).getroot()
    assert all(tc.find("properties") is None for tc in root.iter("testcase"))  # xunit2: figures go on <testsuite>
    everything = {p.get("name"): p.get("value") for p in root.iter("property")}
    prefix = next(n for n in everything if "fp32" in n and n.endswith("::verdict"))[: -len("verdict")]
    properties = {n[len(prefix):]: v for n, v in everything.items() if n.startswith(prefix)}
    assert properties["verdict"] == verdict and properties["check.0.verdict"] == verdict
    assert properties["check.0.unit"] == "TFLOP/s" and float(properties["measurement.0.value"]) > 0
    suite = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")
             if p.get("name").startswith("clusterbench.")}
    assert suite["clusterbench.verdict"] == verdict and suite[f"clusterbench.checks.{verdict}"] == "1"
    if verdict == "WARN":
        assert "WARN" in run.stdout and "1 warn" in run.stdout
    if verdict == "FAIL":
        assert "fail threshold" in run.stdout and "test fixture" in run.stdout


def test_required_expectation_that_cannot_be_measured_fails(tmp_path):
    profile = tmp_path / "fp8.toml"
    profile.write_text(
        """
[cluster]
name = "needs-fp8"

[[expect]]
metric = "gemm.tflops"
params = { dtype = "fp8" }
target = 1000
unit = "TFLOP/s"
provenance = "spec"
source = "a GPU this machine does not have"
"""
    )
    run = run_suite(tmp_path, f"--cluster={profile}", "-m", "compute", "-k", "fp8")
    assert run.returncode == 1, run.stdout + run.stderr
    (check,) = run.checks("NOT MEASURED")
    assert check["blocking"] and "required" in check["message"]
    assert run.results["verdict"] == "FAIL"


def test_required_expectation_no_test_measures_fails_a_full_run_only(tmp_path):
    # A figure no test of the suite measures (the GEMM tests sweep no int8): nothing can cover it.
    extra = """
[[expect]]
metric = "gemm.tflops"
params = { dtype = "int8" }
target = 1000
unit = "TFLOP/s"
provenance = "contract"
source = "purchase agreement: int8 throughput"
"""
    label = "gemm.tflops[dtype=int8]"
    profile = gemm_fp32_profile(tmp_path, 1e-6, 0.05, 0.0, extra)
    narrowed = run_suite(tmp_path, f"--cluster={profile}", "-m", "compute", "-k", "fp32")
    assert narrowed.returncode == 0, narrowed.stdout
    (missing,) = narrowed.checks("NOT MEASURED")
    assert missing["params"] == {"dtype": "int8"} and not missing["blocking"]
    assert "outside this run's selection" in missing["message"]

    # A full run, not narrowed: no path, -m or -k given; the suite's testpaths shrunk to the compute
    # file only to keep this test short (the coverage item cannot tell the difference).
    full = run_suite(tmp_path / "full", f"--cluster={profile}", "-o", "testpaths=benchmarks/test_compute.py")
    assert full.returncode == 1, full.stdout
    (missing,) = full.checks("NOT MEASURED")
    assert missing["blocking"] and f"no test in this run measures {label}" in missing["message"]
    assert "FAILED ::clusterbench-required-expectations" in full.stdout
    assert f"no test in this run measures {label}" in full.stdout


@pytest.mark.parametrize(
    "cluster, fragment",
    [
        ("no-such-cluster", "unknown cluster 'no-such-cluster'"),
        ("h200-nod", "did you mean 'h200-node'"),
        ("missing/prod.toml", "profile file not found"),
    ],
)
def test_bad_cluster_gives_one_line_and_usage_exit(tmp_path, cluster, fragment):
    run = run_suite(tmp_path, f"--cluster={cluster}")
    assert run.returncode == 4
    assert "Traceback" not in run.stdout + run.stderr
    error_lines = [line for line in run.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(error_lines) == 1 and fragment in error_lines[0], run.stderr


def test_malformed_profile_names_file_and_line(tmp_path):
    profile = tmp_path / "broken.toml"
    profile.write_text('[cluster]\nname = "x"\n[[expect]]\nmetric = "gemm.tflops"\ntarget = \n')
    run = run_suite(tmp_path, f"--cluster={profile}")
    assert run.returncode == 4 and "Traceback" not in run.stdout + run.stderr
    assert f"{profile}: invalid TOML" in run.stderr and "line 5" in run.stderr


def test_a_report_dir_that_cannot_be_written_stops_the_run_before_it_measures(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--quick", "--cluster=local",
               f"--report-dir={blocker}", "-m", "compute", "-k", "fp32"]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 4, output  # pytest's usage error
    assert "Traceback" not in output and "gemm.tflops" not in output  # stopped before measuring
    errors = [line for line in output.splitlines() if line.startswith("ERROR:")]
    assert errors == [f"ERROR: --report-dir {blocker}: not a directory (a file of that name is in the way)"], output
    assert blocker.read_text() == "not a directory"


def test_results_that_cannot_be_written_mid_run_are_one_line_and_a_non_zero_exit(tmp_path):
    """The directory was writable at the start; writing results.json fails later (here a directory
    is in its place, as a full disk or a lost mount would make it fail): what was measured is still
    shown, and the session fails with one line."""
    report_dir = tmp_path / "report"
    (report_dir / "results.json").mkdir(parents=True)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--quick", "--cluster=local",
               f"--report-dir={report_dir}", "-m", "compute", "-k", "fp32"]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert f"clusterbench: ERROR: cannot write {report_dir}/results.json" in proc.stdout
    assert "gemm.tflops" in proc.stdout  # what was measured is still shown


def test_collectives_under_plain_pytest_start_their_own_local_ranks(tmp_path):
    run = run_suite(tmp_path, "--cluster=local", "-m", "network", "-k", "all_reduce")
    assert run.returncode == 0, run.stdout + run.stderr
    busbw = [m for m in run.results["measurements"] if m["metric"] == "allreduce.busbw_gbps"]
    assert busbw and all(m["params"]["ranks"] == 2 and m["params"]["backend"] == "gloo" for m in busbw)
    quick_cpu_sizes = [8, 64, 512, 4096, 32768, 262144, 1 << 20, 1 << 22, 1 << 24]
    assert sorted(m["params"]["size_bytes"] for m in busbw) == quick_cpu_sizes
    assert all(m["value"] > 0 and len(m["samples"]) >= 3 for m in busbw)
    (exact,) = run.checks()
    assert exact["metric"] == "collective.wrong" and exact["verdict"] == "PASS" and exact["observed"] == 0
    # Only the exactness rule was judged: no PASS, and the world of one says what ran beside it.
    assert run.results["verdict"] == "NO EXPECTATION" and run.results["run"]["local_ranks"] == 2
    printed = " ".join(run.stdout.split())  # rich wraps lines at the terminal's width
    assert "verdict: NO EXPECTATION" in printed and "no performance figure judged" in printed
    assert "world size 1 (collectives and training on 2 local ranks started by clusterbench)" in printed
    # The nccl-tests style table, column for column.
    assert "#       size         count      type   redop    root     time   algbw   busbw  #wrong" in run.stdout
    assert "# Avg bus bandwidth" in run.stdout
