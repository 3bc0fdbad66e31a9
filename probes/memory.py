"""Memory bandwidth (GB/s, 1e9 bytes per second): device copy, host-to-device and device-to-host.

Copy moves a buffer far larger than the last-level cache, so the figure is memory's and not the
cache's, and counts each byte twice (read once, written once), as STREAM and BabelStream count
"copy". Host-device copies start from (or land in) pinned host memory, as nvbandwidth does, and
count each byte once. Buffers hold random data; each iteration is timed on its own (device events
on a GPU) and the headline is the median.

Host-device copies run with the thread bound to the CPUs local to the GPU's PCIe root (sysfs
`local_cpulist`), and the pinned buffer is allocated under that binding, so its pages sit on the
GPU's NUMA node: what nvbandwidth's published figures assume, and what a well-configured training
job does. A copy across the socket link reads lower and would blame the GPU. Where the binding
cannot be made, the copy runs unbound and details["caveat"] says why.

Each measurement hands its cached device memory back when it ends and records its peak.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clusterbench.model import Location, Measurement, NotMeasured
from clusterbench.probes import timing
from clusterbench.probes.devices import LocalDevice
from clusterbench.probes.stats import summarize
from clusterbench.registry import declare_probe, metric

PROBE = declare_probe("memory", per="device", module=__name__, metrics=[
    metric("memory.copy_gbps", "GB/s", "higher", "memory",
           "device-to-device (or host memory) copy bandwidth, bytes read + written / time"),
    metric("memory.h2d_gbps", "GB/s", "higher", "memory", "host-to-device copy bandwidth from pinned memory"),
    metric("memory.d2h_gbps", "GB/s", "higher", "memory", "device-to-host copy bandwidth into pinned memory"),
])

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
    with timing.device_memory_phase(device) as memory:
        measurement = _measure_device_copy(device, quick=quick, location=location)
    memory.record_in(measurement.details)
    return measurement


def _measure_device_copy(device: LocalDevice, *, quick: bool, location: Location) -> Measurement:
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
    with timing.device_memory_phase(device) as memory, bound_to_local_cpus(device) as binding:
        release_pinned_host_cache()  # a cached pinned block may sit on another GPU's node: not reused
        measurement = _time_host_device(device, host_device_plan(quick), location=location, to_device=to_device)
        measurement.details["pinned_cache_released"] = release_pinned_host_cache()
    memory.record_in(measurement.details)
    binding.record_in(measurement.details)
    return measurement


def _time_host_device(device: LocalDevice, plan: CopyPlan, *, location: Location, to_device: bool) -> Measurement:
    # Allocated here, under the binding: pinning faults the pages in on the binding's NUMA node.
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


def release_pinned_host_cache() -> bool:
    """Free the pinned host blocks torch's host allocator cached; False where this torch has no way.

    Without it a pinned buffer freed after one GPU's copy is handed to the next GPU's, pages and
    NUMA node included, and a node's host memory stays pinned after the test.
    """
    accelerator = getattr(torch, "accelerator", None)
    release = getattr(accelerator, "empty_host_cache", None) or getattr(torch._C, "_host_emptyCache", None)
    if release is None:
        return False
    release()
    return True


PCI_DEVICES = Path("/sys/bus/pci/devices")


@dataclass
class HostBinding:
    """Where the host side of a host-device copy ran: the CPUs its thread was bound to, or why not."""

    pci_address: str | None = None  # the GPU's, "0000:18:00.0", where torch reports it
    cpus: frozenset[int] | None = None  # None: the copy ran unbound
    unbound_reason: str = ""

    def record_in(self, details: dict[str, object]) -> None:
        details["gpu_pci_address"] = self.pci_address
        if self.cpus is not None:
            details["host_cpus"] = format_cpu_list(self.cpus)
            details["host_binding"] = f"thread bound to the {len(self.cpus)} CPUs local to the GPU ({self.pci_address})"
        else:
            details["host_binding"] = "unbound"
            caveat = f"host side not bound to the GPU's NUMA node: {self.unbound_reason}"
            details["caveat"] = "; ".join(str(c) for c in (details.get("caveat"), caveat) if c)


def gpu_pci_address(device: LocalDevice, nvml: Any | None = None) -> str | None:
    """The GPU's PCI address as sysfs names it ("0000:18:00.0"); None where neither torch nor NVML says.

    torch's device properties carry pci_domain_id / pci_bus_id / pci_device_id in recent releases
    (torch.numa's binding reads them; older builds, which pyproject still allows, lack them), then
    function 0, as torch.numa assumes: a GPU's PCIe endpoint has one. Without them NVML is asked,
    by the device's UUID (CUDA and NVML number GPUs differently; the UUID is the name both share).
    """
    props = torch.cuda.get_device_properties(device.index)
    ids = [getattr(props, name, None) for name in ("pci_domain_id", "pci_bus_id", "pci_device_id")]
    if all(isinstance(i, int) for i in ids):
        domain, bus, slot = ids
        return f"{domain:04x}:{bus:02x}:{slot:02x}.0"
    return _nvml_pci_address(getattr(device, "uuid", None), nvml)


def _nvml_pci_address(uuid: str | None, nvml: Any | None) -> str | None:
    """NVML's bus id of the GPU with `uuid` in sysfs form: "00000000:1B:00.0" -> "0000:1b:00.0"."""
    if not uuid:
        return None
    from clusterbench.probes.health.nvml_session import nvml_session  # NVML only where torch lacks the fields

    name = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    try:
        with nvml_session(nvml) as session:
            bus_id = session.nvmlDeviceGetPciInfo(session.nvmlDeviceGetHandleByUUID(name)).busId
    except Exception:  # noqa: BLE001 - no NVML, no such GPU, an old binding: the caller falls back visibly
        return None
    text = bus_id.decode() if isinstance(bus_id, bytes) else str(bus_id)
    domain, _, rest = text.partition(":")
    try:
        return f"{int(domain, 16):04x}:{rest.lower()}"
    except ValueError:
        return None


def parse_cpu_list(text: str) -> frozenset[int]:
    """sysfs's CPU list format: "0-3,8,10-11" -> {0, 1, 2, 3, 8, 10, 11}."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def format_cpu_list(cpus: frozenset[int] | set[int]) -> str:
    """The inverse of parse_cpu_list, ranges collapsed: {0, 1, 2, 5} -> "0-2,5"."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in ranges)


def _plan_binding(device: LocalDevice, allowed: frozenset[int], pci_devices: Path) -> HostBinding:
    """The CPUs to bind to, or why there are none: no PCI address, no sysfs file, none allowed."""
    address = gpu_pci_address(device)
    if address is None:
        return HostBinding(None, None, f"torch {torch.__version__}'s device properties carry no PCI address "
                                       "and NVML did not give one")
    cpulist = pci_devices / address / "local_cpulist"
    try:
        local = parse_cpu_list(cpulist.read_text())
    except (OSError, ValueError) as exc:
        return HostBinding(address, None, f"{cpulist} unreadable ({getattr(exc, 'strerror', None) or exc})")
    usable = local & allowed
    if not usable:
        return HostBinding(address, None, f"none of its local CPUs ({format_cpu_list(local)}) is allowed to this "
                                          f"process (allowed: {format_cpu_list(allowed)}); check the job's CPU binding")
    return HostBinding(address, usable)


@contextlib.contextmanager
def bound_to_local_cpus(device: LocalDevice, pci_devices: Path | None = None) -> Iterator[HostBinding]:
    """Run the block with this thread bound to the GPU's local CPUs (those this process may use);
    the previous affinity is restored after. Yields the binding made, or why none was."""
    if not hasattr(os, "sched_setaffinity"):
        yield HostBinding(None, None, "this platform has no sched_setaffinity")
        return
    previous = frozenset(os.sched_getaffinity(0))
    binding = _plan_binding(device, previous, pci_devices or PCI_DEVICES)
    if binding.cpus is None:
        yield binding
        return
    os.sched_setaffinity(0, binding.cpus)  # pid 0: the calling thread only (Linux)
    try:
        yield binding
    finally:
        os.sched_setaffinity(0, previous)


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


# Each declared metric's probe, so that the suite parametrizes over PROBE's metrics alone.
MEASURES = {"memory.copy_gbps": measure_copy, "memory.h2d_gbps": measure_h2d, "memory.d2h_gbps": measure_d2h}
