"""The Python engine: fio's figures from threads doing one aligned I/O at a time, every written block
read back and compared, and a corrupted block caught."""

import os
import struct
from dataclasses import replace

import pytest

from clusterbench.probes.storage import StorageIntegrityError, Workload
from clusterbench.probes.storage.figures import INTERVAL_S
from clusterbench.probes.storage.python_engine import BlockContent, run_python, thread_limit

MiB = 1 << 20
RANDREAD = Workload("randread_4k", "randread", 4096, iodepth=1, numjobs=2, size_per_job=4 * MiB, runtime_s=1.0)
RANDWRITE = Workload("randwrite_4k", "randwrite", 4096, iodepth=1, numjobs=2, size_per_job=MiB, runtime_s=5.0)
SEQWRITE = Workload("seqwrite_1m", "write", MiB, iodepth=1, numjobs=2, size_per_job=4 * MiB, runtime_s=5.0)


def test_random_read_counts_ios_times_each_and_samples_half_seconds(workspace):
    figures = run_python(RANDREAD, workspace)
    assert (figures.engine, figures.ioengine) == ("python", "python-threads")
    assert 1.0 <= figures.seconds < 2.0  # stops at its runtime (room for a loaded CI machine)
    assert figures.iops == pytest.approx(figures.total_ios / figures.seconds)
    assert figures.bandwidth_bps == pytest.approx(figures.iops * 4096)
    latency = figures.latency_ns
    assert 0 < latency["p50"] <= latency["p99"] <= latency["p99.9"]
    assert len(figures.interval_iops) == int(figures.seconds / INTERVAL_S)
    assert sum(figures.interval_iops) * INTERVAL_S <= figures.total_ios
    assert os.listdir(workspace.path) == []


def test_the_ramp_is_run_but_not_counted(workspace):
    # A ramp four times the runtime: counted, it would read 2.5 s; not counted, 0.5 s plus scheduling.
    figures = run_python(replace(RANDREAD, runtime_s=0.5, ramp_s=2.0), workspace)
    assert 0.5 <= figures.seconds < 1.5


@pytest.mark.parametrize("workload", [RANDWRITE, SEQWRITE], ids=["random", "sequential"])
def test_every_written_block_is_verified(workspace, workload):
    figures = run_python(workload, workspace)
    assert figures.total_ios * workload.block_size == workload.footprint  # the files were written once through
    assert figures.verified_bytes == workload.footprint


@pytest.mark.parametrize("workload", [RANDWRITE, SEQWRITE], ids=["random", "sequential"])
def test_a_block_corrupted_after_writing_is_caught(workspace, workload):
    def corrupt(paths):
        fd = os.open(paths[1], os.O_WRONLY)
        os.pwrite(fd, b"\x00", workload.block_size + 20)
        os.close(fd)

    with pytest.raises(StorageIntegrityError) as error:
        run_python(workload, workspace, after_write=corrupt)
    message = str(error.value)
    assert f"block at offset {workload.block_size} of" in message and workload.file_names()[1] in message
    assert "differs from what was written" in message and "\n" not in message
    assert os.listdir(workspace.path) == []


def test_a_block_written_to_the_wrong_offset_is_caught(workspace):
    def swap_first_two_blocks(paths):
        fd = os.open(paths[0], os.O_RDWR)
        first, second = os.pread(fd, 4096, 0), os.pread(fd, 4096, 4096)
        os.pwrite(fd, second, 0)
        os.pwrite(fd, first, 4096)
        os.close(fd)

    with pytest.raises(StorageIntegrityError, match="block at offset 0 of"):
        run_python(RANDWRITE, workspace, after_write=swap_first_two_blocks)


def test_block_content_is_random_unique_per_offset_and_reproducible():
    content = BlockContent(4096)
    a, b, again = bytearray(4096), bytearray(4096), bytearray(4096)
    content.fill(memoryview(a), 0)
    content.fill(memoryview(b), 4096)
    content.fill(memoryview(again), 0)
    assert a == again and a != b
    assert struct.unpack_from("<QQ", b) == (4096, content.token)
    assert len(set(a[16:])) > 200  # random bytes, not a pattern


def test_only_synchronous_workloads_run_and_threads_follow_the_cores():
    with pytest.raises(ValueError, match="synchronous"):
        run_python(replace(RANDREAD, iodepth=4), workspace=None)
    queued = replace(RANDREAD, iodepth=32, numjobs=1, size_per_job=64 * MiB)
    synchronous = queued.synchronous(thread_limit())
    assert synchronous.iodepth == 1
    assert synchronous.numjobs == min(32, thread_limit()) and 1 <= thread_limit() <= 16
    assert synchronous.footprint == queued.footprint
