"""Memory probes: host copy on a CPU, byte counting, buffer sizing, and no host-device copy without a GPU."""

import statistics

import pytest

from clusterbench.model import Location, NotMeasured
from clusterbench.probes import memory, timing
from clusterbench.probes.devices import LocalDevice

CPU = LocalDevice("cpu", "cpu", 0, "test CPU", 64 << 30, None, 2)
HERE = Location("node01", 0, "cpu")


def test_cpu_copy_measures_host_memory_counting_read_and_write():
    result = memory.measure_copy(CPU, quick=True, location=HERE)
    plan = memory.copy_plan(CPU, quick=True)
    assert (result.metric, result.unit) == ("memory.copy_gbps", "GB/s")
    assert result.value > 0
    assert len(result.samples) == plan.iterations
    assert result.value == pytest.approx(statistics.median(result.samples))
    assert result.details["buffer_bytes"] == plan.nbytes
    assert result.details["bytes_counted"] == 2 * plan.nbytes
    assert result.details["iterations"] == plan.iterations


def test_copy_bandwidth_is_bytes_counted_over_seconds_in_decimal_gb(monkeypatch):
    monkeypatch.setattr(memory, "copy_plan", lambda device, quick: memory.CopyPlan(4096, warmup=0, iterations=3))
    monkeypatch.setattr(timing, "time_iterations", lambda fn, **kw: [1e-6, 2e-6, 4e-6])
    result = memory.measure_copy(CPU, quick=True, location=HERE)
    # 8192 bytes (read + write) in 2 us is 4.096 GB/s (GB = 1e9 bytes).
    assert result.samples == pytest.approx([8.192, 4.096, 2.048])
    assert result.value == pytest.approx(4.096)


def test_cpu_copy_buffer_dwarfs_the_last_level_cache(monkeypatch):
    monkeypatch.setattr(timing, "cpu_last_level_cache_bytes", lambda: 96 * memory.MiB)
    assert memory.copy_plan(CPU, quick=True).nbytes == 4 * 96 * memory.MiB
    monkeypatch.setattr(timing, "cpu_last_level_cache_bytes", lambda: None)
    assert memory.copy_plan(CPU, quick=True).nbytes == 64 * memory.MiB
    assert memory.copy_plan(CPU, quick=False).nbytes == 256 * memory.MiB


def test_gpu_copy_buffer_is_capped_by_device_memory():
    big = LocalDevice("cuda:0", "cuda", 0, "big GPU", 80 << 30, (9, 0), 132)
    small = LocalDevice("cuda:0", "cuda", 0, "small GPU", 4 << 30, (8, 6), 20)
    assert memory.copy_plan(big, quick=False).nbytes == 4 * memory.GiB
    assert memory.copy_plan(small, quick=False).nbytes == 512 * memory.MiB


@pytest.mark.parametrize(
    "probe, direction", [(memory.measure_h2d, "host-to-device"), (memory.measure_d2h, "device-to-host")]
)
def test_host_device_copies_need_a_gpu(probe, direction):
    with pytest.raises(NotMeasured, match=f"no accelerator: {direction} bandwidth needs a GPU"):
        probe(CPU, quick=True, location=HERE)
