"""FakeGpuNode: a test double of a GPU node as NVML and torch.cuda both see it.

NVML (FakeNvml) sees every GPU of the node, in PCI bus order, with "GPU-<uuid>" UUIDs. torch.cuda
sees only the `visible` ones (CUDA_VISIBLE_DEVICES=5,2 makes NVML GPU 5 cuda:0), and prints their
UUIDs as torch does: str(torch.cuda.get_device_properties(i).uuid) is the bare 8-4-4-4-12 hex, no
"GPU-" prefix (torch._C._CUuuid.__str__, torch >= 2.1). Every GPU follows load: idle, its PCIe link
is trained down to Gen1 and it draws idle power at idle clocks; `node.load(cuda_index)` makes it
busy while a block runs, as a GEMM would.

    node = FakeGpuNode(gpus=8, visible=(2, 5))
    node.install(monkeypatch)        # torch.cuda and pynvml now answer as that node

As a pytest plugin (`-p fake_gpu_node`, with tests/ on PYTHONPATH) it installs itself in a suite
run, configured by FAKE_GPU_NODE ("8:2,5" = 8 GPUs, cuda sees 2 and 5), and replaces the GEMM
probe with a fake load that keeps the device busy for FAKE_GPU_NODE_LOAD_S seconds: what is under
test there is the sampling and judging around the probe, not the probe.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fake_nvml import FakeGpu, FakeNvml

H100_NAME = "NVIDIA H100 80GB HBM3"


def node_uuid(index: int) -> str:
    """NVML's UUID of GPU `index` of the fake node (lower-case hex, as NVML prints it)."""
    return f"GPU-{index:08x}-a1b2-c3d4-e5f6-{index:012x}"


class FakeCUuuid:
    """Stands in for torch._C._CUuuid: str() is the UUID without any prefix."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __str__(self) -> str:
        return self._text


@dataclass(frozen=True)
class FakeDeviceProperties:
    """The fields of torch.cuda.get_device_properties(i) that clusterbench reads."""

    name: str
    major: int
    minor: int
    total_memory: int
    multi_processor_count: int
    uuid: Any


class FakeGpuNode:
    def __init__(
        self, gpus: int = 8, visible: Sequence[int] | None = None, name: str = H100_NAME,
        cuda_names: Sequence[str] | None = None, cuda_uuids: Sequence[str | None] | None = None,
    ) -> None:
        """`visible`: NVML indices torch sees, in CUDA order; `cuda_names`/`cuda_uuids` override what
        torch reports per visible device (a MIG slice's name and UUID, or no UUID: torch < 2.1)."""
        self.nvml = FakeNvml([
            FakeGpu(name=name, uuid=node_uuid(i), serial=f"165012345{i:04d}", follows_load=True) for i in range(gpus)
        ])
        self.visible = list(range(gpus) if visible is None else visible)
        self.cuda_names = list(cuda_names) if cuda_names else [name] * len(self.visible)
        default_uuids = [node_uuid(i).removeprefix("GPU-") for i in self.visible]
        self.cuda_uuids = list(cuda_uuids) if cuda_uuids is not None else default_uuids

    # --- what torch.cuda answers ------------------------------------------------------------------

    def device_count(self) -> int:
        return len(self.visible)

    def get_device_properties(self, index: int) -> FakeDeviceProperties:
        uuid = self.cuda_uuids[index]
        return FakeDeviceProperties(
            name=self.cuda_names[index], major=9, minor=0, total_memory=81559 * 2**20, multi_processor_count=132,
            uuid=FakeCUuuid(uuid) if uuid is not None else None,
        )

    def get_device_name(self, index: int) -> str:
        return self.cuda_names[index]

    # --- load ------------------------------------------------------------------------------------

    @contextmanager
    def load(self, cuda_index: int) -> Iterator[None]:
        """The NVML GPU behind cuda:`cuda_index` is busy while the block runs."""
        gpu = self.nvml.gpus[self.visible[cuda_index]]
        gpu.busy = True
        try:
            yield
        finally:
            gpu.busy = False

    def run_load(self, cuda_index: int, seconds: float, min_samples: int = 2, timeout_s: float = 10.0) -> None:
        """Keep cuda:`cuda_index` busy for `seconds`, and on until NVML has been read `min_samples`
        times while it was (a sampler thread on a loaded test machine may be slow to wake)."""
        index = self.visible[cuda_index]
        with self.load(cuda_index):
            first = len(self.nvml.calls)
            time.sleep(seconds)
            deadline = time.monotonic() + timeout_s
            while self._power_reads(index, first) < min_samples and time.monotonic() < deadline:
                time.sleep(0.005)

    def _power_reads(self, index: int, since: int) -> int:
        calls = self.nvml.calls[since:]
        return sum(1 for gpu, function in calls if gpu == index and function == "nvmlDeviceGetPowerUsage")

    def install(self, monkeypatch: Any) -> None:
        """torch.cuda and `import pynvml` answer as this node until the monkeypatch is undone."""
        import torch

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", self.device_count)
        monkeypatch.setattr(torch.cuda, "get_device_properties", self.get_device_properties)
        monkeypatch.setattr(torch.cuda, "get_device_name", self.get_device_name)
        monkeypatch.setitem(sys.modules, "pynvml", self.nvml)


# --- the pytest plugin: a suite run on the fake node ------------------------------------------------


def _node_from_environment() -> FakeGpuNode:
    spec = os.environ.get("FAKE_GPU_NODE", "8")
    count, _, visible = spec.partition(":")
    return FakeGpuNode(int(count), [int(i) for i in visible.split(",")] if visible else None)


def pytest_configure(config: Any) -> None:
    import pytest
    import torch

    from clusterbench.model import Measurement
    from clusterbench.probes import gemm

    node = _node_from_environment()
    patch = pytest.MonkeyPatch()
    node.install(patch)
    # The host inventory asks torch for NCCL's version; the CPU build has none to give.
    patch.setattr(torch.cuda, "nccl", type("FakeNccl", (), {"version": staticmethod(lambda: (2, 21, 5))}))
    seconds = float(os.environ.get("FAKE_GPU_NODE_LOAD_S", "0.35"))

    def fake_gemm(device, dtype, quick=False, location=None, on_step=None):
        # A fixed figure is fine here: the run judges it against no expectation; what is tested is
        # that NVML sees this device busy, and only this one, while its load runs.
        node.run_load(device.index, seconds)
        return Measurement("gemm.tflops", 700.0, "TFLOP/s", {"dtype": dtype}, location, [700.0], {"fake": True})

    patch.setattr(gemm, "measure_gemm", fake_gemm)
    config._fake_gpu_node_patch = patch


def pytest_unconfigure(config: Any) -> None:
    patch = getattr(config, "_fake_gpu_node_patch", None)
    if patch is not None:
        patch.undo()
