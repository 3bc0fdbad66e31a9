"""Sweep progress on rank 0: one line per finished step in a log, a rich bar in a terminal; the
collective probe reports each size through a plain callback, and the glue passes the reporter's."""

from __future__ import annotations

import io

import torch

from clusterbench import progress
from clusterbench.model import Location
from clusterbench.probes.collectives import sweep_collective
from clusterbench.runners import collectives as collective_runs


def test_without_a_tty_one_plain_line_per_finished_step():
    stream = io.StringIO()
    reporter = progress.ProgressReporter(stream, tty=False)
    callback = reporter.step_callback("all_reduce out-of-place")
    callback(1, 2, "1048576 B: busbw 0.50 GB/s")
    callback(2, 2, "4194304 B: busbw 0.90 GB/s")
    assert stream.getvalue().splitlines() == [
        "",  # the first line of a task starts a line of its own
        "clusterbench: all_reduce out-of-place 1/2: 1048576 B: busbw 0.50 GB/s",
        "clusterbench: all_reduce out-of-place 2/2: 4194304 B: busbw 0.90 GB/s",
    ]


def test_with_a_tty_a_rich_bar_that_goes_when_the_sweep_is_done():
    stream = io.StringIO()
    reporter = progress.ProgressReporter(stream, tty=True)
    reporter.step_callback("all_gather in-place")(1, 3, "1048576 B")
    assert reporter._progress is not None  # a live bar while the sweep runs
    reporter.step_callback("all_gather in-place")(3, 3, "16777216 B")
    assert reporter._progress is None and "all_gather in-place" in stream.getvalue()
    assert "\x1b[" in stream.getvalue()  # drawn with terminal control codes, not plain lines


def test_the_sweep_reports_each_size_on_rank_0(one_rank_group):
    steps = []
    sweep = sweep_collective("all_reduce", sizes=[1024, 4096, 16384], dtype="fp32", device=torch.device("cpu"),
                             location=Location("h"), inplace=True, warmup=1, iterations=1, repeats=1,
                             on_step=lambda done, total, detail: steps.append((done, total, detail)))
    assert [(d, t) for d, t, _ in steps] == [(1, 3), (2, 3), (3, 3)]
    assert all("busbw" in detail for _, _, detail in steps) and len(sweep.rows) == 3


def test_the_glue_hands_the_installed_reporters_callback_to_the_probe():
    assert collective_runs._step_callback("all_reduce", False) is None  # nothing installed: no progress
    stream = io.StringIO()
    progress.install(progress.ProgressReporter(stream, tty=False))
    try:
        callback = collective_runs._step_callback("all_reduce", True)
        callback(1, 1, "done")
    finally:
        progress.install(None)
    assert stream.getvalue() == "\nclusterbench: all_reduce in-place 1/1: done\n"


def _report_two_steps_from_rank_0(rank: int, world_size: int) -> int:
    reporter = progress.current()
    if rank == 0 and reporter is not None:
        callback = reporter.step_callback("all_reduce in-place")
        callback(1, 2, "1048576 B")
        callback(2, 2, "4194304 B")
    return rank


def test_local_rank_0_forwards_its_steps_to_the_parents_reporter():
    from clusterbench.runners.local_ranks import run_local_ranks

    stream = io.StringIO()
    progress.install(progress.ProgressReporter(stream, tty=False))
    try:
        results = run_local_ranks(_report_two_steps_from_rank_0, 2, timeout=120)
    finally:
        progress.install(None)
    assert results == [0, 1]  # the steps travelled ahead of the result and did not replace it
    assert stream.getvalue().split("\n")[1:3] == ["clusterbench: all_reduce in-place 1/2: 1048576 B",
                                                  "clusterbench: all_reduce in-place 2/2: 4194304 B"]


def test_the_gemm_and_storage_probes_report_each_shape_and_workload(tmp_path):
    from clusterbench.probes.devices import local_devices
    from clusterbench.probes.gemm import gemm_sweep, measure_gemm
    from clusterbench.probes.storage import measure_storage
    from test_storage_api import SMALL

    cpu = local_devices()[0]
    steps = []
    measure_gemm(cpu, "fp32", quick=True, location=Location("h"), on_step=lambda *step: steps.append(step))
    shapes = gemm_sweep(cpu, "fp32", quick=True).shapes
    assert [(d, t) for d, t, _ in steps] == [(i, len(shapes)) for i in range(1, len(shapes) + 1)]
    assert all("TFLOP/s" in detail for _, _, detail in steps)
    steps.clear()
    measure_storage(tmp_path, engine="python", on_step=lambda *step: steps.append(step), **SMALL)
    assert steps == [(i, 4, w.name) for i, w in enumerate(SMALL["workloads"], start=1)]
