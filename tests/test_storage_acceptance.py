"""The storage tests of the acceptance suite, end to end on a directory of this machine."""

from __future__ import annotations

import shutil

import pytest

from test_acceptance_run import run_suite

STORAGE_METRICS = {
    "storage.randread_iops", "storage.randwrite_iops", "storage.seqread_gbps", "storage.seqwrite_gbps",
    "storage.randread_p99_us", "storage.metadata_ops", "checkpoint.save_gbps", "checkpoint.load_gbps",
}


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio not installed (apt-get install fio)")
def test_every_storage_figure_on_a_named_target_and_nothing_left_behind(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep-me").write_text("the probe must not touch this")
    run = run_suite(tmp_path, "--cluster=local", "-m", "storage", f"--storage-target={target}")
    assert run.returncode == 0, run.stdout + run.stderr
    figures = {m["metric"]: m for m in run.results["measurements"]}
    assert set(figures) == STORAGE_METRICS
    assert all(m["params"]["target"] == str(target) and m["value"] > 0 for m in figures.values())
    assert figures["storage.randread_iops"]["params"]["engine"] == "fio"
    assert sorted(p.name for p in target.iterdir()) == ["keep-me"]  # only what was there before


def test_a_missing_target_fails_each_figure_with_one_line(tmp_path):
    missing = tmp_path / "no-such-dir"
    run = run_suite(tmp_path, "--cluster=local", "-m", "storage", "-k", "randread_iops", f"--storage-target={missing}")
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr
    (test,) = [t for t in run.results["tests"] if "randread_iops" in t["nodeid"]]
    assert test["outcome"] == "failed" and f"storage target {missing} does not exist" in test["message"]
    assert "\n" not in test["message"]
