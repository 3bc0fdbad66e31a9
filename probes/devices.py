"""The compute devices of this host that probes can measure, and the GEMM dtypes each one can run.

Every visible CUDA device is one `LocalDevice` (ROCm builds of torch report AMD GPUs as "cuda" too,
through the same torch.cuda API; `runtime` says which: "rocm" where torch.version.hip is set); a host
without an accelerator is one CPU device, so the same suite measures something everywhere.
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
    # On ROCm: the KFD unique id HIP reports ("f330dc4d00dee22b"), the name amdsmi pairs by.
    uuid: str | None = None
    runtime: str | None = None  # "cuda" or "rocm" (a HIP build of torch); None on a CPU
    arch: str | None = None  # the AMD GPU's ISA, "gfx942" (props.gcnArchName without its feature flags)


def local_devices() -> list[LocalDevice]:
    """Every visible CUDA device, in index order; else the host CPU as one device."""
    if torch.cuda.is_available():
        return [_cuda_device(i) for i in range(torch.cuda.device_count())]
    return [_cpu_device()]


def _cuda_device(index: int) -> LocalDevice:
    props = torch.cuda.get_device_properties(index)
    rocm = bool(getattr(torch.version, "hip", None))
    arch = str(getattr(props, "gcnArchName", "") or "").split(":")[0] if rocm else ""
    return LocalDevice(
        torch_device=f"cuda:{index}",
        kind="cuda",
        index=index,
        name=torch.cuda.get_device_name(index),
        memory_bytes=int(props.total_memory),
        compute_capability=(int(props.major), int(props.minor)),
        count_cores=int(props.multi_processor_count),
        uuid=_rocm_unique_id(props) if rocm else _cuda_uuid(props),
        runtime="rocm" if rocm else "cuda",
        arch=arch or None,
    )


def _cuda_uuid(props: object) -> str | None:
    """props.uuid is a torch._C._CUuuid whose str() is the 8-4-4-4-12 hex form (torch >= 2.1);
    older torch has no such attribute."""
    uuid = getattr(props, "uuid", None)
    text = str(uuid).strip() if uuid is not None else ""
    return text or None


def _rocm_unique_id(props: object) -> str | None:
    """HIP fills the 16 UUID bytes with the ASCII of the GPU's 16-hex-digit KFD unique id, and torch
    prints those bytes as hex: "66333330-6463-..." is "f330dc..." (ROCm/ROCm#4203, torch 2.6, ROCm
    6.2.4). Decoded back, it is the id rocminfo and amdsmi print; anything else is kept as torch gave it."""
    printed = _cuda_uuid(props)
    if printed is None:
        return None
    try:
        text = bytes.fromhex(printed.replace("-", "")).decode("ascii")
    except ValueError:
        return printed
    return text.lower() if len(text) == 16 and all(c in "0123456789abcdefABCDEF" for c in text) else printed


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
    if device.runtime == "rocm":
        return _rocm_reason_unsupported(device, dtype)
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


# ROCm reports gfx9.4.2 as "compute capability" 9.4, which says nothing about NVIDIA's thresholds:
# what a dtype needs on an AMD GPU is its ISA. CDNA3 (gfx942: MI300X, MI325X) has xf32 and the FNUZ
# fp8 formats; CDNA4 (gfx950) the OCP fp8 ones.
_ROCM_TF32_ARCHS = ("gfx942",)
_ROCM_FP8_DTYPES = {"gfx942": "float8_e4m3fnuz", "gfx950": "float8_e4m3fn"}


def _rocm_reason_unsupported(device: LocalDevice, dtype: str) -> str | None:
    arch = device.arch or "an unknown ISA"
    if dtype == "tf32" and device.arch not in _ROCM_TF32_ARCHS:
        return f"tf32 (xf32) matmul needs a CDNA3 GPU ({', '.join(_ROCM_TF32_ARCHS)}); {device.name} is {arch}"
    if dtype == "fp8":
        fp8 = _ROCM_FP8_DTYPES.get(device.arch or "")
        if fp8 is None:
            return f"fp8 matmul needs an AMD GPU of ISA {' or '.join(_ROCM_FP8_DTYPES)}; {device.name} is {arch}"
        if not (hasattr(torch, fp8) and hasattr(torch, "_scaled_mm")):
            return f"fp8 on {arch} needs torch.{fp8} and torch._scaled_mm; torch {torch.__version__} lacks them"
    return None


def supported_dtypes(device: LocalDevice) -> list[str]:
    """The GEMM dtypes `device` can run, in GEMM_DTYPES order (bf16/fp16 on a CPU run, slowly)."""
    return [dtype for dtype in GEMM_DTYPES if reason_unsupported(device, dtype) is None]
