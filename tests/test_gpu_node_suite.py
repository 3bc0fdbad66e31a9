"""The acceptance suite's compute and health tests on a fake 8-GPU node (tests/fake_gpu_node.py):
torch sees a subset of the GPUs, the others idle with their PCIe links at Gen1. A healthy node must
pass, and each figure "under load" must come from the GPU's own load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_on_fake_node(tmp_path: Path, node: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    profile = tmp_path / "fake-h100.toml"
    profile.write_text('[cluster]\nname = "fake-h100"\naccelerators_per_node = 8\naccelerator = "H100"\n')
    report = tmp_path / "report"
    env = {**os.environ, "FAKE_GPU_NODE": node, "FAKE_GPU_NODE_LOAD_S": "0.25",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "fake_gpu_node", "--quick",
               f"--cluster={profile}", "--report-dir", str(report), "-m", "compute or health", *args]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    results_file = report / "results.json"
    return proc, json.loads(results_file.read_text()) if results_file.exists() else {}


def test_a_visible_subset_with_idle_gpus_passes_and_judges_only_the_loaded_gpus(tmp_path):
    proc, results = run_on_fake_node(tmp_path, "8:5,2", "-k", "bf16 or health")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert not [c for c in results["checks"] if c["verdict"] in ("FAIL", "WARN")]
    figures = {(m["metric"], m["device"]): m for m in results["measurements"]}
    gens = {device: m for (metric, device), m in figures.items() if metric == "gpu.pcie_gen"}
    assert sorted(gens) == ["gpu2", "gpu5"]
    assert all(m["value"] == 5.0 and m["details"]["under_load"] for m in gens.values())
    assert gens["gpu5"]["details"]["cuda_device"] == "cuda:0"  # CUDA_VISIBLE_DEVICES=5,2
    power = figures[("gpu.power_w", "gpu2")]
    assert power["details"]["under_load"] and power["value"] == 120.0  # FakeGpu's busy draw, not the idle 70 W
    assert figures[("gpu.count", "node")]["value"] == 8.0
    (inventory,) = results["run"]["inventory"].values()
    assert inventory["gpu"]["count"] == 8
