"""Per-iteration timing of device work, and the cache flush that keeps iterations honest.

On a GPU, kernels run asynchronously: a host clock around a launch times the launch, not the work.
So each iteration is bracketed by its own pair of CUDA events and the host synchronises once at the
end, as mamf-finder does; the flush (or any other `before_each` work) runs between the pairs, untimed.
On a CPU, torch ops return when their work is done, so `time.perf_counter` around each call suffices.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from clusterbench.probes.devices import LocalDevice

MiB = 1 << 20
# mamf-finder's flush size: above every current GPU's L2 (A100 40 MiB, H100 50 MiB, B200 ~126 MB)
# and equal to MI300X's 256 MiB Infinity Cache.
GPU_FLUSH_BYTES = 256 * MiB
# Where the CPU cache sizes cannot be read (not Linux, a container hiding /sys), flush this much.
CPU_FLUSH_FALLBACK_BYTES = 256 * MiB
CPU_FLUSH_FLOOR_BYTES = 32 * MiB

Hook = Callable[[], object]  # untimed work between iterations: a cache flush, an output refill


def time_iterations(
    fn: Callable[[], object],
    *,
    device: LocalDevice,
    warmup: int,
    iterations: int,
    before_each: Hook | None = None,
) -> list[float]:
    """Run `fn` `warmup` times untimed, then `iterations` times timed; seconds per timed iteration.

    `before_each` (a cache flush, an output reset) runs before every timed iteration, outside the timing.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    with _on(device):
        for _ in range(warmup):
            fn()
        if device.kind == "cuda":
            return _time_with_events(fn, iterations, before_each)
        return _time_with_host_clock(fn, iterations, before_each)


def soak(fn: Callable[[], object], *, device: LocalDevice, seconds: float) -> int:
    """Run `fn` back to back for `seconds` (untimed); returns how many times it ran.

    A cold GPU boosts its clocks and scores higher than it sustains, so mamf-finder loads it for a
    while before measuring. Synchronising each call keeps the launch queue from running far past
    the deadline.
    """
    runs = 0
    deadline = time.perf_counter() + seconds
    with _on(device):
        while time.perf_counter() < deadline:
            fn()
            synchronize(device)
            runs += 1
    return runs


@dataclass
class DeviceMemoryPhase:
    """What one measurement held of its device's memory: the peak torch allocated while it ran."""

    peak_bytes: int | None = None  # None on a CPU: host memory is not the caching allocator's

    def record_in(self, details: dict[str, object]) -> None:
        if self.peak_bytes is not None:
            details["peak_device_memory_bytes"] = self.peak_bytes


@contextlib.contextmanager
def device_memory_phase(device: LocalDevice) -> Iterator[DeviceMemoryPhase]:
    """Measure the block's peak device memory, and hand the memory it cached back afterwards.

    torch's caching allocator keeps every block a measurement freed, so without this a parent
    process holds gigabytes on each GPU after its GEMM and copy tests (the largest sweep's operands,
    the flush buffer), memory the next phase, another rank, or a collective's buffers then lack.
    empty_cache can only return blocks no tensor holds: the block must drop its tensors before it
    ends (return from the function that made them). It runs on the way out of a failure too.
    """
    phase = DeviceMemoryPhase()
    if device.kind != "cuda":
        yield phase
        return
    with torch.cuda.device(device.index):
        torch.cuda.reset_peak_memory_stats(device.index)
        try:
            yield phase
            phase.peak_bytes = int(torch.cuda.max_memory_allocated(device.index))
        finally:
            torch.cuda.empty_cache()


def synchronize(device: LocalDevice) -> None:
    """Wait for all queued work on `device` (CPU work is synchronous: nothing to wait for)."""
    if device.kind == "cuda":
        torch.cuda.synchronize(device.index)


