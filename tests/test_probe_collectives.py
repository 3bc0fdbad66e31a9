"""Collective probes: nccl-tests' bandwidth math, exact-result checks, and real 2-rank Gloo sweeps."""

from __future__ import annotations

import time

import pytest
import torch
import torch.distributed as dist

from clusterbench.metrics import METRICS
from clusterbench.model import Better, Location, NotMeasured
from clusterbench.probes import collectives
from clusterbench.probes.collective_ops import (
    COLLECTIVES,
    AllReduce,
    Buffers,
    GroupView,
    _reduce_expected,
    _reduce_input,
    busbw_factor,
)
from clusterbench.probes.collectives import (
    CollectiveRow,
    CollectiveSweep,
    RepeatTimer,
    blocking_wait_caveat,
    size_sweep,
    sweep_collective,
)
from clusterbench.reports.collective_table import average_busbw, render_table, timing_line
from clusterbench.runners.local_ranks import run_local_ranks

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


def test_judged_busbw_and_time_are_the_rows_figures_with_a_sample_per_repeat():
    row = _row(1_000_000, busbw=99.0, samples=(10.0, 40.0, 20.0))  # three repeats' time per op, in us
    sweep = CollectiveSweep("all_reduce", "fp32", True, "gloo", 4, Location("h", 0), (row,), iterations=20, repeats=3)
    busbw, time_us, wrong = sweep.measurements()
    params = {"size_bytes": 1_000_000, "ranks": 4, "dtype": "fp32", "inplace": True, "backend": "gloo"}
    assert (busbw.metric, busbw.unit, busbw.params) == ("allreduce.busbw_gbps", "GB/s", params)
    # One busbw a size: what the table prints is what is judged, plotted and stored.
    assert busbw.value == row.busbw_gbps == 99.0
    assert busbw.samples == pytest.approx([150.0, 37.5, 75.0])  # S / t * 2(n-1)/n of each repeat
    assert not any("nccl_tests" in key for key in busbw.details)
    assert (time_us.metric, time_us.unit, time_us.params, time_us.value) == ("allreduce.time_us", "us", params, 12.5)
    assert time_us.samples == [10.0, 40.0, 20.0]
    assert (busbw.details["iterations_per_repeat"], busbw.details["repeats"]) == (20, 3)
    assert "caveat" not in busbw.details
    assert (wrong.metric, wrong.value, wrong.params["op"]) == ("collective.wrong", 0.0, "all_reduce")


def test_every_collective_has_a_time_metric_shaped_like_its_busbw():
    for collective in COLLECTIVES.values():
        busbw, time_us = METRICS[f"{collective.metric_name}.busbw_gbps"], METRICS[f"{collective.metric_name}.time_us"]
        assert (time_us.unit, time_us.better, time_us.family) == ("us", Better.LOWER, "network")
        assert (time_us.params, time_us.judged_at_max) == (busbw.params, busbw.judged_at_max)


def test_blocking_wait_is_a_caveat_of_nccl_figures_only():
    assert blocking_wait_caveat("nccl", {}) is None
    assert blocking_wait_caveat("nccl", {"TORCH_NCCL_BLOCKING_WAIT": "0"}) is None
    caveat = blocking_wait_caveat("nccl", {"TORCH_NCCL_BLOCKING_WAIT": "1"})
    assert caveat.startswith("TORCH_NCCL_BLOCKING_WAIT=1: ") and "\n" not in caveat
    assert blocking_wait_caveat("nccl", {"NCCL_BLOCKING_WAIT": "true"}).startswith("NCCL_BLOCKING_WAIT=true")
    assert blocking_wait_caveat("gloo", {"TORCH_NCCL_BLOCKING_WAIT": "1"}) is None
    sweep = CollectiveSweep("broadcast", "bf16", True, "nccl", 8, Location("h", 0), (_row(4096, 1.0),), caveat=caveat)
    assert all(m.details["caveat"] == caveat for m in sweep.measurements()[:-1])


