"""Node health in an acceptance run: what each node is, and health findings turned into checks.

The node's inventory (host, every GPU NVML sees) is read once per node, by its first local rank.
Each rank judges the GPUs it drives, paired with NVML by UUID: under a launcher that is one GPU a
rank, under plain pytest every visible one. A GPU no process of the run loads (hidden by
CUDA_VISIBLE_DEVICES, beyond torchrun's --nproc-per-node, another job's) is in the inventory but
not judged per GPU: its link is trained down at idle and its figures are not this run's to judge;
one NVML cannot use at all still fails the node. This module turns the findings (DCGM-style rules,
the profile's [golden] values, the majority of the nodes of this run) into checks, each naming the
host and GPU and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clusterbench.model import Check, Location, NotMeasured, Provenance, Verdict
from clusterbench.probes.health import (
    GpuInventory,
    HealthMeasurements,
    LoadReport,
    NodeInventory,
    Unmeasured,
    check_golden,
    find_outliers,
    gpu_count,
    gpu_measurements,
    health_findings,
    lost_gpu_findings,
    read_gpu_inventory,
    read_node_inventory,
)
from clusterbench.probes.health.measurements import PER_GPU_METRICS

if TYPE_CHECKING:
    from clusterbench.acceptance import AcceptanceRun


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


def node_health(run: "AcceptanceRun") -> NodeHealth:
    """This rank's gpu.* figures and rule findings (and the node inventory on the node's first
    local rank), read once per rank and run.

    Figures under load come from the NVML samples the GEMM tests took (bf16 preferred: the dtype
    that draws most power); without them, load-only figures are NOT MEASURED with the reason."""
    if run.node_health is None:
        world = run.exchange.world
        reports_node = world.local_rank == 0
        inventory = read_node_inventory() if reports_node else None
        reports = run.gpu_load_reports
        load = reports.get("bf16") or next(iter(reports.values()), None)
        run.node_health = assess_node(inventory, driven_gpus(run.devices), world.host, world.rank, load)
    return run.node_health


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
        return read_gpu_inventory(devices=driven), ""
    except NotMeasured as exc:
        return None, str(exc)


def finding_check(finding: dict[str, Any], provenance: Provenance) -> Check:
    device = "node" if finding["gpu_index"] is None else f"gpu{finding['gpu_index']}"
    return Check(
        metric=finding["metric"],
        params={},
        verdict=Verdict.FAIL if finding["severity"] == "fail" else Verdict.WARN,
        observed=None,
        target=None,
        unit="",
        provenance=provenance.value,
        source={
            Provenance.RULE: "node health rules (DCGM-style)",
            Provenance.GOLDEN: "the profile's [golden] configuration",
            Provenance.PEERS: "the majority of the nodes in this run",
        }[provenance],
        message=f"{finding['message']}; what to do: {finding['action']}",
        location=Location(host=finding["host"], rank=-1, device=device),
    )


def judge_inventories(run: "AcceptanceRun", shared: dict[int, Any]) -> list[Check]:
    """On rank 0: record every node's inventory, then compare it with [golden] and with the majority."""
    nodes = {data["hostname"]: data for data in shared.values() if data}
    run.results.run.inventory.update(nodes)
    golden = run.profile.golden
    checks = [
        finding_check(f.to_json(), Provenance.GOLDEN) for node in nodes.values() for f in check_golden(node, golden)
    ]
    if len(nodes) >= 2:
        checks += [finding_check(f.to_json(), Provenance.PEERS) for f in find_outliers(list(nodes.values()))]
    compared = ([f"[golden] ({', '.join(sorted(golden))})"] if golden else []) + (
        [f"the other {len(nodes) - 1} nodes"] if len(nodes) >= 2 else []
    )
    if compared and not checks:
        checks.append(
            Check(
                metric="node.inventory",
                params={},
                verdict=Verdict.PASS,
                observed=None,
                target=None,
                unit="",
                provenance=(Provenance.GOLDEN if golden else Provenance.PEERS).value,
                source=" and ".join(compared),
                message=f"{len(nodes)} node(s) match {' and '.join(compared)}",
            )
        )
    return checks
