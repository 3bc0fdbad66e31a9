"""Memory probes on a GPU node, modelled on the CPU: host-device copies bound to the GPU's NUMA node
(sysfs local_cpulist), visible fallbacks where they cannot be, and device memory handed back.

Test doubles: FakeCudaMemory for torch.cuda's allocator controls, fake device properties with (or
without) the PCI fields, a fake sysfs tree in tmp_path, and a recording stand-in for the thread's
CPU affinity, so no test changes this process's real affinity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

from clusterbench.model import Location, Measurement
from clusterbench.probes import memory, timing
from clusterbench.probes.devices import LocalDevice
from fake_cuda_memory import FakeCudaMemory

HERE = Location("node01", 0, "cuda:0")
GPU = LocalDevice("cpu", "cuda", 0, "NVIDIA H200", 141 * 10**9, (9, 0), 132)
ADDRESS = "0000:1b:00.0"  # domain 0, bus 0x1b, device 0


@dataclass
class FakeProperties:
    """torch.cuda.get_device_properties(i) of torch >= the PCI fields' release."""

    pci_domain_id: int = 0
    pci_bus_id: int = 0x1B
    pci_device_id: int = 0


@dataclass
class OldTorchProperties:
    """The same of an older torch: no PCI fields."""

    name: str = "NVIDIA H200"


class RecordingAffinity:
    """Stands in for os.sched_getaffinity / os.sched_setaffinity of the calling thread."""

    def __init__(self, allowed):
        self.current = frozenset(allowed)
        self.history = []

    def get(self, pid):
        assert pid == 0
        return set(self.current)

    def set(self, pid, cpus):
        assert pid == 0
        self.current = frozenset(cpus)
        self.history.append(self.current)

    def install(self, monkeypatch):
        monkeypatch.setattr(os, "sched_getaffinity", self.get)
        monkeypatch.setattr(os, "sched_setaffinity", self.set)


def sysfs(tmp_path, cpulist: str | None):
    """A /sys/bus/pci/devices with the GPU's local_cpulist holding `cpulist` (None: no file)."""
    device = tmp_path / ADDRESS
    device.mkdir(parents=True)
    if cpulist is not None:
        (device / "local_cpulist").write_text(cpulist + "\n")
    return tmp_path


@pytest.fixture
def node(monkeypatch, tmp_path):
    """A two-socket GPU node: CPUs 0-7 and 16-23 local to the GPU, 0-31 allowed to this process."""
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: FakeProperties())
    affinity = RecordingAffinity(range(32))
    affinity.install(monkeypatch)
    monkeypatch.setattr(memory, "PCI_DEVICES", sysfs(tmp_path, "0-7,16-23"))
    return affinity


@pytest.mark.parametrize(
    "text, cpus", [("0-3,8,10-11", {0, 1, 2, 3, 8, 10, 11}), ("5", {5}), ("0-1,\n", {0, 1}), ("", set())]
)
def test_cpu_lists_parse_and_format_as_sysfs_writes_them(text, cpus):
    assert memory.parse_cpu_list(text) == cpus
    assert memory.parse_cpu_list(memory.format_cpu_list(cpus)) == cpus
    assert memory.format_cpu_list({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"


def test_pci_address_is_sysfs_form_from_the_device_properties(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: FakeProperties(pci_domain_id=1, pci_bus_id=0xDC, pci_device_id=3))
    assert memory.gpu_pci_address(GPU) == "0001:dc:03.0"
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: OldTorchProperties())
    assert memory.gpu_pci_address(GPU) is None


def test_the_block_runs_bound_to_the_gpus_local_cpus_and_the_affinity_is_restored(node):
    with memory.bound_to_local_cpus(GPU, memory.PCI_DEVICES) as binding:
        inside = node.current
    assert inside == set(range(8)) | set(range(16, 24))
    assert node.current == frozenset(range(32))  # restored
    details = {}
    binding.record_in(details)
    assert details["host_cpus"] == "0-7,16-23" and details["gpu_pci_address"] == ADDRESS
    assert "bound to the 16 CPUs local to the GPU" in details["host_binding"] and "caveat" not in details


def test_the_affinity_is_restored_when_the_copy_fails(node):
    with pytest.raises(RuntimeError), memory.bound_to_local_cpus(GPU, memory.PCI_DEVICES):
        raise RuntimeError("copy failed")
    assert node.current == frozenset(range(32))


def test_only_the_local_cpus_this_process_may_use_are_bound(node):
    node.current = frozenset(range(4, 12))  # a job step given CPUs 4-11
    with memory.bound_to_local_cpus(GPU, memory.PCI_DEVICES) as binding:
        assert node.current == set(range(4, 8))
    assert binding.cpus == set(range(4, 8)) and node.current == frozenset(range(4, 12))


@pytest.mark.parametrize(
    "setup, reason",
    [
        ("old torch", "device properties carry no PCI address"),
        ("no sysfs file", "local_cpulist unreadable"),
        ("disallowed", "none of its local CPUs (0-7,16-23) is allowed to this process (allowed: 24-31)"),
    ],
)
def test_a_binding_that_cannot_be_made_is_skipped_visibly(node, monkeypatch, tmp_path, setup, reason):
    if setup == "old torch":
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: OldTorchProperties())
    elif setup == "no sysfs file":
        monkeypatch.setattr(memory, "PCI_DEVICES", sysfs(tmp_path / "bare", None))
    else:
        node.current = frozenset(range(24, 32))
    before = node.current
    with memory.bound_to_local_cpus(GPU, memory.PCI_DEVICES) as binding:
        assert node.current == before  # unbound
    assert node.history == []
    details = {"caveat": "an earlier caveat"}
    binding.record_in(details)
    assert details["host_binding"] == "unbound"
    assert details["caveat"].startswith("an earlier caveat; host side not bound to the GPU's NUMA node: ")
    assert reason in details["caveat"]


