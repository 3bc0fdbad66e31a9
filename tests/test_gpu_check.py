"""tools/gpu_check.py: one line and exit 0 without a GPU; one row per figure, with % of spec and of the
published achievable figure taken from the hardware table, on a GPU node's results."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clusterbench.hardware import load_hardware_table, match_accelerator

TOOL = Path(__file__).resolve().parent.parent / "tools" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(TOOL), "--report-dir", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "no GPU visible to torch" in lines[0], done.stdout
    assert not list(tmp_path.iterdir())  # nothing was run, nothing written


def _h200_results(caveat: str | None = None) -> dict:
    where = {"host": "gpu001", "rank": 0, "device": "cuda:0"}
    return {
        "measurements": [
            {"metric": "gemm.tflops", "value": 741.0, "unit": "TFLOP/s", "params": {"dtype": "bf16"},
             "samples": [741.0],
             "details": {}, **where},
            {"metric": "memory.copy_gbps", "value": 4100.0, "unit": "GB/s", "params": {}, "samples": [4100.0],
             "details": {"caveat": caveat}, **where},
        ],
        "checks": [
            {"metric": "gemm.tflops", "params": {"dtype": "bf16"}, "verdict": "PASS", **where},
            {"metric": "gemm.tflops", "params": {"dtype": "bf16"}, "verdict": "WARN", **where},  # peers rule, say
        ],
        "tests": [
            {"nodeid": "benchmarks/test_network.py::test_collective_busbw[all_reduce]", "outcome": "skipped",
             "verdict": "NOT MEASURED", "message": "all_reduce needs at least 2 ranks; this run has 1"},
            {"nodeid": "benchmarks/test_compute.py::test_gemm_throughput[bf16]", "outcome": "passed",
             "verdict": "PASS", "message": ""},
        ],
    }


def test_rows_carry_verdict_and_percentages_from_the_hardware_table(gpu_check):
    table = load_hardware_table()
    spec = match_accelerator("NVIDIA H200", table)
    assert spec is not None, "the hardware table must know the H200"
    rows = gpu_check.build_rows(_h200_results(caveat="a caveat"), {"cuda:0": "NVIDIA H200"}, table)
    gemm, copy, skipped = rows
    assert (gemm.metric, gemm.params, gemm.where, gemm.verdict) == ("gemm.tflops", "dtype=bf16", "gpu001/cuda:0",
                                                                    "WARN")
    assert gemm.of_spec == f"{100 * 741.0 / spec.peak('bf16'):.1f}%"
    published = spec.achievable_gemm_tflops("bf16")
    assert gemm.of_published == (f"{100 * 741.0 / published:.1f}%" if published else "")
    assert copy.verdict == "no expectation" and copy.note == "a caveat"
    assert copy.of_spec == f"{100 * 4100.0 / spec.memory_bandwidth_gbps.value:.1f}%"
    assert skipped.verdict == "NOT MEASURED" and "at least 2 ranks" in skipped.note
    assert len(rows) == 3  # the passed test with no message adds no row of its own


def test_an_unknown_device_gets_no_percentages(gpu_check):
    rows = gpu_check.build_rows(_h200_results(), {"cuda:0": "Some Future Accelerator"}, load_hardware_table())
    assert rows[0].of_spec == rows[0].of_published == ""


def test_text_and_markdown_tables_keep_every_row_whole(gpu_check):
    rows = gpu_check.build_rows(_h200_results(), {"cuda:0": "NVIDIA H200"}, load_hardware_table())
    text = gpu_check.render_text(rows)
    assert len(text.splitlines()) == 2 + len(rows)
    assert "all_reduce needs at least 2 ranks; this run has 1" in text
    markdown = gpu_check.render_markdown(rows).splitlines()
    assert markdown[0].startswith("| metric |") and len(markdown) == 2 + len(rows)
