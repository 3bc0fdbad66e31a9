"""Small-message latency: the collective sweeps start at 8 B (nccl-tests' -b 8), so a profile can state a
latency ceiling on `<op>.time_us` at a small size, judged like every figure.

The sweep plan is checked as data; the rounding of split ops at tiny sizes on real Gloo ranks; the
nccl-tests table from 8 B to 4 GiB; and the judging on real CPU runs of the acceptance suite.
"""

from __future__ import annotations

import pytest
import torch

from clusterbench.model import Location
from clusterbench.probes.collectives import CollectiveRow, sweep_collective
from clusterbench.reports.collective_table import render_table
from clusterbench.runners.collectives import SMALLEST_BYTES, sweep_plan
from clusterbench.runners.local_ranks import run_local_ranks
from test_acceptance_run import run_suite

MiB = 1 << 20
# The bandwidth sweeps as they were before the latency ladder: every one of their sizes is still swept.
BANDWIDTH_SWEEPS = {
    (True, True): (16 * MiB, 64 * MiB, 256 * MiB, 1024 * MiB),
    (True, False): tuple(MiB << k for k in range(13)),  # 1 MiB..4 GiB doubling
    (False, True): (1 * MiB, 4 * MiB, 16 * MiB),
    (False, False): tuple((64 << 10) << 2 * k for k in range(6)),  # 64 KiB..64 MiB x4
}


@pytest.mark.parametrize("on_gpu, quick", list(BANDWIDTH_SWEEPS))
def test_every_sweep_starts_at_8_bytes_and_keeps_its_bandwidth_sizes(on_gpu, quick):
    sizes = sweep_plan(on_gpu=on_gpu, quick=quick, timeout_s=5).sizes
    bandwidth = BANDWIDTH_SWEEPS[(on_gpu, quick)]
    assert sizes[0] == SMALLEST_BYTES == 8
    assert list(sizes) == sorted(set(sizes))
    first = sizes.index(bandwidth[0])
    assert sizes[first:] == bandwidth  # same sizes from the first bandwidth size up: same maximum
    # Below the bandwidth sweep: doubling in a full run (nccl-tests -b 8 -f 2), x8 steps in --quick.
    step = 8 if quick else 2
    assert sizes[:first] == tuple(8 * step**k for k in range(first)) and sizes[first - 1] * step >= bandwidth[0]


def test_gpu_full_sweep_is_nccl_tests_default_ladder():
    assert sweep_plan(on_gpu=True, quick=False, timeout_s=5).sizes == tuple(8 << k for k in range(30))  # 8 B..4 GiB


TINY = (8, 16, 32)
SPLIT_OPS = (("all_gather", False), ("reduce_scatter", False), ("all_to_all", False))


def sweep_tiny_sizes(rank: int, world_size: int) -> dict:
    common = dict(sizes=TINY, dtype="fp32", device=torch.device("cpu"), location=Location("localhost", rank),
                  warmup=1, iterations=2, repeats=1, timeout=30)
    sweeps = {op: sweep_collective(op, inplace=inplace, **common) for op, inplace in SPLIT_OPS}
    sweeps["all_reduce"] = sweep_collective("all_reduce", inplace=True, **common)
    return {op: [(row.size_bytes, row.count, row.wrong) for row in sweep.rows] for op, sweep in sweeps.items()}


def test_split_ops_start_at_the_smallest_size_that_divides_among_ranks():
    """8 B of fp32 is 2 elements: all_reduce sends them; on 4 ranks a split op cannot give each rank one,
    so its sweep starts at 16 B (1 element a rank), as the count rounds down (nccl-tests rounds it too)."""
    (by_op, _, _, _) = run_local_ranks(sweep_tiny_sizes, 4, timeout=120)
    assert by_op["all_reduce"] == [(8, 2, 0), (16, 4, 0), (32, 8, 0)]
    for op, _ in SPLIT_OPS:
        assert by_op[op] == [(16, 1, 0), (32, 2, 0)], op


