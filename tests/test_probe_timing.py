"""Per-iteration timing, the soak, and sizing the cache flush from the host's cache topology."""

import time

import pytest
import torch

from clusterbench.probes import timing
from clusterbench.probes.devices import LocalDevice

CPU = LocalDevice("cpu", "cpu", 0, "test CPU", 8 << 30, None, 2)


def test_time_iterations_returns_one_positive_sample_per_iteration_and_flushes_between():
    calls = []
    seconds = timing.time_iterations(
        lambda: calls.append("fn"), device=CPU, warmup=2, iterations=4, before_each=lambda: calls.append("flush")
    )
    assert len(seconds) == 4
    assert all(s >= 0 for s in seconds)
    # Warm-up runs bare; every timed iteration is preceded by its own flush.
    assert calls == ["fn", "fn"] + ["flush", "fn"] * 4


def test_time_iterations_times_the_work_not_the_flush():
    flush_seconds = 0.05
    seconds = timing.time_iterations(
        lambda: None, device=CPU, warmup=0, iterations=3, before_each=lambda: time.sleep(flush_seconds)
    )
    # Had the flush been timed, every sample would be at least its sleep.
    assert all(s < flush_seconds for s in seconds)


def test_time_iterations_refuses_zero_iterations():
    with pytest.raises(ValueError, match="iterations"):
        timing.time_iterations(lambda: None, device=CPU, warmup=0, iterations=0)


def test_soak_runs_until_the_deadline():
    runs = timing.soak(lambda: None, device=CPU, seconds=0.01)
    assert runs >= 1


def test_gpu_style_cache_flush_writes_its_whole_buffer():
    flush = timing.CacheFlush(torch.ones(1 << 20, dtype=torch.int8), by_reading=False)
    assert flush.nbytes == 1 << 20
    flush()
    assert not flush.buffer.any()


def test_cpu_cache_flush_reads_a_written_buffer_of_the_flush_size(monkeypatch):
    monkeypatch.setattr(timing, "cpu_last_level_cache_bytes", lambda: 16 * 2**20)
    flush = timing.CacheFlush.for_device(CPU)
    assert flush.by_reading
    assert flush.nbytes == timing.flush_bytes(CPU) == timing.CPU_FLUSH_FLOOR_BYTES
    reads = []
    monkeypatch.setattr(torch.Tensor, "sum", lambda self: reads.append(self.numel()))
    flush()
    assert reads == [flush.buffer.numel()]


def _cache(root, cpu, index, level, kind, size, shared):
    path = root / f"cpu{cpu}" / "cache" / f"index{index}"
    path.mkdir(parents=True)
    for name, text in (("level", str(level)), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
        (path / name).write_text(text + "\n")


def test_last_level_cache_sums_each_instance_once(tmp_path):
    # Two core complexes of two CPUs, each complex with its own 32 MiB L3; per-CPU L1 and L2.
    for cpu in range(4):
        complex_cpus = "0-1" if cpu < 2 else "2-3"
        _cache(tmp_path, cpu, 0, 1, "Data", "32K", str(cpu))
        _cache(tmp_path, cpu, 1, 1, "Instruction", "32K", str(cpu))
        _cache(tmp_path, cpu, 2, 2, "Unified", "1M", str(cpu))
        _cache(tmp_path, cpu, 3, 3, "Unified", "32768K", complex_cpus)
    assert timing.cpu_last_level_cache_bytes(tmp_path) == 2 * 32 * 2**20


def test_last_level_cache_unknown_without_sysfs(tmp_path):
    assert timing.cpu_last_level_cache_bytes(tmp_path) is None


@pytest.mark.parametrize(
    "llc, expected",
    [
        (64 * 2**20, 128 * 2**20),  # twice the LLC
        (2**20, timing.CPU_FLUSH_FLOOR_BYTES),  # a tiny or misreported cache still gets a real flush
        (None, timing.CPU_FLUSH_FALLBACK_BYTES),  # unreadable: assume a big one
    ],
)
def test_cpu_flush_size_follows_the_last_level_cache(monkeypatch, llc, expected):
    monkeypatch.setattr(timing, "cpu_last_level_cache_bytes", lambda: llc)
    assert timing.flush_bytes(CPU) == expected
