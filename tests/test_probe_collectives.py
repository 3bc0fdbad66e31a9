"""Collective probes: nccl-tests' bandwidth math, exact-result checks, and real 2-rank Gloo sweeps."""

from __future__ import annotations

import time

import pytest
import torch
import torch.distributed as dist

from clusterbench.model import Location, NotMeasured
from clusterbench.probes.collective_table import average_busbw, render_table
from clusterbench.probes.collectives import (
    COLLECTIVES,
    AllReduce,
    Buffers,
    CollectiveRow,
    CollectiveSweep,
    GroupView,
    _reduce_expected,
    _reduce_input,
    busbw_factor,
    size_sweep,
    sweep_collective,
)
from clusterbench.probes.local_ranks import run_local_ranks

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "ranks, all_reduce, split",
    [(2, 1.0, 0.5), (4, 1.5, 0.75), (8, 1.75, 0.875)],  # 2(n-1)/n and (n-1)/n by hand
)
def test_busbw_factors_are_nccl_tests(ranks, all_reduce, split):
    assert busbw_factor("all_reduce", ranks) == all_reduce
    for op in ("all_gather", "reduce_scatter", "all_to_all"):
        assert busbw_factor(op, ranks) == split
    assert busbw_factor("broadcast", ranks) == 1.0
    assert busbw_factor("sendrecv", ranks) == 1.0


def test_size_sweep_multiplies_up_to_the_maximum_inclusive():
    assert size_sweep(8, 64, 2) == [8, 16, 32, 64]
    assert size_sweep(100, 1000, 3) == [100, 300, 900]
    assert size_sweep(1 << 20, 1 << 20) == [1 << 20]
    for bad in ((0, 8, 2), (64, 8, 2), (8, 64, 1)):
        with pytest.raises(ValueError):
            size_sweep(*bad)


@pytest.mark.parametrize("dtype, ranks", [("fp32", 2), ("fp32", 13), ("bf16", 8), ("bf16", 300), ("int8", 16)])
def test_exact_inputs_sum_to_the_closed_form(dtype, ranks):
    """The correctness check's expected sums, against summing every rank's input by brute force."""
    idx = torch.arange(1000)
    brute = sum(_reduce_input(rank, ranks, dtype)(idx) for rank in range(ranks))
    assert torch.equal(_reduce_expected(ranks, dtype)(idx), brute)