def test_table_has_nccl_tests_columns_and_average_footer():
    out_of_place = [_row(1024, 1.0), _row(1048576, 3.0, wrong=2)]
    in_place = [_row(1048576, 2.0)]
    lines = render_table(out_of_place, in_place, title="all_reduce").splitlines()
    assert lines[0] == "# all_reduce"
    timed = render_table(out_of_place, in_place, title="all_reduce", timing=timing_line(20, 5)).splitlines()
    assert timed[1] == ("# time: median of 5 repeats of (20 back-to-back ops) / 20, the slowest rank's; "
                        "busbw from it is the judged figure")
    assert timed[:1] + timed[2:] == lines
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
    common = dict(sizes=SIZES, device=CPU, location=location, warmup=1, iterations=3, repeats=2, timeout=30)
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
        assert len(row.samples_us) == 2  # one per repeat
        assert row.time_us == pytest.approx(sum(row.samples_us) / 2)  # the median of two
        assert row.busbw_gbps == pytest.approx(row.algbw_gbps * busbw_factor(op, 2))
        assert row.algbw_gbps == pytest.approx(row.size_bytes / row.time_us / 1e3)
    # Ranks agree: times are combined with MAX and #wrong with SUM over the group.
    assert two_ranks[1]["sweeps"][(op, inplace, dtype)].rows == sweep.rows
    name = COLLECTIVES[op].metric_name
    measurements = sweep.measurements()
    per_size = [f"{name}.busbw_gbps", f"{name}.time_us"]
    assert [m.metric for m in measurements] == per_size * len(SIZES) + ["collective.wrong"]
    assert [m.value for m in measurements[:-1]] == [f for row in sweep.rows for f in (row.busbw_gbps, row.time_us)]
    assert all(m.value > 0 and len(m.samples) == 2 for m in measurements[:-1])
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


class FakeClock:
    """time.perf_counter for the probe, advanced only by the ops of a ScriptedAllReduce."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class ScriptedAllReduce(AllReduce):
    """A real all_reduce whose every launch takes a scripted time on the fake clock: `pattern` (us) by
    launch index within each group of len(pattern) launches, times `slow` in the `slow_group`-th group."""

    def __init__(self, clock: FakeClock, pattern: list[float], slow_group: int, slow: float) -> None:
        self.clock, self.pattern, self.slow_group, self.slow = clock, pattern, slow_group, slow
        self.launches = 0

    def launch(self, buffers: Buffers, view: GroupView) -> list[dist.Work]:
        group, position = divmod(self.launches, len(self.pattern))
        self.clock.now += self.pattern[position] * (self.slow if group == self.slow_group else 1) * 1e-6
        self.launches += 1
        return super().launch(buffers, view)


def test_headline_is_the_median_repeat_of_back_to_back_ops_not_the_median_op(one_rank_group, monkeypatch):
    """Per repeat of 4 ops, one op is slow (1, 1, 1, 9 us): nccl-tests' time is 12 / 4 = 3 us per op,
    though the median single op takes 1 us. One repeat of three is ten times slower: the median
    over repeats keeps it out of the figure, and it stays in the samples."""
    clock = FakeClock()
    monkeypatch.setattr(collectives, "time", clock)
    # Launches 0-3 are the warm-up, 4-7, 8-11 and 12-15 the three repeats (the second one slow).
    op = ScriptedAllReduce(clock, [1.0, 1.0, 1.0, 9.0], slow_group=2, slow=10.0)
    sweep = sweep_collective(op, sizes=[4000], dtype="fp32", device=CPU, location=Location("h", 0), inplace=True,
                             warmup=4, iterations=4, repeats=3)
    (row,) = sweep.rows
    assert row.samples_us == pytest.approx((3.0, 30.0, 3.0))
    assert row.time_us == pytest.approx(3.0)
    busbw = sweep.measurements()[0]
    assert busbw.value == row.busbw_gbps == pytest.approx(4000 / 3e-6 / 1e9 * busbw_factor("all_reduce", 1))


class FakeCudaEvent:
    """torch.cuda.Event as a GPU stream sees it: record() stamps the stream's clock, elapsed_time in ms."""

    def __init__(self, stream_clock: list[float], log: list[str], enable_timing: bool = False) -> None:
        assert enable_timing
        self.stream_clock, self.log, self.at = stream_clock, log, None

    def record(self) -> None:
        self.at = self.stream_clock[0]
        self.log.append("record")

    def elapsed_time(self, end: FakeCudaEvent) -> float:
        assert self.at is not None and end.at is not None, "both events must be recorded"
        return (end.at - self.at) * 1e3


def test_repeat_timer_on_gpu_times_with_events_on_the_stream_and_syncs_outside_the_span(monkeypatch):
    stream_clock, log = [5.0], []
    monkeypatch.setattr(torch.cuda, "Event", lambda **kw: FakeCudaEvent(stream_clock, log, **kw))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append(f"sync {device}"))
    timer = RepeatTimer(torch.device("cuda", 3))
    timer.start()
    stream_clock[0] += 0.004  # the stream runs the n ops: 4 ms
    elapsed = timer.stop()
    assert elapsed == pytest.approx(0.004)  # seconds, from elapsed_time's milliseconds
    # Synchronised before the start event (nothing earlier inside the span) and before reading the events.
    assert log == ["sync cuda:3", "record", "record", "sync cuda:3"]
