"""results.json read back: RunResults.from_json inverts to_json, and bad files fail in one line."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from clusterbench.errors import ClusterbenchError
from clusterbench.model import Better, Check, Location, Verdict
from clusterbench.reports.command import load_results, run_report
from clusterbench.reports.results_json import GrowingResultsFile, results_text
from clusterbench.results import RunResults
from clusterbench.runinfo import REDACTED, recorded_environment
from synthetic_run import synthetic_results

RECORDED = Path(__file__).parent / "data" / "reports" / "recorded-cpu-run.json"


def test_from_json_inverts_to_json_for_every_kind_of_record():
    results, _ = synthetic_results(4, hostile=True)
    data = results.to_json()
    again = RunResults.from_json(json.loads(json.dumps(data)))
    assert again.to_json() == data
    assert again.verdict == results.verdict == "FAIL" and again.trends == results.trends
    assert again.checks == results.checks and again.measurements == results.measurements
    assert again.run == results.run and again.tests == results.tests



def test_the_file_rewritten_after_every_test_is_always_the_whole_run(tmp_path):
    """GrowingResultsFile reuses the lines of records it wrote before; after each write the file must
    still be exactly the run so far, and the exact (final) write must catch a record changed later."""
    complete, _ = synthetic_results(2, hostile=True)
    growing = RunResults(run=complete.run)
    writer = GrowingResultsFile(tmp_path / "out")
    path = None
    for step in range(4):  # the run grows a test at a time, each adding records to every list
        for key in ("tests", "measurements", "checks", "trends"):
            records = getattr(complete, key)
            getattr(growing, key).extend(records[step * len(records) // 4:(step + 1) * len(records) // 4])
        path = writer.write(growing)
        assert path.read_text() == results_text(growing.to_json())
    assert json.loads(path.read_text()) == complete.to_json()
    growing.measurements[0].value *= 2  # changed after it was written: only an exact write sees it
    assert json.loads(writer.write(growing).read_text())["measurements"][0]["value"] != growing.measurements[0].value
    assert writer.write(growing, exact=True).read_text() == results_text(growing.to_json())
    growing.checks.clear()  # a list that shrank is encoded afresh, never served from old lines
    assert json.loads(writer.write(growing).read_text())["checks"] == []


def test_check_from_json_keeps_a_missing_location_and_recomputes_the_margin():
    check = Check("train.step_time_ms", {"ranks": 8}, Verdict.WARN, 110.0, 100.0, "ms", "baseline", "last week", "slow",
                  better=Better.LOWER, location=None, test="t::x")
    data = check.to_json()
    assert "host" not in data and data["margin"] == pytest.approx(-0.1)
    assert Check.from_json({**data, "margin": 99.0}) == check
    located = Check("gemm.tflops", {}, Verdict.FAIL, 1.0, 2.0, "TFLOP/s", "spec", "s", "m",
                    location=Location("h", 3, "cuda:3"))
    assert Check.from_json(located.to_json()) == located and located.blocking


def test_a_recorded_run_loads_and_an_older_file_without_newer_fields_still_loads():
    data = json.loads(RECORDED.read_text())
    results = RunResults.from_json(data)
    assert results.verdict == data["verdict"] == "FAIL" and results.counts() == data["counts"]
    del data["trends"], data["run"]["environment"], data["run"]["profile"]["settings"]
    data["run"]["a_field_from_the_future"] = 1
    older = RunResults.from_json(data)
    assert older.trends == [] and older.run.environment == {}


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "no such file"),
        ("{ not json", "not valid JSON (line 1, column 3"),
        ("[1, 2]", "expected a JSON object"),
        ('{"schema": "something/else"}', "schema is 'something/else'"),
        ('{"schema": "clusterbench.results/1", "run": {}}', "not a clusterbench results file"),
    ],
)
def test_a_bad_results_file_is_one_line_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ClusterbenchError) as raised:
        load_results(path)
    message = str(raised.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message


def test_the_report_handler_renders_beside_the_results_or_into_out(tmp_path, capsys):
    results_path = tmp_path / "run" / "results.json"
    results_path.parent.mkdir()
    recorded = json.loads(RECORDED.read_text())
    recorded["measurements"] = []  # the header alone renders fast; figures are the render tests' job
    results_path.write_text(json.dumps(recorded))
    original = results_path.read_bytes()
    assert run_report(argparse.Namespace(results=str(results_path), out=None)) == 0
    assert (tmp_path / "run" / "report.html").is_file() and (tmp_path / "run" / "summary.md").is_file()
    assert run_report(argparse.Namespace(results=str(results_path), out=str(tmp_path / "elsewhere"))) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-4:] == [
        f"clusterbench: wrote {tmp_path / 'elsewhere' / name}" for name in ("report.html", "summary.md",
                                                                            "bad-nodes.txt", "metrics.prom")
    ]
    assert results_path.read_bytes() == original  # only read, never rewritten


def test_the_environment_is_recorded_by_prefix_with_secret_looking_values_redacted():
    environ = {
        "NCCL_IB_HCA": "mlx5_0", "CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_ID": "42", "OMP_NUM_THREADS": "8",
        "HOME": "/root", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "NCCL_IB_PKEY_TOKEN": "tok", "TORCH_HUB_PASSWORD": "pw",
        "SLURM_CREDENTIAL_FILE": "/etc/cred", "CLUSTERBENCH_API_KEY": "k",
    }
    recorded = recorded_environment(environ)
    assert list(recorded) == sorted(recorded) and "HOME" not in recorded and "AWS_SECRET_ACCESS_KEY" not in recorded
    assert recorded["NCCL_IB_HCA"] == "mlx5_0" and recorded["OMP_NUM_THREADS"] == "8"
    for name in ("NCCL_IB_PKEY_TOKEN", "TORCH_HUB_PASSWORD", "SLURM_CREDENTIAL_FILE", "CLUSTERBENCH_API_KEY"):
        assert recorded[name] == REDACTED


def test_the_clusterbench_report_command_end_to_end(tmp_path):
    results_path = tmp_path / "results.json"
    recorded = json.loads(RECORDED.read_text())
    recorded["measurements"] = []
    results_path.write_text(json.dumps(recorded))
    command = [sys.executable, "-m", "clusterbench.cli", "report"]
    done = subprocess.run([*command, str(results_path)], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.splitlines() == [
        f"clusterbench: wrote {tmp_path / name}" for name in ("report.html", "summary.md", "bad-nodes.txt",
                                                              "metrics.prom")
    ]
    failed = subprocess.run([*command, str(tmp_path / "missing.json")], check=False, capture_output=True, text=True,
                            timeout=120)
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr == (f"clusterbench report: error: {tmp_path / 'missing.json'}: no such file "
                             "(give the results.json of a run)\n")