def _row(size, busbw, wrong=0, samples=(10.0, 20.0, 30.0)):
    return CollectiveRow(size, size // 4, "float", "sum", -1, 12.5, busbw / 2, busbw, wrong, samples)


def test_measurement_value_is_busbw_of_the_median_iteration_and_keeps_every_sample():
    row = _row(1_000_000, busbw=99.0, samples=(10.0, 40.0, 20.0))  # median 20 us
    sweep = CollectiveSweep("all_reduce", "fp32", True, "gloo", 4, Location("h", 0), (row,))
    busbw, wrong = sweep.measurements()
    assert busbw.metric == "allreduce.busbw_gbps"
    assert busbw.params == {"size_bytes": 1_000_000, "ranks": 4, "dtype": "fp32", "inplace": True, "backend": "gloo"}
    assert busbw.value == pytest.approx(1e6 / 20e-6 / 1e9 * 1.5)  # 75 GB/s
    assert busbw.samples == pytest.approx([150.0, 37.5, 75.0])
    assert busbw.details["nccl_tests_busbw_gbps"] == 99.0
    assert (wrong.metric, wrong.value, wrong.params["op"]) == ("collective.wrong", 0.0, "all_reduce")


def test_table_has_nccl_tests_columns_and_average_footer():
    out_of_place = [_row(1024, 1.0), _row(1048576, 3.0, wrong=2)]
    in_place = [_row(1048576, 2.0)]
    lines = render_table(out_of_place, in_place, title="all_reduce").splitlines()
    assert lines[0] == "# all_reduce"
    assert "out-of-place" in lines[1] and "in-place" in lines[1]
    assert lines[2].split() == ["#", "size", "count", "type", "redop", "root",
                                "time", "algbw", "busbw", "#wrong", "time", "algbw", "busbw", "#wrong"]
    assert lines[4].split() == ["1024", "256", "float", "sum", "-1", "12.50", "0.50", "1.00", "0",
                                "n/a", "n/a", "n/a", "n/a"]
    assert lines[5].split() == ["1048576", "262144", "float", "sum", "-1", "12.50", "1.50", "3.00", "2",
                                "12.50", "1.00", "2.00", "0"]
    # Right-aligned in nccl-tests' widths, so header and values line up: size in 12 columns, type ends at 36.
    assert lines[2][:12].endswith("size") and lines[4][:12] == f"{1024:12d}"
    assert lines[2][:36].endswith("type") and lines[4][:36].endswith("float")
    assert lines[-3:] == ["# Out of bounds values : 2 FAILED", "# Avg bus bandwidth    : 2", "#"]
    assert average_busbw(out_of_place, in_place) == 2.0  # plain mean of 1, 3 and 2


@pytest.fixture
def one_rank_group():
    """A real single-rank Gloo group in this process, for what needs no peer."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_modes_torch_lacks_and_unknown_input_are_refused(one_rank_group):
    common = dict(sizes=[64], dtype="fp32", device=CPU, location=Location("h", 0), warmup=1, iterations=2)
    with pytest.raises(NotMeasured, match="all_reduce out-of-place is not offered by torch.distributed"):
        sweep_collective("all_reduce", inplace=False, **common)
    with pytest.raises(NotMeasured, match="sendrecv needs at least 2 ranks"):
        sweep_collective("sendrecv", inplace=False, **common)
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        sweep_collective("all_gather", inplace=False, **{**common, "dtype": "fp8"})


class CorruptingAllReduce(AllReduce):
    """A faulty fabric: after every all_reduce, rank 1 holds three wrong elements."""

    def launch(self, buffers: Buffers, view: GroupView) -> list[dist.Work]:
        for work in super().launch(buffers, view):
            work.wait()
        if view.rank == 1:
            buffers.recv[:3] += 1
        return []


SWEPT = [("all_reduce", True, "fp32"), ("all_reduce", True, "bf16"), ("all_gather", False, "fp32"),
         ("all_gather", True, "fp32"), ("reduce_scatter", False, "fp32"), ("reduce_scatter", True, "fp32"),
         ("all_to_all", False, "fp32"), ("broadcast", True, "int8"), ("sendrecv", False, "fp32")]
SIZES = [1030, 65536]  # 1030 B rounds down to whole elements (and, for split ops, to a multiple of 2 ranks)


def sweep_everything(rank: int, world_size: int) -> dict:
    """Runs on each spawned rank: every op and mode in SWEPT, then a sweep over a corrupting all_reduce."""
    location = Location("localhost", rank)
    common = dict(sizes=SIZES, device=CPU, location=location, warmup=1, iterations=3, timeout=30)
    sweeps = {
        (op, inplace, dtype): sweep_collective(op, dtype=dtype, inplace=inplace, **common)
        for op, inplace, dtype in SWEPT
    }
    corrupted = sweep_collective(CorruptingAllReduce(), dtype="fp32", inplace=True, **common)
    return {"rank": rank, "world_size": world_size, "sweeps": sweeps, "corrupted": corrupted}


@pytest.fixture(scope="module")
def two_ranks():
    return run_local_ranks(sweep_everything, 2, timeout=90)


def test_results_come_back_indexed_by_rank(two_ranks):
    assert [(r["rank"], r["world_size"]) for r in two_ranks] == [(0, 2), (1, 2)]


@pytest.mark.parametrize("op, inplace, dtype", SWEPT)
def test_two_rank_sweep_measures_bandwidth_and_exact_results(two_ranks, op, inplace, dtype):
    sweep = two_ranks[0]["sweeps"][(op, inplace, dtype)]
    assert (sweep.ranks, sweep.backend, sweep.inplace) == (2, "gloo", inplace)
    assert len(sweep.rows) == len(SIZES)
    for row in sweep.rows:
        assert row.busbw_gbps > 0 and row.algbw_gbps > 0 and row.time_us > 0
        assert row.wrong == 0
        assert len(row.samples_us) == 3
        assert row.busbw_gbps == pytest.approx(row.algbw_gbps * busbw_factor(op, 2))
    # Ranks agree: times are combined with MAX and #wrong with SUM over the group.
    assert two_ranks[1]["sweeps"][(op, inplace, dtype)].rows == sweep.rows
    metric = f"{COLLECTIVES[op].metric_name}.busbw_gbps"
    measurements = sweep.measurements()
    assert [m.metric for m in measurements] == [metric] * len(SIZES) + ["collective.wrong"]
    assert all(m.value > 0 and len(m.samples) == 3 for m in measurements[:-1])
    assert measurements[-1].value == 0


def test_size_is_rounded_to_whole_elements_per_rank(two_ranks):
    sweeps = two_ranks[0]["sweeps"]
    all_gather = sweeps[("all_gather", False, "fp32")].rows[0]
    assert (all_gather.size_bytes, all_gather.count) == (1024, 128)  # 1030 B -> 257 floats -> 128 per rank
    all_reduce = sweeps[("all_reduce", True, "fp32")].rows[0]
    assert (all_reduce.size_bytes, all_reduce.count) == (1028, 257)
    broadcast = sweeps[("broadcast", True, "int8")].rows[0]
    assert (broadcast.size_bytes, broadcast.root, broadcast.dtype) == (1030, 0, "int8")


def test_correctness_check_counts_corrupted_elements(two_ranks):
    corrupted = two_ranks[0]["corrupted"]
    assert [row.wrong for row in corrupted.rows] == [3, 3]
    assert corrupted.measurements()[-1].value == 6


def sweep_with_an_absent_peer(rank: int, world_size: int, timeout: float):
    """Rank 1 never joins; rank 0's sweep must give up after `timeout`, raising, not hang."""
    if rank == 1:
        time.sleep(timeout + 1)
        return None
    start = time.monotonic()
    try:
        sweep_collective("all_reduce", sizes=[1024], dtype="fp32", device=CPU, location=Location("h", rank),
                         inplace=True, timeout=timeout)
    except RuntimeError as exc:
        return str(exc), time.monotonic() - start
    return "no error", time.monotonic() - start


def test_a_sweep_waiting_on_an_absent_peer_raises_at_its_timeout():
    (message, elapsed), _ = run_local_ranks(sweep_with_an_absent_peer, 2, args=(1.5,), timeout=30)
    assert "timed out" in message.lower()
    assert 1.5 <= elapsed < 1.5 + 5  # gave up at its timeout, with room for a loaded CI machine