def _row(size: int, time_us: float) -> CollectiveRow:
    algbw = size / time_us / 1e3
    return CollectiveRow(size, size // 4, "float", "sum", -1, time_us, algbw, algbw, 0, (time_us,))


def test_table_prints_sizes_from_8_bytes_to_4_gib_in_bytes_as_nccl_tests():
    rows = [_row(8, 25.0), _row(65536, 30.0), _row(4 << 30, 40000.0)]
    lines = render_table((), rows, title="all_reduce").splitlines()
    header, body = lines[2], lines[4:7]
    # nccl-tests' size column: bytes, right-aligned in 12 columns, from one digit to ten.
    assert [line[:12] for line in body] == [f"{8:12d}", f"{65536:12d}", f"{4 << 30:12d}"]
    assert header[:12].endswith("size") and lines[3][:12].endswith("(B)")
    tiny = body[0].split()
    # At 8 B the time is the figure; busbw 0.00032 GB/s prints as nccl-tests prints it, 0.00.
    assert tiny[:5] == ["8", "2", "float", "sum", "-1"] and tiny[5:9] == ["n/a"] * 4
    assert tiny[9:] == ["25.00", "0.00", "0.00", "0"]
    assert len({len(line) for line in body}) == 1  # every size's row is the same width


def latency_profile(tmp_path, target_us: float):
    path = tmp_path / "latency.toml"
    path.write_text(f"""
[cluster]
name = "cpu-latency"
accelerator = "cpu"

[[expect]]
metric = "allreduce.time_us"
params = {{ size_bytes = 8 }}
target = {target_us}
unit = "us"
tolerance = 0.0
provenance = "baseline"
source = "latency ceiling fixture"
""")
    return path


def _by_metric(measurements: list[dict], metric: str) -> dict[int, dict]:
    return {m["params"]["size_bytes"]: m for m in measurements if m["metric"] == metric}


def test_default_profile_reports_tiny_sizes_and_judges_nothing_at_them(tmp_path):
    run = run_suite(tmp_path, "--cluster=local", "-m", "network", "-k", "all_reduce and not scaling")
    assert run.returncode == 0, run.stdout + run.stderr
    measurements = run.results["measurements"]
    busbw, time_us = _by_metric(measurements, "allreduce.busbw_gbps"), _by_metric(measurements, "allreduce.time_us")
    assert sorted(busbw) == sorted(time_us) == list(sweep_plan(on_gpu=False, quick=True, timeout_s=5).sizes)
    assert busbw[8]["value"] > 0 and time_us[8]["value"] > 0 and len(time_us[8]["samples"]) >= 3
    assert {c["metric"] for c in run.checks()} == {"collective.wrong"}  # no figure judged, at any size
    assert f"{8:12d}  {2:12d}     float     sum      -1" in run.stdout  # the table's 8 B row


@pytest.mark.parametrize("target_us, verdict, returncode", [(1e6, "PASS", 0), (1e-3, "FAIL", 1)])
def test_a_latency_ceiling_at_8_bytes_is_judged_at_8_bytes(tmp_path, target_us, verdict, returncode):
    """A ceiling naming size_bytes is judged at that size only (the sweep's largest is the default for
    an expectation that leaves size_bytes open): 1 s passes any CPU, 1 ns none."""
    run = run_suite(tmp_path, f"--cluster={latency_profile(tmp_path, target_us)}", "-m", "network",
                    "-k", "test_collective_time and all_reduce")
    assert run.returncode == returncode, run.stdout + run.stderr
    (check,) = [c for c in run.checks() if c["metric"] == "allreduce.time_us"]
    assert check["verdict"] == verdict and check["params"]["size_bytes"] == 8 and check["target"] == target_us
    assert check["observed"] == _by_metric(run.results["measurements"], "allreduce.time_us")[8]["value"]
    assert run.results["verdict"] == verdict
    if verdict == "FAIL":
        printed = " ".join(run.stdout.split())
        assert "fail threshold" in printed and "latency ceiling fixture" in printed and "size_bytes=8" in printed
