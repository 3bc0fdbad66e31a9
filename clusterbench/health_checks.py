"""Node health in an acceptance run: what each node is, and health findings turned into checks.

The node's inventory (host, every GPU NVML sees) is read once per node, by its first local rank.
Each rank judges the GPUs it drives, paired with NVML by UUID: under a launcher that is one GPU a
rank, under plain pytest every visible one. A GPU no process of the run loads (hidden by
CUDA_VISIBLE_DEVICES, beyond torchrun's --nproc-per-node, another job's) is in the inventory but
not judged per GPU: its link is trained down at idle and its figures are not this run's to judge;
one NVML cannot use at all still fails the node. The judge (clusterbench.judge.health_rules,
.golden, .health) decides which of the figures are faults and turns them into checks; this module
gathers what it needs, rank by rank.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clusterbench.judge.health import inventory_checks
from clusterbench.judge.health_rules import health_findings, lost_gpu_findings
from clusterbench.model import Check, Location, NotMeasured
from clusterbench.probes.health import (
    GpuInventory,
    HealthMeasurements,
    LoadReport,
    NodeInventory,
    Unmeasured,
    gpu_count,
    gpu_measurements,
    read_node_inventory,
)
from clusterbench.probes.health.measurements import PER_GPU_METRICS
from clusterbench.probes.health.node_inventory import read_gpus

if TYPE_CHECKING:
    from clusterbench.probes.devices import LocalDevice
    from clusterbench.world import World


NO_CUDA_DEVICE = (
    "this process drives no CUDA device (torch.cuda.is_available() is False), and per-GPU health is judged "
    "on the GPUs a run loads"
)


@dataclass
class NodeHealth:
    inventory: NodeInventory | None  # the whole node's; read by the node's first local rank only
    figures: HealthMeasurements  # gpu.count (node's first local rank) and this rank's GPUs' figures
    findings: list[dict[str, Any]]  # HealthFinding.to_json(), ready to travel to rank 0


def driven_gpus(devices: list) -> dict[str, str | None]:
    """The CUDA devices this rank loads, torch device -> CUDA UUID (probes.devices.LocalDevice)."""
    return {device.torch_device: device.uuid for device in devices if device.kind == "cuda"}


@dataclass
class HealthState:
    """Shared between the tests of one rank: the NVML samples the GEMM tests took while each GPU was
    loaded (by dtype), and the node's health read from them once."""

    load_reports: dict[str, LoadReport] = field(default_factory=dict)
    node: NodeHealth | None = None


def node_health(state: HealthState, world: World, devices: list[LocalDevice]) -> NodeHealth:
    """This rank's gpu.* figures and rule findings (and the node inventory on the node's first
    local rank), read once per rank and run.

    Figures under load come from the NVML samples the GEMM tests took (bf16 preferred: the dtype
    that draws most power); without them, load-only figures are NOT MEASURED with the reason."""
    if state.node is None:
        inventory = read_node_inventory() if world.local_rank == 0 else None
        load = _load_for_health(state.load_reports)
        state.node = assess_node(inventory, driven_gpus(devices), world.host, world.rank, load)
    return state.node


def _load_for_health(reports: dict[str, LoadReport]) -> LoadReport | None:
    """The samples the health figures under load are judged on: the bf16 GEMM's (the dtype that draws
    most power), with the burn-in's soak added where it ran (where thermal throttling shows)."""
    gemm = reports.get("bf16") or next((r for key, r in reports.items() if key != "burnin"), None)
    soak = reports.get("burnin")
    if gemm is None or soak is None:
        return gemm or soak
    return LoadReport.merge([gemm, soak], interval_s=gemm.interval_s)


def assess_node(
    inventory: NodeInventory | None, driven: dict[str, str | None], host: str, rank: int, load: LoadReport | None
) -> NodeHealth:
    """Figures and findings for the GPUs in `driven`; with the node's `inventory` (the node's
    reporter), also gpu.count and the GPUs NVML cannot use."""
    figures, findings = HealthMeasurements(), []
    mine, why_not = _my_gpus(inventory, driven)
    if mine is not None:
        figures.extend(gpu_measurements(mine, host, rank, load, include_count=False))
        findings += health_findings(mine, host, load)
    elif driven:
        for label in driven:
            figures.extend(HealthMeasurements.unavailable(why_not, host, rank, PER_GPU_METRICS, device=label))
    elif inventory is not None:
        # One line for the node, as before, not one per rank: nobody here drives a GPU.
        figures.extend(HealthMeasurements.unavailable(why_not, host, rank, PER_GPU_METRICS))
    if inventory is not None:
        node = Location(host, rank, "node")
        if inventory.gpu is not None:
            figures.measurements.append(gpu_count(inventory.gpu, host, rank))
            paired = {gpu.index for gpu in mine.gpus} if mine is not None else set()
            findings += lost_gpu_findings(inventory.gpu, host, skip=paired)
        else:
            figures.not_measured.append(Unmeasured("gpu.count", node, inventory.gpu_not_measured or "no GPU inventory"))
    return NodeHealth(inventory, figures, [f.to_json() for f in findings])


def _my_gpus(inventory: NodeInventory | None, driven: dict[str, str | None]) -> tuple[GpuInventory | None, str]:
    """The GPUs of `driven`, from the node inventory when this rank has it, else read for them only."""
    if not driven:
        reason = inventory.gpu_not_measured if inventory is not None and inventory.gpu is None else None
        return None, reason or NO_CUDA_DEVICE
    if inventory is not None:
        if inventory.gpu is None:
            return None, inventory.gpu_not_measured or "no GPU inventory"
        return inventory.gpu.select(driven), ""
    try:
        return read_gpus(devices=driven), ""  # NVML, else amdsmi on an AMD node
    except NotMeasured as exc:
        return None, str(exc)


def judge_inventories(
    shared: dict[int, Any], golden: dict[str, Any], keep: Callable[[dict[str, Any]], None]
) -> list[Check]:
    """On rank 0: `keep` every node's inventory (for results.json), then have the judge compare it
    with [golden] and with the majority."""
    nodes = {data["hostname"]: data for data in shared.values() if data}
    keep(nodes)
    return inventory_checks(nodes, golden)
