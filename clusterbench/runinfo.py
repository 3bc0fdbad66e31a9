"""Facts about the run's environment for results.json: versions, devices, the profile used."""

from __future__ import annotations

import platform
from dataclasses import asdict
from typing import Any

from clusterbench import __version__
from clusterbench.profile import Profile


def describe_profile(profile: Profile) -> dict[str, Any]:
    """The profile as evidence: each file's path, SHA-256 and text, and how it was derived."""
    return {
        "name": profile.cluster.name,
        "cluster": asdict(profile.cluster),
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

