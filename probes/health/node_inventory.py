"""One node's inventory: the host, and its GPUs as NVML sees them (or why NVML could not say).

`NodeInventory.to_json()` is the shape that goes into results.json under `run` and that the golden
comparisons read, so the same dict serves one node and a gathered list of many.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterbench.model import NotMeasured
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


def read_node_inventory(nvml: Any | None = None, root: Path = Path("/")) -> NodeInventory:
    """The host inventory always; the GPU inventory where NVML is available."""
    host = read_host_inventory(root)
    try:
        return NodeInventory(host, read_gpu_inventory(nvml))
    except NotMeasured as exc:
        return NodeInventory(host, None, str(exc))
