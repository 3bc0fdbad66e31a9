"""The mpi4py MPI_Allreduce probe under a real `mpiexec -n 2`, and its OSU conventions."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from clusterbench.probes.mpi_allreduce import _exact_sum_inputs, osu_iterations, osu_sizes

PROBE = [sys.executable, "-m", "clusterbench.probes.mpi_allreduce"]
needs_mpi4py = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None, reason="mpi4py is not installed")
needs_mpiexec = pytest.mark.skipif(shutil.which("mpiexec") is None, reason="no mpiexec on PATH (pip install mpich)")


def test_osu_sweep_doubles_from_a_power_of_two():
    assert osu_sizes(1, 16) == [1, 2, 4, 8, 16]
    assert osu_sizes(5, 40) == [8, 16, 32]
    with pytest.raises(ValueError):
        osu_sizes(64, 8)


def test_osu_iteration_counts_drop_above_8_kib():
    assert osu_iterations(8192, quick=False) == (1000, 100)
    assert osu_iterations(8193, quick=False) == (100, 10)
    assert osu_iterations(8192, quick=True) == (100, 10)
    assert osu_iterations(1 << 20, quick=True) == (20, 2)


@pytest.mark.parametrize("ranks, exact_max", [(2, 2**24), (5, 2**24), (64, 2**53)])
def test_check_inputs_sum_to_the_closed_form(ranks, exact_max):
    inputs = [_exact_sum_inputs(rank, ranks, 100, exact_max) for rank in range(ranks)]
    brute = np.sum([values for values, _ in inputs], axis=0)
    assert all(np.array_equal(expected, brute) for _, expected in inputs)


@needs_mpi4py
@needs_mpiexec
def test_two_ranks_under_mpiexec_measure_busbw_and_exact_sums():
    run = subprocess.run(
        ["mpiexec", "-n", "2", *PROBE, "--min-bytes", "8", "--max-bytes", "65536", "--quick"],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    measurements = json.loads(run.stdout.strip().splitlines()[-1])["measurements"]
    busbw = [m for m in measurements if m["metric"] == "mpi.allreduce_busbw_gbps"]
    assert [m["params"] for m in busbw] == [
        {"size_bytes": size, "ranks": 2, "dtype": "fp32"} for size in osu_sizes(8, 65536)
    ]
    for m in busbw:
        assert m["value"] > 0 and m["unit"] == "GB/s"
        assert len(m["samples"]) == m["details"]["iterations"] == osu_iterations(m["params"]["size_bytes"], True)[0]
        assert m["details"]["min_latency_us"] <= m["details"]["latency_us"] <= m["details"]["max_latency_us"]
        # busbw = bytes / latency x 2(n-1)/n, with n = 2
        assert m["value"] == pytest.approx(m["params"]["size_bytes"] / (m["details"]["latency_us"] * 1e-6) / 1e9)
        assert m["details"]["wrong"] == 0
    wrong = [m for m in measurements if m["metric"] == "collective.wrong"]
    assert [(m["value"], m["params"]["op"]) for m in wrong] == [(0.0, "MPI_Allreduce")]


@needs_mpi4py
def test_a_single_process_is_not_measured():
    run = subprocess.run([*PROBE, "--max-bytes", "64"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "not_measured": "the MPI world has 1 rank; launch with mpiexec -n N, N >= 2"
    }
