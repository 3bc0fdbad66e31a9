"""Node health in an acceptance run: what each node is, and health findings turned into checks.

The health probes (clusterbench.probes.health) read NVML and the host once per node; this module
caches that per rank, and turns their findings (DCGM-style rules, the profile's [golden] values, the
majority of the nodes of this run) into checks, each naming the host and GPU and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clusterbench.model import Check, Location, Provenance, Verdict
from clusterbench.probes.health import (
    HealthMeasurements,
    NodeInventory,
    check_golden,
    find_outliers,
    gpu_measurements,
    health_findings,
    read_node_inventory,
)

if TYPE_CHECKING:
    from clusterbench.acceptance import AcceptanceRun


@dataclass
class NodeHealth:
    inventory: NodeInventory
    figures: HealthMeasurements
    findings: list[dict[str, Any]]  # HealthFinding.to_json(), ready to travel to rank 0


def node_health(run: "AcceptanceRun") -> NodeHealth:
    """This node's inventory, gpu.* figures and rule findings, read once per rank and run.

    Figures under load come from the NVML samples the GEMM tests took (bf16 preferred: the dtype
    that draws most power); without them, load-only figures are NOT MEASURED with the reason."""
    if run.node_health is None:
        world = run.exchange.world
        inventory = read_node_inventory()
        if inventory.gpu is None:
            figures = HealthMeasurements.unavailable(inventory.gpu_not_measured or "no GPU inventory", world.host, world.rank)
            findings: list[dict[str, Any]] = []
        else:
            reports = run.gpu_load_reports
            load = reports.get("bf16") or next(iter(reports.values()), None)
            figures = gpu_measurements(inventory.gpu, world.host, world.rank, load)
            findings = [f.to_json() for f in health_findings(inventory.gpu, world.host, load)]
        run.node_health = NodeHealth(inventory, figures, findings)
    return run.node_health


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
