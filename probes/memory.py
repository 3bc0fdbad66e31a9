"""Memory bandwidth (GB/s, 1e9 bytes per second): device copy, host-to-device and device-to-host.

Copy moves a buffer far larger than the last-level cache, so the figure is memory's and not the
cache's, and counts each byte twice (read once, written once), as STREAM and BabelStream count
"copy". Host-device copies start from (or land in) pinned host memory, as nvbandwidth does, and
count each byte once. Buffers hold random data; each iteration is timed on its own (device events
on a GPU) and the headline is the median.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from clusterbench.model import Location, Measurement, NotMeasured
from clusterbench.probes import timing
from clusterbench.probes.devices import LocalDevice
from clusterbench.probes.stats import summarize

UNIT = "GB/s"
MiB = 1 << 20
GiB = 1 << 30
FLOAT_BYTES = 4  # buffers are float32, filled by torch.rand (the fastest random fill on a CPU)


@dataclass(frozen=True)
class CopyPlan:
    nbytes: int
    warmup: int
    iterations: int


def copy_plan(device: LocalDevice, quick: bool) -> CopyPlan:
    """Buffer size and iteration counts for a device copy.

    GPU: 1 GiB (quick) or 4 GiB: far above every L2 and MI300X's 256 MiB Infinity Cache, and still a
    fraction of a second per iteration at HBM speeds. CPU: at least four times the total LLC.
    Never more than an eighth of the device's memory (the copy needs two buffers).
    """
    if device.kind == "cuda":
        wanted = 1 * GiB if quick else 4 * GiB
    else:
        llc = timing.cpu_last_level_cache_bytes() or 0
        wanted = max(64 * MiB if quick else 256 * MiB, 4 * llc)
    nbytes = min(wanted, device.memory_bytes // 8)
    nbytes -= nbytes % FLOAT_BYTES
    return CopyPlan(nbytes, warmup=3 if quick else 5, iterations=10 if quick else 50)


def host_device_plan(quick: bool) -> CopyPlan:
    # 256 MiB takes ~5 ms at PCIe 5 x16 speed: long enough that launch overhead is noise.
    return CopyPlan(256 * MiB if quick else GiB, warmup=3 if quick else 5, iterations=10 if quick else 30)


def measure_copy(device: LocalDevice, *, quick: bool, location: Location) -> Measurement:
    """Device-to-device copy bandwidth (host memory on a CPU device), bytes read + written."""
    plan = copy_plan(device, quick)
    src = torch.rand(plan.nbytes // FLOAT_BYTES, device=device.torch_device)
    dst = torch.empty_like(src)
    return _measure(
        lambda: dst.copy_(src),
        device=device,
        plan=plan,
        bytes_counted=2 * plan.nbytes,
        metric="memory.copy_gbps",
        location=location,
        details={"counting": "read + write: 2 x buffer_bytes, as STREAM/BabelStream count copy"},
    )


def measure_h2d(device: LocalDevice, *, quick: bool, location: Location) -> Measurement:
    """Host-to-device bandwidth from pinned host memory."""
    return _measure_host_device(device, quick=quick, location=location, to_device=True)


def measure_d2h(device: LocalDevice, *, quick: bool, location: Location) -> Measurement:
    """Device-to-host bandwidth into pinned host memory."""
    return _measure_host_device(device, quick=quick, location=location, to_device=False)


def _measure_host_device(device: LocalDevice, *, quick: bool, location: Location, to_device: bool) -> Measurement:
    _require_accelerator(device, "host-to-device" if to_device else "device-to-host")
    plan = host_device_plan(quick)
    host = torch.rand(plan.nbytes // FLOAT_BYTES, pin_memory=True)
    on_device = torch.rand(host.shape, device=device.torch_device)
    source, target = (host, on_device) if to_device else (on_device, host)
    return _measure(
        lambda: target.copy_(source, non_blocking=True),
        device=device,
        plan=plan,
        bytes_counted=plan.nbytes,
        metric="memory.h2d_gbps" if to_device else "memory.d2h_gbps",
        location=location,
        details={"pinned": True, "counting": "buffer_bytes once"},
    )


def _require_accelerator(device: LocalDevice, direction: str) -> None:
    if device.kind != "cuda":
        raise NotMeasured(f"no accelerator: {direction} bandwidth needs a GPU")


def _measure(
    copy: Callable[[], object],
    *,
    device: LocalDevice,
    plan: CopyPlan,
    bytes_counted: int,
    metric: str,
    location: Location,
    details: dict[str, object],
) -> Measurement:
    # The warm-up also faults in the destination's pages, which torch.empty leaves untouched.
    seconds = timing.time_iterations(copy, device=device, warmup=plan.warmup, iterations=plan.iterations)
    gbps = [bytes_counted / s / 1e9 for s in seconds]
    return Measurement(
        metric=metric,
        value=summarize(gbps).median,
        unit=UNIT,
        params={},
        location=location,
        samples=gbps,
        details={
            "buffer_bytes": plan.nbytes,
            "bytes_counted": bytes_counted,
            "warmup": plan.warmup,
            "iterations": plan.iterations,
            **details,
        },
    )
