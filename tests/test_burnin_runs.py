"""The burn-in in the real suite, end to end on this machine's CPU: alone, and on two ranks ("nodes")
where a test double flips one bit of rank 1's results and the run must fail naming it."""

from __future__ import annotations

from pathlib import Path

from test_acceptance_run import REPO_ROOT, run_suite
from test_multirank import results, start_ranks, wait_for_ranks

TWO_NODES = """
[cluster]
name = "burnin-cpu"

[settings]
collective_timeout_s = 60
burnin_s = 1
"""


def test_the_suite_burns_in_the_cpu_and_passes(tmp_path):
    run = run_suite(tmp_path, "--cluster=local", "-m", "compute", "-k", "burnin")
    assert run.returncode == 0, run.stdout + run.stderr
    figures = {m["metric"]: m for m in run.results["measurements"]}
    assert figures["burnin.mismatches"]["value"] == 0 and figures["burnin.tflops"]["value"] > 0
    assert figures["burnin.tflops"]["samples"] and figures["burnin.tflops"]["details"]["planned_seconds"] == 5
    (check,) = [c for c in run.checks() if c["metric"] == "burnin.mismatches"]
    assert check["verdict"] == "PASS" and check["provenance"] == "rule"


def test_a_bit_flipped_on_one_node_fails_the_run_naming_that_node(tmp_path, monkeypatch):
    profile = tmp_path / "burnin.toml"
    profile.write_text(TWO_NODES)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    monkeypatch.setenv("CLUSTERBENCH_FAKE_SDC_RANK", "1")
    arguments = ["-p", "fake_sdc", "--quick", f"--cluster={profile}", f"--report-dir={tmp_path / 'report'}",
                 "-m", "compute", "-k", "burnin"]
    procs = start_ranks(tmp_path, arguments, cwd=REPO_ROOT, node_names=["node-a", "node-b"])
    out0 = wait_for_ranks(procs, timeout=240)
    assert procs[0].returncode == 1, out0
    data = results(tmp_path / "report")
    assert data["verdict"] == "FAIL"
    failed = [c for c in data["checks"] if c["verdict"] == "FAIL"]
    assert failed and {c["host"] for c in failed} == {"node-b"}
    peers = [c for c in failed if c["provenance"] == "peers"]
    assert peers and "host node-b device cpu (rank 1)" in peers[0]["message"]
    assert "differs bit for bit" in peers[0]["message"] and "what to do:" in peers[0]["message"]
    (passed,) = [c for c in data["checks"] if c["provenance"] == "peers" and c["verdict"] == "PASS"]
    assert passed["host"] == "node-a"
