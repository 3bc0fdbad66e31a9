"""Node health in the acceptance suite, end to end on this machine (no NVIDIA driver here: the real
pynvml reports NVML unavailable). The NVML-reading code itself is tested against FakeNvml elsewhere."""

from __future__ import annotations

import os

from test_acceptance_run import REPO_ROOT, run_suite
from test_multirank import results, start_ranks, wait_for_ranks


def test_cpu_profile_reports_gpus_not_measured_and_keeps_the_host_inventory(tmp_path):
    run = run_suite(tmp_path, "--cluster=local", "-m", "health")
    assert run.returncode == 0, run.stdout + run.stderr
    data = run.results
    outcomes = {t["nodeid"].split("::")[-1]: t for t in data["tests"]}
    count = outcomes["test_gpu_health[gpu.count]"]
    assert count["outcome"] == "skipped" and "NVML unavailable" in count["message"]
    (inventory,) = data["run"]["inventory"].values()
    assert inventory["gpu"] is None and "NVML unavailable" in inventory["gpu_not_measured"]
    host = inventory["host"]
    assert host["cpu_model"] and host["cores_logical"] >= 1 and host["memory_total_bytes"] > 0
    assert host["torch"] and host["python"] and host["kernel"]
    assert "no InfiniBand/RoCE devices" in inventory["infiniband"]["not_measured"]


def test_gpu_profile_fails_on_a_node_without_gpus(tmp_path):
    run = run_suite(tmp_path, "--cluster=h200-node", "-m", "health")
    assert run.returncode == 1, run.stdout
    (missing,) = [c for c in run.checks("NOT MEASURED") if c["metric"] == "gpu.count"]
    assert missing["blocking"] and missing["target"] == 8 and "accelerators_per_node = 8" in missing["source"]


def test_golden_configuration_that_cannot_be_confirmed_fails_naming_the_host(tmp_path):
    profile = tmp_path / "golden.toml"
    profile.write_text('[cluster]\nname = "golden"\n[golden]\ngpu_count_per_node = 8\ndriver_version = "550"\n')
    run = run_suite(tmp_path, f"--cluster={profile}", "-m", "health", "-k", "inventory")
    assert run.returncode == 1, run.stdout
    (check,) = run.checks("FAIL")
    assert check["provenance"] == "golden" and "cannot be confirmed" in check["message"]
    assert "what to do:" in check["message"]


def test_three_nodes_agree_on_their_inventory(tmp_path):
    profile = tmp_path / "three.toml"
    profile.write_text('[cluster]\nname = "three"\n[settings]\ncollective_timeout_s = 60\n')
    arguments = [f"--cluster={profile}", f"--report-dir={tmp_path / 'report'}", "-m", "health", "-k", "inventory"]
    procs = start_ranks(tmp_path, arguments, ranks=3, cwd=REPO_ROOT, node_names=["a", "b", "c"])
    out0 = wait_for_ranks(procs, timeout=180)
    assert procs[0].returncode == 0, out0
    data = results(tmp_path / "report")
    assert sorted(data["run"]["inventory"]) == ["a", "b", "c"]
    (check,) = data["checks"]
    assert check["verdict"] == "PASS" and check["provenance"] == "peers" and "3 node(s) match" in check["message"]
    assert os.path.exists(tmp_path / "report" / "logs" / "rank-2.log")
