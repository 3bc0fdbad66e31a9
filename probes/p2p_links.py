"""Which path a copy between two GPUs of this node takes: NVLink, PCIe peer-to-peer, or host memory.

Two sources, both asked per ordered pair of CUDA devices:

- CUDA itself (torch.cuda.can_device_access_peer): whether the source may read and write the
  destination's memory directly. Without peer access a copy is staged through host memory.
- NVML, where it is installed: nvmlDeviceGetP2PStatus(a, b, NVML_P2P_CAPS_INDEX_NVLINK) says
  whether the pair talks over NVLink (what `nvidia-smi topo -p2p n` prints), and
  nvmlDeviceGetTopologyCommonAncestor how far apart they sit on PCIe (`nvidia-smi topo -m`'s
  PIX/PXB/PHB/NODE/SYS). NVML numbers GPUs in bus order and CUDA by its own order, so the two are
  paired by UUID (probes.health.gpu_pairing), as the health probe does.

Where NVML cannot say (no driver library, an AMD node, a GPU without a UUID), the path is
"unknown" and the reason is kept: the judge then falls back to the copy's bandwidth.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clusterbench.model import NotMeasured
from clusterbench.probes.health.gpu_pairing import pair_devices, read_gpu_ids

NVLINK, PCIE, HOST, UNKNOWN = "nvlink", "pcie", "host", "unknown"
# NVML's PCIe topology levels as `nvidia-smi topo -m` names them (nvmlGpuTopologyLevel_t).
_TOPOLOGY_NAMES = {
    "NVML_TOPOLOGY_INTERNAL": "internal",
    "NVML_TOPOLOGY_SINGLE": "PIX",
    "NVML_TOPOLOGY_MULTIPLE": "PXB",
    "NVML_TOPOLOGY_HOSTBRIDGE": "PHB",
    "NVML_TOPOLOGY_NODE": "NODE",
    "NVML_TOPOLOGY_SYSTEM": "SYS",
}

Pair = tuple[int, int]  # (source, destination) CUDA device indices in this process


@dataclass(frozen=True)
class PairLink:
    """How one ordered pair of GPUs is joined, as CUDA and NVML say."""

    peer_access: bool | None  # CUDA peer access from source to destination; None: not asked
    nvlink: bool | None  # NVML: the pair talks over NVLink; None: NVML could not say
    pcie_topology: str | None = None  # PIX, PXB, PHB, NODE or SYS; None where NVML could not say
    unknown_reason: str = ""  # why nvlink is None

    @property
    def path(self) -> str:
        """nvlink, pcie (peer-to-peer over PCIe), host (staged through host memory) or unknown."""
        if self.nvlink:
            return NVLINK
        if self.peer_access is False:
            return HOST
        if self.nvlink is False:
            return PCIE
        return UNKNOWN

    def to_details(self) -> dict[str, Any]:
        details: dict[str, Any] = {"path": self.path, "peer_access": self.peer_access, "nvlink": self.nvlink,
                                   "pcie_topology": self.pcie_topology}
        if self.unknown_reason:
            details["path_unknown_reason"] = self.unknown_reason
        return details


def read_pair_links(uuids: Mapping[int, str | None], nvml: Any | None = None) -> dict[Pair, PairLink]:
    """The link of every ordered pair of the CUDA devices in `uuids` (index -> torch's UUID)."""
    import torch

    peer = {(a, b): bool(torch.cuda.can_device_access_peer(a, b)) for a in uuids for b in uuids if a != b}
    nvlink, topology, reasons = _read_nvml_paths(uuids, list(peer), nvml)
    return {pair: PairLink(peer[pair], nvlink.get(pair), topology.get(pair), reasons.get(pair, ""))
            for pair in peer}


def _read_nvml_paths(
    uuids: Mapping[int, str | None], pairs: Sequence[Pair], nvml: Any | None
) -> tuple[dict[Pair, bool], dict[Pair, str], dict[Pair, str]]:
    """NVML's NVLink status and PCIe distance per pair, and why not for the pairs it could not answer."""
    from clusterbench.probes.health.nvml_session import nvml_session

    try:
        with nvml_session(nvml) as session:
            pairing = pair_devices({f"cuda:{i}": uuid for i, uuid in uuids.items()}, read_gpu_ids(session))
            handles: dict[int, Any] = {}
            unpaired: dict[int, str] = {}
            for index in uuids:
                label = f"cuda:{index}"
                if label in pairing.indices:
                    handles[index] = session.nvmlDeviceGetHandleByIndex(pairing.indices[label])
                else:
                    unpaired[index] = f"{label}: {pairing.unpaired.get(label, 'not paired with an NVML GPU')}"
            return _ask_pairs(session, handles, unpaired, pairs)
    except NotMeasured as exc:  # no NVML here: every path is unknown, for that one reason
        return {}, {}, {pair: str(exc) for pair in pairs}


def _ask_pairs(
    nvml: Any, handles: dict[int, Any], unpaired: dict[int, str], pairs: Sequence[Pair]
) -> tuple[dict[Pair, bool], dict[Pair, str], dict[Pair, str]]:
    nvlink: dict[Pair, bool] = {}
    topology: dict[Pair, str] = {}
    reasons: dict[Pair, str] = {}
    status = getattr(nvml, "nvmlDeviceGetP2PStatus", None)
    levels = {getattr(nvml, constant): name for constant, name in _TOPOLOGY_NAMES.items() if hasattr(nvml, constant)}
    for a, b in pairs:
        if a not in handles or b not in handles:
            reasons[(a, b)] = unpaired.get(a) or unpaired.get(b, "")
            continue
        if status is None:
            reasons[(a, b)] = "this NVML binding has no nvmlDeviceGetP2PStatus"
        else:
            try:
                answer = status(handles[a], handles[b], nvml.NVML_P2P_CAPS_INDEX_NVLINK)
                nvlink[(a, b)] = answer == nvml.NVML_P2P_STATUS_OK
            except nvml.NVMLError as exc:
                reasons[(a, b)] = f"nvmlDeviceGetP2PStatus: {exc}"
        try:
            level = nvml.nvmlDeviceGetTopologyCommonAncestor(handles[a], handles[b])
        except (AttributeError, nvml.NVMLError):
            continue  # the PCIe distance is a hint for the operator; the path stands without it
        if level in levels:
            topology[(a, b)] = levels[level]
    return nvlink, topology, reasons


def too_few_gpus_reason(seen: int) -> str:
    """Why a node's copy matrix cannot be measured with the `seen` GPUs this process sees."""
    wanted = "the copy matrix needs at least 2 GPUs on a node"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return f"{wanted}; this node has {seen}"
    on_node = _nvml_gpu_count()
    counted = f"; NVML counts {on_node} on this node" if on_node is not None else ""
    return (f"{wanted}; this node's first local rank sees {seen}: CUDA_VISIBLE_DEVICES={visible!r} hides the "
            f"others{counted} (let that rank see all the node's GPUs: srun --gpu-bind=none, no per-rank "
            "CUDA_VISIBLE_DEVICES)")


def _nvml_gpu_count(nvml: Any | None = None) -> int | None:
    from clusterbench.probes.health.nvml_session import nvml_session

    try:
        with nvml_session(nvml) as session:
            return int(session.nvmlDeviceGetCount())
    except Exception:  # noqa: BLE001 - only a hint in a reason; no NVML is no hint
        return None
