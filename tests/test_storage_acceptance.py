"""The storage tests of the acceptance suite, end to end on a directory of this machine."""

from __future__ import annotations

import shutil

import pytest

from test_acceptance_run import REPO_ROOT, run_suite

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


def test_ranks_measure_a_shared_target_at_once_and_the_aggregate_is_judged(tmp_path):
    """Both ranks measure one shared directory at once; their checkpoint is one sharded checkpoint
    written together through torch.distributed.checkpoint."""
    import subprocess
    import sys

    from test_multirank import free_port, results

    target = tmp_path / "shared"
    target.mkdir()
    profile = tmp_path / "shared.toml"
    profile.write_text(f"""
[cluster]
name = "shared-fs"

[storage]
targets = ["{target}"]
shared = ["{target}"]
working_size_bytes = 33554432  # 32 MiB: small files keep this two-rank test short

[[expect]]
metric = "checkpoint.save_gbps"
params = {{ ranks = 2, engine = "torch.distributed.checkpoint" }}
target = 1e-6
unit = "GB/s"
provenance = "contract"
source = "test fixture: the job's sharded checkpoint"

[[expect]]
metric = "storage.seqread_gbps"
target = 1e-6
unit = "GB/s"
provenance = "baseline"
source = "test fixture: every rank passes"

[[expect]]
metric = "storage.seqread_gbps"
params = {{ ranks = 2 }}
target = 1e-6
unit = "GB/s"
provenance = "contract"
source = "test fixture: the job's aggregate"
""")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}",
               "-m", "pytest", "-p", "no:cacheprovider", "--quick", f"--cluster={profile}",
               f"--report-dir={tmp_path / 'report'}", "-m", "storage", "-k", "seqread or save_gbps"]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = results(tmp_path / "report")
    saves = [m for m in data["measurements"] if m["metric"] == "checkpoint.save_gbps"]
    assert {m["params"]["engine"] for m in saves} == {"torch.distributed.checkpoint"}
    (save_aggregate,) = [m for m in saves if m["params"].get("ranks") == 2]
    assert save_aggregate["value"] == pytest.approx(2 * min(m["value"] for m in saves if "ranks" not in m["params"]))
    (contract,) = [c for c in data["checks"] if c["metric"] == "checkpoint.save_gbps" and c["provenance"] == "contract"]
    assert contract["verdict"] == "PASS" and contract["observed"] == save_aggregate["value"]
    reads = [m for m in data["measurements"] if m["metric"] == "storage.seqread_gbps"]
    per_rank = sorted(m["rank"] for m in reads if "ranks" not in m["params"])
    (aggregate,) = [m for m in reads if m["params"].get("ranks") == 2]
    assert per_rank == [0, 1] and aggregate["value"] == sum(m["value"] for m in reads if m["rank"] in (0, 1))
    by_provenance = sorted((c["provenance"], c["rank"])
                           for c in data["checks"] if c["metric"] == "storage.seqread_gbps")
    assert by_provenance == [("baseline", 0), ("baseline", 1), ("contract", -1)]
    assert all(c["verdict"] == "PASS" for c in data["checks"])
    assert sorted(p.name for p in target.iterdir()) == []  # both ranks removed their workspaces


def test_one_rank_per_node_measures_once_for_the_node(tmp_path):
    import subprocess
    import sys

    from test_multirank import free_port, results

    target = tmp_path / "local-disk"
    target.mkdir()
    profile = tmp_path / "per-node.toml"
    profile.write_text(f'[cluster]\nname = "per-node"\n[storage]\ntargets = ["{target}"]\nranks = "one-per-node"\n'
                       'working_size_bytes = 33554432\n')  # 32 MiB: small files keep this test short
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}",
               "-m", "pytest", "-p", "no:cacheprovider", "--quick", f"--cluster={profile}",
               f"--report-dir={tmp_path / 'report'}", "-m", "storage", "-k", "metadata"]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = [m for m in results(tmp_path / "report")["measurements"] if m["metric"] == "storage.metadata_ops"]
    assert [(m["rank"], "ranks" in m["params"]) for m in figures] == [(0, False)]  # one node: one figure

