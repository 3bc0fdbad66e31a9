"""Acceptance: node health and inventory through NVML and the host, and a golden configuration.

The node's inventory and gpu.count come once per node (its first local rank): NVML sees every GPU
of the node. Per-GPU figures come from the rank that drives the GPU, paired by UUID, so an idle GPU
no process of this run loads is never judged by its idle readings. On a machine without an NVIDIA
driver the GPU figures are NOT MEASURED with the reason and the host inventory still runs; a profile
that expects GPUs (accelerators_per_node > 0) then fails on gpu.count.
"""

from dataclasses import asdict

import pytest

from clusterbench.health_checks import judge_inventories, node_health
from clusterbench.judge import finding_check
from clusterbench.model import NotMeasured, Provenance
from clusterbench.probes.health.measurements import ALL_METRICS
from clusterbench.probes.infiniband import read_ib_ports


def infiniband_inventory() -> dict:
    try:
        return {"ports": [asdict(port) for port in read_ib_ports()]}
    except NotMeasured as exc:
        return {"not_measured": str(exc)}


def reports_for_node(acceptance) -> bool:
    return acceptance.world.local_rank == 0


@pytest.mark.health
def test_node_inventory_and_golden_configuration(acceptance):
    """Every node's inventory goes into results.json; nodes unlike [golden] or unlike the majority fail."""
    shared = None
    if reports_for_node(acceptance):
        inventory = node_health(acceptance.health, acceptance.world, acceptance.devices).inventory
        assert inventory is not None  # read on the node's first local rank, which this is
        shared = {
            **inventory.to_json(),
            "hostname": acceptance.world.host,
            "infiniband": infiniband_inventory(),
        }
    golden = acceptance.profile.golden
    acceptance.share(shared, lambda by_rank: judge_inventories(by_rank, golden, acceptance.keep_inventory))


@pytest.mark.health
@pytest.mark.parametrize("metric", ALL_METRICS)
def test_gpu_health(acceptance, metric):
    # This rank's GPUs; gpu.count on the node's first local rank.
    health = node_health(acceptance.health, acceptance.world, acceptance.devices)
    attempts = health.figures.attempts(metric)
    findings = [f for f in health.findings if f["metric"] == metric]
    acceptance.share(
        findings, lambda by_rank: [finding_check(f, Provenance.RULE) for node in by_rank.values() for f in node or []]
    )
    acceptance.measure_attempts(metric, attempts)
