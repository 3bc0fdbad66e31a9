"""The mpi4py MPI_Allreduce probe under a real `mpiexec -n 2`, and its OSU conventions."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from clusterbench.probes.mpi_allreduce import (
    MPI_HOST_MAX_BYTES,
    _exact_sum_inputs,
    count_wrong,
    fill_check_input,
    host_sizes,
    osu_iterations,
    osu_sizes,
)

PROBE = [sys.executable, "-m", "clusterbench.probes.mpi_allreduce"]
needs_mpi4py = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None, reason="mpi4py is not installed")
needs_mpiexec = pytest.mark.skipif(shutil.which("mpiexec") is None, reason="no mpiexec on PATH (pip install mpich)")
MiB = 1 << 20


def run_two_ranks(*command: str) -> subprocess.CompletedProcess:
    """`command` under `mpiexec -n 2`; its rank-0 JSON is the last line of stdout."""
    run = subprocess.run(["mpiexec", "-n", "2", *command], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run


def last_json(run: subprocess.CompletedProcess) -> dict:
    return json.loads(run.stdout.strip().splitlines()[-1])


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
        # Started as OSU and IMB start MPI, without MPI_THREAD_MULTIPLE's lock on every call.
        assert m["details"]["mpi_thread_level"] == "funneled" and "caveat" not in m["details"]
        assert m["details"]["mpi_library"]
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


def test_host_sizes_stop_at_64_mib_not_at_the_gpu_sweeps_4_gib():
    gpu_sweep = osu_sizes(8, 4 << 30)
    kept, skipped = host_sizes(gpu_sweep, MPI_HOST_MAX_BYTES)
    assert 64 * MiB == MPI_HOST_MAX_BYTES
    assert kept == osu_sizes(8, 64 * MiB)
    assert skipped == osu_sizes(128 * MiB, 4 << 30)


@pytest.mark.parametrize("ranks", [2, 5])
def test_chunked_check_matches_the_whole_array_closed_form(ranks):
    count, chunk = 1000, 64  # not a multiple of the chunk: the last chunk is short
    send = np.empty(count, dtype=np.float32)
    fill_check_input(send, 1, ranks, 2**24, chunk=chunk)
    whole_input, whole_sum = _exact_sum_inputs(1, ranks, count, 2**24)
    assert np.array_equal(send, whole_input.astype(np.float32))
    recv = whole_sum.astype(np.float32)
    assert count_wrong(recv, ranks, 2**24, chunk=chunk) == 0
    recv[[0, 63, 64, 999]] += 1  # either side of a chunk boundary, and the last element
    assert count_wrong(recv, ranks, 2**24, chunk=chunk) == 4


def test_the_check_needs_no_message_sized_temporaries():
    """The check's own allocations stay far below the message: it used to hold ~12x the message (48 GiB a
    rank at 4 GiB); now the two buffers the timing already has, plus a chunk's working set."""
    count = 8 * MiB // 4  # an 8 MiB fp32 message
    send, recv = np.empty(count, dtype=np.float32), np.zeros(count, dtype=np.float32)
    tracemalloc.start()
    try:
        fill_check_input(send, 0, 8, 2**24)
        wrong = count_wrong(recv, 8, 2**24)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert wrong > 0  # zeros are not the sum: the count ran over real data
    assert peak < 8 * MiB / 2, f"the check allocated {peak} bytes at its peak for an 8 MiB message"


def test_bad_sizes_on_the_command_line_are_one_line():
    run = subprocess.run([*PROBE, "--min-bytes", "64", "--max-bytes", "8"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "0 < min_bytes <= max_bytes" in run.stderr.strip().splitlines()[-1]


@needs_mpi4py
@needs_mpiexec
def test_sizes_above_the_host_cap_are_left_out_and_listed():
    script = (
        "import json; from clusterbench.probes.mpi_allreduce import measure_mpi_allreduce as m; "
        "r = m([8, 128 << 20, 4 << 30], quick=True); "
        "r.location.rank or print(json.dumps({'sizes': [row.size_bytes for row in r.rows], "
        "'wrong': [x.to_json() for x in r.measurements() if x.metric == 'collective.wrong']}))"
    )
    out = last_json(run_two_ranks(sys.executable, "-c", script))
    assert out["sizes"] == [8]
    assert out["wrong"][0]["details"]["sizes_above_host_cap"] == [128 << 20, 4 << 30]


@needs_mpi4py
@needs_mpiexec
def test_every_size_above_the_cap_is_not_measured():
    script = (
        "import json; from clusterbench.model import NotMeasured; "
        "from clusterbench.probes.mpi_allreduce import measure_mpi_allreduce as m\n"
        "try:\n    m([128 << 20])\nexcept NotMeasured as e:\n"
        "    from mpi4py import MPI; MPI.COMM_WORLD.Get_rank() or print(json.dumps(str(e)))"
    )
    out = last_json(run_two_ranks(sys.executable, "-c", script))
    assert out == f"every size asked for is above the host cap of {MPI_HOST_MAX_BYTES} bytes"


@needs_mpi4py
@needs_mpiexec
def test_mpi_started_earlier_at_thread_multiple_carries_a_caveat():
    """mpi4py's default level, as a process gets it when something imported MPI before the probe."""
    script = ("import sys; from mpi4py import MPI; from clusterbench.probes.mpi_allreduce import main; "
              "sys.exit(main(['--min-bytes', '1024', '--max-bytes', '1024', '--quick']))")
    measurements = last_json(run_two_ranks(sys.executable, "-c", script))["measurements"]
    [figure] = [m for m in measurements if m["metric"] == "mpi.allreduce_busbw_gbps"]
    assert figure["details"]["mpi_thread_level"] == "multiple"
    assert figure["details"]["caveat"].startswith("MPI started at MPI_THREAD_MULTIPLE, not single/funneled")


@needs_mpi4py
@needs_mpiexec
def test_the_launcher_detection_starts_mpi_at_funneled():
    """Under pytest the plugin's detect_world() is the first import of mpi4py.MPI, not the probe."""
    script = ("from clusterbench.world import detect_world; w = detect_world(); "
              "from clusterbench.probes.mpi_allreduce import thread_level_name; from mpi4py import MPI; "
              "w.rank or print(f'\"{thread_level_name(MPI)}\"')")
    assert last_json(run_two_ranks(sys.executable, "-c", script)) == "funneled"


def test_host_buffers_are_ordinary_page_aligned_memory_as_the_c_benchmarks_use():
    from clusterbench.probes.mpi_allreduce import host_buffer

    buffer = host_buffer(4 * 1024 * 1024, np.float32)  # 16 MiB: NumPy itself would advise huge pages
    assert buffer.shape == (4 * 1024 * 1024,) and buffer.dtype == np.float32 and buffer.flags.writeable
    assert buffer.ctypes.data % 4096 == 0
    buffer[:] = 1.5
    assert float(buffer.sum()) == 1.5 * buffer.size
