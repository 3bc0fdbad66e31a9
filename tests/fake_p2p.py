"""FakeCopyNode: a test double of a GPU node's copy engines and links, for the p2p probe on a CPU.

Every pair of GPUs copies at `nvlink_gbps` one way (a full-duplex link: both ways at once, each
direction still gets it), except the links named in `slow_links` and the GPUs in `pcie_only`,
whose pairs run at `pcie_gbps` and which NVML reports without NVLink. It answers the probe's
CopyTimer calls with the seconds those rates give and records every call, so a test can see the
warm-up. `FakeP2pNvml` adds the NVML calls the path reader makes (nvmlDeviceGetP2PStatus,
nvmlDeviceGetTopologyCommonAncestor) to FakeNvml, from the same node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pynvml

from clusterbench.model import Location
from clusterbench.probes.devices import LocalDevice
from clusterbench.probes.p2p_links import PairLink
from fake_nvml import FakeGpu, FakeNvml

H200_NAME = "NVIDIA H200"
HOST = "gpu-node-07"


def cuda_uuid(index: int) -> str:
    return f"{index:08x}-0000-4000-8000-{index:012x}"


@dataclass
class FakeCopyNode:
    gpus: int = 8
    buffer_bytes: int = 1 << 20
    nvlink_gbps: float = 390.0
    pcie_gbps: float = 50.0
    slow_links: dict[frozenset[int], float] = field(default_factory=dict)  # {a, b} -> GB/s one way
    pcie_only: frozenset[int] = frozenset()
    name: str = H200_NAME
    calls: list[tuple[str, int, int, int]] = field(default_factory=list)  # (kind, a, b, copies)

    def devices(self) -> list[LocalDevice]:
        return [LocalDevice(f"cuda:{i}", "cuda", i, self.name, 141 * 10**9, (9, 0), 132, cuda_uuid(i))
                for i in range(self.gpus)]

    def rate_gbps(self, a: int, b: int, sample: int = 0) -> float:
        if a in self.pcie_only or b in self.pcie_only:
            rate = self.pcie_gbps
        else:
            rate = self.slow_links.get(frozenset((a, b)), self.nvlink_gbps)
        return rate * (1 + 0.001 * (sample % 3 - 1))  # a little noise, as a real link has

    def _seconds(self, a: int, b: int, copies: int) -> float:
        sample = sum(1 for call in self.calls if call[1:3] == (a, b))
        return self.buffer_bytes * copies / (self.rate_gbps(a, b, sample) * 1e9)

    # --- the probe's CopyTimer ---------------------------------------------------------------------

    def one_way(self, src: int, dst: int, copies: int) -> float:
        self.calls.append(("one_way", src, dst, copies))
        return self._seconds(src, dst, copies)

    def both_ways(self, a: int, b: int, copies: int) -> tuple[float, float]:
        self.calls.append(("both_ways", a, b, copies))
        return self._seconds(a, b, copies), self._seconds(b, a, copies)

    # --- what CUDA and NVML say of its links -------------------------------------------------------

    def nvlink_between(self, a: int, b: int) -> bool:
        return a not in self.pcie_only and b not in self.pcie_only

    def links(self, known: bool = True) -> dict[tuple[int, int], PairLink]:
        """Every ordered pair's link; `known=False`: as on a node without NVML (path unknown)."""
        links = {}
        for a in range(self.gpus):
            for b in range(self.gpus):
                if a == b:
                    continue
                if known:
                    nvlink = self.nvlink_between(a, b)
                    links[(a, b)] = PairLink(True, nvlink, None if nvlink else "SYS")
                else:
                    links[(a, b)] = PairLink(True, None, None, "NVML unavailable: nvidia-ml-py is not installed")
        return links

    def location(self) -> Location:
        return Location(host=HOST, rank=0, device="node")


class FakeP2pNvml(FakeNvml):
    """FakeNvml of `node`'s GPUs, in reversed bus order (NVML index 0 is cuda:7), with their links."""

    def __init__(self, node: FakeCopyNode, **kwargs) -> None:
        order = list(reversed(range(node.gpus)))
        super().__init__([FakeGpu(name=node.name, uuid=f"GPU-{cuda_uuid(i)}") for i in order], **kwargs)
        self.node = node
        self.cuda_of = dict(enumerate(order))  # NVML index -> CUDA index

    def nvmlDeviceGetP2PStatus(self, first, second, capability):
        self._gpu(first, "nvmlDeviceGetP2PStatus")
        assert capability == pynvml.NVML_P2P_CAPS_INDEX_NVLINK
        linked = self.node.nvlink_between(self.cuda_of[first.index], self.cuda_of[second.index])
        return pynvml.NVML_P2P_STATUS_OK if linked else pynvml.NVML_P2P_STATUS_NOT_SUPPORTED

    def nvmlDeviceGetTopologyCommonAncestor(self, first, second):
        self._gpu(first, "nvmlDeviceGetTopologyCommonAncestor")
        return pynvml.NVML_TOPOLOGY_SYSTEM if abs(first.index - second.index) >= 4 else pynvml.NVML_TOPOLOGY_NODE
