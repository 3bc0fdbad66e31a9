"""Node health and inventory: what each node is (host, GPUs, links) and whether it is healthy.

    inventory = read_node_inventory()                 # host always; GPUs where NVML is available
    mine = inventory.gpu.select({"cuda:0": uuid})     # the GPUs this process drives, paired by UUID
    with ThrottleSampler(devices={"cuda:0": uuid}) as sampler:   # around a load such as the GEMM probe
        run_gemm()
    findings = health_findings(mine, host, sampler.report)
    figures = gpu_measurements(mine, host, rank, sampler.report)
    golden = check_golden(inventory.to_json(), profile_section) + find_outliers(all_nodes_json)

Probes only: nothing here knows about pytest, profiles as files, or verdicts.
"""

from clusterbench.probes.health.clock_events import BENIGN, THROTTLING, decode
from clusterbench.probes.health.findings import HealthFinding, health_findings, lost_gpu_findings
from clusterbench.probes.health.golden import GOLDEN_KEYS, check_golden, find_outliers
from clusterbench.probes.health.host_inventory import HostInventory, read_host_inventory
from clusterbench.probes.health.gpu_pairing import NvmlGpuId, Pairing, pair_devices, same_uuid_key
from clusterbench.probes.health.measurements import HealthMeasurements, Unmeasured, gpu_count, gpu_measurements
from clusterbench.probes.health.node_inventory import NodeInventory, read_node_inventory
from clusterbench.probes.health.nvml_reader import (
    Clocks,
    EccInfo,
    GpuInventory,
    GpuRecord,
    MemoryRepair,
    NvLinkState,
    PcieLink,
    read_gpu_inventory,
)
from clusterbench.probes.health.throttle import GpuLoad, LoadReport, LoadSample, PerDeviceSampling, ThrottleSampler

__all__ = [
    "BENIGN", "THROTTLING", "decode",
    "HealthFinding", "health_findings", "lost_gpu_findings",
    "NvmlGpuId", "Pairing", "pair_devices", "same_uuid_key",
    "GOLDEN_KEYS", "check_golden", "find_outliers",
    "HostInventory", "read_host_inventory",
    "HealthMeasurements", "Unmeasured", "gpu_count", "gpu_measurements",
    "NodeInventory", "read_node_inventory",
    "Clocks", "EccInfo", "GpuInventory", "GpuRecord", "MemoryRepair", "NvLinkState", "PcieLink", "read_gpu_inventory",
    "GpuLoad", "LoadReport", "LoadSample", "PerDeviceSampling", "ThrottleSampler",
]