@contextlib.contextmanager
def _on(device: LocalDevice) -> Iterator[None]:
    """Make `device` current, so events record on the stream its kernels are queued on."""
    if device.kind == "cuda":
        with torch.cuda.device(device.index):
            yield
    else:
        yield


def _time_with_events(fn: Callable[[], object], iterations: int, before_each: Hook | None) -> list[float]:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iterations)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iterations)]
    for start, end in zip(starts, ends):
        if before_each is not None:
            before_each()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) / 1e3 for start, end in zip(starts, ends)]  # elapsed_time is in ms


def _time_with_host_clock(fn: Callable[[], object], iterations: int, before_each: Hook | None) -> list[float]:
    seconds = []
    for _ in range(iterations):
        if before_each is not None:
            before_each()
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


@dataclass
class CacheFlush:
    """A buffer larger than the device's last-level cache; calling it streams the whole buffer
    through the cache, evicting whatever the previous iteration left there, so each timed iteration
    reads its operands from memory as a kernel inside a real step would.

    A GPU flush writes (zero_), as mamf-finder does, so GPU figures compare with its published ones;
    dirty L2 lines cost a GPU microseconds to write back. A CPU flush reads instead: 2 x LLC of dirty
    lines take milliseconds to write back at DRAM speed, and that write-back lands inside the next
    timed iteration (on a 2-core EPYC VM, a writing flush cost 512^3 fp32 about 7%, a reading one nothing
    measurable; both evict: a 4 MiB read took ~80 us warm and ~300 us after either flush).
    """

    buffer: torch.Tensor
    by_reading: bool

    @classmethod
    def for_device(cls, device: LocalDevice) -> CacheFlush:
        nbytes = flush_bytes(device)
        if device.kind == "cuda":
            return cls(torch.empty(nbytes, dtype=torch.int8, device=device.torch_device), by_reading=False)
        # zeros, not empty: pages never written all map to the kernel's one zero page, and reading
        # those would evict nothing.
        return cls(torch.zeros(nbytes // 4, dtype=torch.float32), by_reading=True)

    @property
    def nbytes(self) -> int:
        return self.buffer.numel() * self.buffer.element_size()

    def __call__(self) -> None:
        if self.by_reading:
            self.buffer.sum()
        else:
            self.buffer.zero_()


def flush_bytes(device: LocalDevice) -> int:
    """How big a buffer must be to flush `device`'s last-level cache."""
    if device.kind == "cuda":
        l2 = getattr(torch.cuda.get_device_properties(device.index), "L2_cache_size", 0)
        return max(GPU_FLUSH_BYTES, 2 * l2)
    llc = cpu_last_level_cache_bytes()
    if llc is None:
        return CPU_FLUSH_FALLBACK_BYTES
    return max(CPU_FLUSH_FLOOR_BYTES, 2 * llc)


def cpu_last_level_cache_bytes(cpu_root: Path = Path("/sys/devices/system/cpu")) -> int | None:
    """Total size of the host's last-level cache, all instances together; None where /sys lacks it.

    An EPYC has one L3 per core complex and a two-socket server one per socket; a multi-threaded GEMM
    spreads its operands over all of them, so the instances are summed (each counted once, by the
    CPUs that share it).
    """
    instances: dict[tuple[int, str], int] = {}
    for index in cpu_root.glob("cpu[0-9]*/cache/index[0-9]*"):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = _parse_cache_size((index / "size").read_text())
            shared_by = (index / "shared_cpu_list").read_text().strip()
        except (OSError, ValueError):
            continue
        if kind != "Instruction":
            instances[(level, shared_by)] = size
    if not instances:
        return None
    top = max(level for level, _ in instances)
    return sum(size for (level, _), size in instances.items() if level == top)


def _parse_cache_size(text: str) -> int:
    """sysfs writes cache sizes as '32768K' (sometimes 'M' or plain bytes)."""
    text = text.strip().upper()
    for suffix, scale in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * scale
    return int(text)
