"""One node's inventory: the host, and its GPUs as NVML (else amdsmi) sees them, or why neither could say.

`NodeInventory.to_json()` is the shape that goes into results.json under `run` and that the golden
comparisons read, so the same dict serves one node and a gathered list of many.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterbench.model import NotMeasured
from clusterbench.probes.health.amdsmi_reader import read_amdsmi_inventory
from clusterbench.probes.health.host_inventory import HostInventory, read_host_inventory
from clusterbench.probes.health.nvml_reader import GpuInventory, read_gpu_inventory


@dataclass
class NodeInventory:
    host: HostInventory
    gpu: GpuInventory | None
    gpu_not_measured: str | None = None  # NotMeasured's reason when `gpu` is None

    def to_json(self) -> dict[str, Any]:
        return {
            "hostname": self.host.hostname,
            "host": self.host.to_json(),
            "gpu": self.gpu.to_json() if self.gpu is not None else None,
            "gpu_not_measured": self.gpu_not_measured,
        }


def read_node_inventory(nvml: Any | None = None, root: Path = Path("/"), amdsmi: Any | None = None) -> NodeInventory:
    """The host inventory always; the GPU inventory where NVML or amdsmi is available."""
    host = read_host_inventory(root)
    try:
        return NodeInventory(host, read_gpus(nvml=nvml, amdsmi=amdsmi))
    except NotMeasured as exc:
        return NodeInventory(host, None, str(exc))


def read_gpus(
    devices: Mapping[str, str | None] | None = None, nvml: Any | None = None, amdsmi: Any | None = None
) -> GpuInventory:
    """The GPUs through NVML (NVIDIA), else through amdsmi (AMD); with `devices` (label -> torch
    UUID) only those. NotMeasured naming both libraries' reasons when neither can read them."""
    try:
        return read_gpu_inventory(nvml, devices)
    except NotMeasured as nvml_missing:
        try:
            return read_amdsmi_inventory(amdsmi, devices)
        except NotMeasured as amdsmi_missing:
            raise NotMeasured(f"{nvml_missing}; {amdsmi_missing}") from None
