"""Facts about the run's environment for results.json: versions, devices, the profile used."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from clusterbench import __version__
from clusterbench.profile import Profile


def describe_profile(profile: Profile) -> dict[str, Any]:
    """The profile as evidence: each file's path, SHA-256 and text, and how it was derived."""
    return {
        "name": profile.cluster.name,
        "cluster": asdict(profile.cluster),
        "settings": asdict(profile.settings),  # outlier_tolerance: the reports name stragglers by it
        "files": [asdict(f) for f in profile.files],
        "notes": list(profile.notes),
        "expectations": [e.to_json() for e in profile.expectations],
    }


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver version through NVML, or None where there is no NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver, no permission: all mean "no driver to report"
        return None
    try:
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        return None
    finally:
        pynvml.nvmlShutdown()


def host_versions() -> dict[str, str | None]:
    import torch

    return {
        "clusterbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "hip_runtime": getattr(torch.version, "hip", None),
        "nvidia_driver": nvidia_driver_version(),
        "kernel": platform.release(),
    }


# Variables that change what a run measures: communication libraries, the CUDA/ROCm runtime, torch,
# threading, and the launcher's view of the job. Recorded so that a figure can be reproduced.
RECORDED_ENV_PREFIXES = (
    "NCCL_", "CUDA_", "CUDNN_", "CUBLAS", "NVIDIA_", "TORCH_", "PYTORCH_", "TORCHELASTIC_", "OMP_", "MKL_",
    "SLURM_", "OMPI_", "PMI_", "PMIX_", "MPICH_", "I_MPI_", "UCX_", "FI_", "GLOO_", "HIP_", "ROCM_", "HSA_",
    "RCCL_", "NVSHMEM_", "MASTER_", "CLUSTERBENCH_",
)
RECORDED_ENV_NAMES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "LD_LIBRARY_PATH")
# A name that suggests a secret keeps its key (it may matter) but never its value.
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
REDACTED = "<redacted>"


def redact_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """`environment` with the value of every secret-looking name replaced by REDACTED."""
    return {name: REDACTED if SECRET_NAME.search(name) else value for name, value in environment.items()}


def recorded_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of RECORDED_ENV_PREFIXES/NAMES from `environ` (default: this process), sorted
    by name, secret-looking values redacted."""
    environ = os.environ if environ is None else environ
    chosen = {
        name: value
        for name, value in environ.items()
        if name.startswith(RECORDED_ENV_PREFIXES) or name in RECORDED_ENV_NAMES
    }
    return redact_environment(dict(sorted(chosen.items())))