@pytest.mark.parametrize("probe, metric", [(memory.measure_h2d, "memory.h2d_gbps"),
                                           (memory.measure_d2h, "memory.d2h_gbps")])
def test_host_device_copies_allocate_and_run_under_the_binding_then_free_everything(node, monkeypatch,
                                                                                    probe, metric):
    allocator = FakeCudaMemory(peak_bytes=1 << 30)
    allocator.install(monkeypatch)
    events = []
    monkeypatch.setattr(memory, "release_pinned_host_cache", lambda: events.append("release pinned") or True)

    def timed_copy(device, plan, *, location, to_device):
        # Where the pinned buffer is allocated and the copies run: under the binding.
        events.append(("copy", memory.format_cpu_list(node.current), to_device))
        return Measurement(metric, 50.0, "GB/s", {}, location, [50.0], {"buffer_bytes": plan.nbytes})

    monkeypatch.setattr(memory, "_time_host_device", timed_copy)
    result = probe(GPU, quick=True, location=HERE)
    to_device = metric == "memory.h2d_gbps"
    assert events == ["release pinned", ("copy", "0-7,16-23", to_device), "release pinned"]
    assert node.current == frozenset(range(32))
    assert result.details["host_cpus"] == "0-7,16-23" and result.details["pinned_cache_released"] is True
    assert result.details["peak_device_memory_bytes"] == 1 << 30
    assert allocator.calls == ["reset_peak:0", "read_peak:0", "empty_cache"]


def test_device_copy_records_its_peak_and_hands_the_cache_back(monkeypatch):
    allocator = FakeCudaMemory(peak_bytes=8 << 30)
    allocator.install(monkeypatch)
    monkeypatch.setattr(memory, "copy_plan", lambda device, quick: memory.CopyPlan(4096, warmup=0, iterations=3))
    monkeypatch.setattr(timing, "time_iterations", lambda fn, **kw: [1e-6, 2e-6, 4e-6])
    result = memory.measure_copy(GPU, quick=True, location=HERE)
    assert result.value == pytest.approx(4.096)
    assert result.details["peak_device_memory_bytes"] == 8 << 30
    assert allocator.calls == ["reset_peak:0", "read_peak:0", "empty_cache"]


def test_a_cpu_copy_touches_no_gpu_allocator(monkeypatch):
    allocator = FakeCudaMemory(peak_bytes=1)
    allocator.install(monkeypatch)
    monkeypatch.setattr(memory, "copy_plan", lambda device, quick: memory.CopyPlan(4096, warmup=0, iterations=3))
    cpu = LocalDevice("cpu", "cpu", 0, "test CPU", 64 << 30, None, 2)
    result = memory.measure_copy(cpu, quick=True, location=Location("node01", 0, "cpu"))
    assert allocator.calls == [] and "peak_device_memory_bytes" not in result.details


def test_pinned_host_cache_release_uses_what_this_torch_has(monkeypatch):
    released = []
    monkeypatch.setattr(torch, "accelerator", type("A", (), {"empty_host_cache": lambda: released.append("new")}))
    assert memory.release_pinned_host_cache() is True and released == ["new"]
    monkeypatch.setattr(torch, "accelerator", None)
    monkeypatch.setattr(torch._C, "_host_emptyCache", lambda: released.append("old"), raising=False)
    assert memory.release_pinned_host_cache() is True and released == ["new", "old"]
    monkeypatch.delattr(torch._C, "_host_emptyCache")
    assert memory.release_pinned_host_cache() is False


class FakePciNvml:
    """Just enough of pynvml for a PCI lookup by UUID: NVML writes bus ids "00000000:1B:00.0"."""

    class NVMLError(Exception):
        pass

    def __init__(self, bus_ids):
        self.bus_ids = bus_ids

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in self.bus_ids:
            raise self.NVMLError("NVML_ERROR_NOT_FOUND")
        return uuid

    def nvmlDeviceGetPciInfo(self, handle):
        return type("PciInfo", (), {"busId": self.bus_ids[handle]})()


def test_without_torch_pci_fields_the_address_comes_from_nvml_by_uuid(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: OldTorchProperties())
    uuid = "5f3c1a2b-0000-1111-2222-333344445555"  # as torch prints it: no "GPU-"
    gpu = LocalDevice("cpu", "cuda", 0, "NVIDIA H200", 141 * 10**9, (9, 0), 132, uuid=uuid)
    nvml = FakePciNvml({"GPU-5f3c1a2b-0000-1111-2222-333344445555": b"00000000:1B:00.0"})
    assert memory.gpu_pci_address(gpu, nvml) == ADDRESS
    assert memory.gpu_pci_address(gpu, FakePciNvml({})) is None  # NVML does not know it: unbound, visibly
