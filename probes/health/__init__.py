"""Node health and inventory: what each node is (host, GPUs, links) and whether it is healthy.

    inventory = read_node_inventory()                 # host always; GPUs where NVML is available
    mine = inventory.gpu.select({"cuda:0": uuid})     # the GPUs this process drives, paired by UUID
    with ThrottleSampler(devices={"cuda:0": uuid}) as sampler:   # around a load such as the GEMM probe
        run_gemm()
    figures = gpu_measurements(mine, host, rank, sampler.report)

Probes only: nothing here knows about pytest, profiles as files, or verdicts. What in these figures
is a fault (the DCGM-style rules, the [golden] values, the majority of the nodes) is the judge's to
say: clusterbench.judge.health_rules and clusterbench.judge.golden.
"""

from clusterbench.probes.health.clock_events import BENIGN, THROTTLING, decode
from clusterbench.probes.health.gpu_pairing import NvmlGpuId, Pairing, pair_devices, same_uuid_key
from clusterbench.probes.health.host_inventory import HostInventory, read_host_inventory
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
    "NvmlGpuId", "Pairing", "pair_devices", "same_uuid_key",
    "HostInventory", "read_host_inventory",
    "HealthMeasurements", "Unmeasured", "gpu_count", "gpu_measurements",
    "NodeInventory", "read_node_inventory",
    "Clocks", "EccInfo", "GpuInventory", "GpuRecord", "MemoryRepair", "NvLinkState", "PcieLink", "read_gpu_inventory",
    "GpuLoad", "LoadReport", "LoadSample", "PerDeviceSampling", "ThrottleSampler",
]
