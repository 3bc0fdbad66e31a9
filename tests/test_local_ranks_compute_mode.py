"""Local ranks on GPUs whose compute mode refuses a second CUDA context: NOT MEASURED at once, with the
reason, instead of children failing after the deadline. A fake torch.cuda (this process "holds"
contexts on the GPUs earlier tests used) and a fake NVML (the compute modes) model the GPU node."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pynvml
import pytest
import torch

from clusterbench.model import NotMeasured
from clusterbench.runners.local_ranks import cuda_context_conflict, run_local_ranks
from tests.fake_nvml import FakeNvml, healthy

EXCLUSIVE = pynvml.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS
DEFAULT = pynvml.NVML_COMPUTEMODE_DEFAULT
PROHIBITED = pynvml.NVML_COMPUTEMODE_PROHIBITED


class FakeNvmlWithComputeModes(FakeNvml):
    """FakeNvml plus nvmlDeviceGetComputeMode; NVML numbers GPUs in its own (PCI) order."""

    def __init__(self, modes: list[int], **kwargs) -> None:
        super().__init__([healthy(i) for i in range(len(modes))], **kwargs)
        self.modes = modes

    def nvmlDeviceGetComputeMode(self, handle):
        self._gpu(handle, "nvmlDeviceGetComputeMode")  # raises what a lost or failing GPU would
        return self.modes[handle.index]


def fake_gpu_node(monkeypatch, *, gpus: int, contexts: set[int], cuda_order: list[int] | None = None) -> None:
    """torch.cuda of a node with `gpus` GPUs, this process holding primary contexts on `contexts`.
    CUDA device i is NVML GPU cuda_order[i] (CUDA numbers fastest first, NVML by PCI bus)."""
    order = cuda_order or list(range(gpus))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: bool(contexts))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100 80GB HBM3")
    # torch's uuid has no "GPU-" prefix; NVML's does (tests/fake_nvml.healthy).
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(uuid=f"{order[i]:08d}-0000-0000-0000-000000000000"))
    monkeypatch.setattr(torch._C, "_cuda_hasPrimaryContext", lambda i: i in contexts, raising=False)


def test_exclusive_process_gpu_this_process_used_is_named_with_what_to_do(monkeypatch):
    fake_gpu_node(monkeypatch, gpus=4, contexts={0, 1, 2, 3})
    reason = cuda_context_conflict(4, nvml=FakeNvmlWithComputeModes([EXCLUSIVE] * 4))
    assert reason.startswith("GPU 0 (NVIDIA H100 80GB HBM3) is in compute mode EXCLUSIVE_PROCESS and this process")
    assert "already holds a CUDA context on it" in reason and "torchrun --nproc-per-node" in reason
    assert "nvidia-smi -i N -c DEFAULT" in reason and "\n" not in reason


def test_cuda_and_nvml_indices_are_paired_by_uuid(monkeypatch):
    # CUDA device 1 is NVML GPU 3, the only one in EXCLUSIVE_PROCESS mode; this process used only it.
    fake_gpu_node(monkeypatch, gpus=4, contexts={1}, cuda_order=[2, 3, 0, 1])
    reason = cuda_context_conflict(4, nvml=FakeNvmlWithComputeModes([DEFAULT, DEFAULT, DEFAULT, EXCLUSIVE]))
    assert reason.startswith("GPU 1 ")


def test_default_mode_or_no_context_held_here_lets_the_ranks_start(monkeypatch):
    fake_gpu_node(monkeypatch, gpus=2, contexts={0, 1})
    assert cuda_context_conflict(2, nvml=FakeNvmlWithComputeModes([DEFAULT, DEFAULT])) is None
    fake_gpu_node(monkeypatch, gpus=2, contexts=set())  # exclusive, but nothing here holds the GPUs
    assert cuda_context_conflict(2, nvml=FakeNvmlWithComputeModes([EXCLUSIVE, EXCLUSIVE])) is None


def test_two_ranks_sharing_an_exclusive_gpu_is_named(monkeypatch):
    fake_gpu_node(monkeypatch, gpus=2, contexts=set())
    reason = cuda_context_conflict(3, nvml=FakeNvmlWithComputeModes([EXCLUSIVE, EXCLUSIVE]))
    assert reason.startswith("GPU 0 (NVIDIA H100 80GB HBM3) is in compute mode EXCLUSIVE_PROCESS and 2 of the 3")


def test_prohibited_mode_is_named(monkeypatch):
    fake_gpu_node(monkeypatch, gpus=2, contexts=set())
    reason = cuda_context_conflict(2, nvml=FakeNvmlWithComputeModes([DEFAULT, PROHIBITED]))
    assert reason == ("GPU 1 (NVIDIA H100 80GB HBM3) is in compute mode PROHIBITED: "
                      "no process may open a CUDA context on it")


def test_without_nvml_nothing_is_refused(monkeypatch):
    fake_gpu_node(monkeypatch, gpus=2, contexts={0, 1})
    nvml = FakeNvmlWithComputeModes([EXCLUSIVE, EXCLUSIVE], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    assert cuda_context_conflict(2, nvml=nvml) is None


def test_nccl_local_ranks_are_not_measured_before_any_rank_starts(monkeypatch):
    fake_gpu_node(monkeypatch, gpus=2, contexts={0, 1})
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvmlWithComputeModes([EXCLUSIVE] * 2))  # what `import pynvml` gets
    monkeypatch.setattr(torch.multiprocessing, "get_context", lambda method: pytest.fail("a rank was started"))
    with pytest.raises(NotMeasured, match="compute mode EXCLUSIVE_PROCESS"):
        run_local_ranks(print, 2, backend="nccl", timeout=5)
