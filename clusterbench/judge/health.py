"""Checks of node health: each finding (rules, [golden], majority) as a check naming the host, GPU and
what to do, and the inventory comparison's PASS when nothing differs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clusterbench.judge.golden import check_golden, find_outliers
from clusterbench.model import Check, Location, Provenance, Verdict


def finding_check(finding: dict[str, Any], provenance: Provenance) -> Check:
    """A HealthFinding.to_json() (it travels to rank 0 as plain data) as a FAIL or WARN."""
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


def inventory_checks(nodes: Mapping[str, Mapping[str, Any]], golden: Mapping[str, Any]) -> list[Check]:
    """Every node's inventory (hostname -> NodeInventory.to_json()) against [golden] and against the
    majority; one PASS naming what was compared when nothing differs."""
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
