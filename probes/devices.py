"""The compute devices of this host that probes can measure, and the GEMM dtypes each one can run.

Every visible CUDA device is one `LocalDevice` (ROCm builds of torch report AMD GPUs as "cuda" too);
a host without an accelerator is one CPU device, so the same suite measures something everywhere.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

GEMM_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8")


@dataclass(frozen=True)
class LocalDevice:
    torch_device: str  # "cuda:0" or "cpu": what torch.device() takes
    kind: str  # "cuda" or "cpu"
    index: int
    name: str
    memory_bytes: int
    compute_capability: tuple[int, int] | None  # None on a CPU
    # Streaming multiprocessors (NVIDIA) or compute units (AMD); logical CPUs usable by this process.
    count_cores: int | None
    # The device's UUID as torch prints it ("5f3c1a2b-...", without NVML's "GPU-"/"MIG-" prefix): the
    # one name CUDA and NVML agree on (their indices differ). None on a CPU, or where torch gives none.
    uuid: str | None = None


def local_devices() -> list[LocalDevice]:
    """Every visible CUDA device, in index order; else the host CPU as one device."""
    if torch.cuda.is_available():
        return [_cuda_device(i) for i in range(torch.cuda.device_count())]
    return [_cpu_device()]


def _cuda_device(index: int) -> LocalDevice:
    props = torch.cuda.get_device_properties(index)
    return LocalDevice(
        torch_device=f"cuda:{index}",
        kind="cuda",
        index=index,
        name=torch.cuda.get_device_name(index),
        memory_bytes=int(props.total_memory),
        compute_capability=(int(props.major), int(props.minor)),
        count_cores=int(props.multi_processor_count),
        uuid=_cuda_uuid(props),
    )


def _cuda_uuid(props: object) -> str | None:
    """props.uuid is a torch._C._CUuuid whose str() is the 8-4-4-4-12 hex form (torch >= 2.1);
    older torch has no such attribute."""
    uuid = getattr(props, "uuid", None)
    text = str(uuid).strip() if uuid is not None else ""
    return text or None


def _cpu_device() -> LocalDevice:
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return LocalDevice(
        torch_device="cpu",
        kind="cpu",
        index=0,
        name=_cpu_model_name(),
        memory_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        compute_capability=None,
        count_cores=len(usable) if usable is not None else os.cpu_count(),
    )


def _cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass  # not Linux: fall back to what the platform module knows
    return platform.processor() or platform.machine() or "unknown CPU"


def reason_unsupported(device: LocalDevice, dtype: str) -> str | None:
    """Why `device` cannot run a GEMM in `dtype` (one line), or None when it can.

    Raises ValueError for a dtype name outside GEMM_DTYPES: that is a caller's typo, not a device fact.
    """
    if dtype not in GEMM_DTYPES:
        raise ValueError(f"unknown GEMM dtype {dtype!r}; expected one of {', '.join(GEMM_DTYPES)}")
    capability = device.compute_capability
    if dtype == "tf32":
        if capability is None:
            return "tf32 is a tensor-core mode of CUDA GPUs (compute capability >= 8.0); this device is a CPU"
        if capability < (8, 0):
            return f"tf32 needs compute capability >= 8.0; {device.name} is {capability[0]}.{capability[1]}"
    if dtype == "fp8":
        if not (hasattr(torch, "float8_e4m3fn") and hasattr(torch, "_scaled_mm")):
            return f"fp8 needs torch.float8_e4m3fn and torch._scaled_mm; torch {torch.__version__} lacks them"
        if capability is None:
            return "fp8 matmul needs a GPU of compute capability >= 8.9; this device is a CPU"
        if capability < (8, 9):
            return f"fp8 matmul needs compute capability >= 8.9; {device.name} is {capability[0]}.{capability[1]}"
    return None


def supported_dtypes(device: LocalDevice) -> list[str]:
    """The GEMM dtypes `device` can run, in GEMM_DTYPES order (bf16/fp16 on a CPU run, slowly)."""
    return [dtype for dtype in GEMM_DTYPES if reason_unsupported(device, dtype) is None]
