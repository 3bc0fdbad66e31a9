"""The history in real acceptance runs: calibrate, store, compare, fail on a regression, and leave the
history untouched when a run crashes or is refused."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from clusterbench.catalog import resolve_cluster
from clusterbench.history.store import HistoryStore

# Memory only: the quickest family that measures on any machine (test_history_calibrate.py covers
# dtype params and sweeps without a run).
SELECTION = "memory"


def suite(repo_root: Path, report_dir: Path, *args: str, selection: str = SELECTION) -> subprocess.Popen:
    command = [sys.executable, "-m", "pytest", "--quick", "-m", selection, f"--report-dir={report_dir}",
               "-p", "no:cacheprovider", *args]
    return subprocess.Popen(command, cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=300)
    return process.returncode, output


def test_calibrate_then_compare_catches_a_regression(repo_root, tmp_path):
    history, calibrated = tmp_path / "history.sqlite", tmp_path / "baseline.toml"
    # This 2-core VM is shared with other jobs: its CPU GEMM and copy figures were seen to move by up
    # to 80% between two runs under load, so the margin here is the widest a profile allows; the
    # default (10%) suits dedicated hardware.
    code, output = finished(suite(repo_root, tmp_path / "a", "--cluster=local", f"--history={history}",
                                  f"--calibrate={calibrated}", "--calibrate-margin=0.9"))
    assert code == 0, output
    first = json.loads((tmp_path / "a" / "results.json").read_text())
    run_id = first["run"]["run_id"]
    assert f"stored run {run_id} in {history}" in output and f"wrote calibrated profile {calibrated}" in output

    profile = resolve_cluster(str(calibrated), tmp_path)
    measured = {(m["metric"], json.dumps(m["params"], sort_keys=True)) for m in first["measurements"]}
    assert profile.expectations and all(e.provenance.value == "baseline" for e in profile.expectations)
    assert all(run_id in e.source and first["run"]["started_at"][:10] in e.source for e in profile.expectations)
    assert {(e.metric, json.dumps(dict(e.params), sort_keys=True)) for e in profile.expectations} == measured

    # Five earlier nights that were ten times faster: this machine now looks like a regression.
    with HistoryStore.open(history) as store:
        for night in range(5):
            faster = json.loads(json.dumps(first))
            faster["run"]["started_at"] = f"2026-01-0{night + 1}T00:00:00+00:00"
            for m in faster["measurements"]:
                m["value"] *= 10
            store.record(faster)

    code, output = finished(suite(repo_root, tmp_path / "b", f"--cluster={calibrated}", f"--history={history}",
                                  "--compare=window:5"))
    second = json.loads((tmp_path / "b" / "results.json").read_text())
    assert code == 1, output
    baseline_checks = [c for c in second["checks"] if c["provenance"] == "baseline"]
    assert len(baseline_checks) == len(profile.expectations)  # every expectation met its measurement's params
    assert all(c["verdict"] in ("PASS", "WARN") for c in baseline_checks), baseline_checks  # and the cluster passes
    regressions = [c for c in second["checks"] if c["provenance"] == "history" and c["verdict"] == "FAIL"]
    assert {c["metric"] for c in regressions} == {m["metric"] for m in second["measurements"]}
    assert all(c["target"] > 5 * c["observed"] and "now vs" in c["message"] for c in regressions)
    outcome = {t["nodeid"]: t for t in second["tests"]}["::clusterbench-regressions"]
    assert outcome["outcome"] == "failed" and outcome["verdict"] == "FAIL"
    assert second["trends"] and all(len(t["points"]) == 6 for t in second["trends"])
    with HistoryStore.open(history, read_only=True) as store:
        assert len(store.runs()) == 7


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_run_killed_mid_way_leaves_the_history_as_it_was(repo_root, tmp_path):
    history = tmp_path / "history.sqlite"
    with HistoryStore.open(history) as store:
        store.record(_minimal_results())
    before = digest(history)
    # The network sweeps after the memory tests take seconds, so the kill lands mid-way for sure
    # (the memory tests alone can all finish between two polls).
    process = suite(repo_root, tmp_path / "r", "--cluster=local", f"--history={history}", "--compare=last",
                    selection="memory or network")
    results = tmp_path / "r" / "results.json"
    deadline = time.monotonic() + 120
    while not results.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert results.exists(), "the run never settled a test"
    os.kill(process.pid, signal.SIGKILL)  # mid-way: after the first test, before the end of the run
    process.communicate()
    assert not json.loads(results.read_text())["run"]["finished_at"]
    assert digest(history) == before


def _minimal_results() -> dict:
    return {"schema": "clusterbench.results/1", "verdict": "PASS", "tests": [], "checks": [],
            "run": {"cluster": "local", "hosts": ["h"], "world_size": 1, "devices": [], "quick": True,
                    "started_at": "2026-01-01T00:00:00+00:00", "versions": {"clusterbench": "0.1.0"}},
            "measurements": [{"metric": "memory.copy_gbps", "value": 1.0, "unit": "GB/s", "params": {},
                              "host": "h", "rank": 0, "device": "cpu", "samples": [1.0], "details": {}}]}
