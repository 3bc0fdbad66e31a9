"""The network and training probes across real node boundaries, with one slow link.

Three virtual nodes, one torchrun agent each, c10d rendezvous over the nodes' links, Gloo over real
sockets between namespaces: n0 runs two ranks (so one node's ranks can be swept alone), n1 and n2
one each. n1's link is rate-limited with tc tbf, as a NIC negotiated down or a bad cable would be.
One run serves all the tests of this module: each checks one side of it.
"""

from __future__ import annotations

import pytest
from node_runs import node_profile, start_agents, wait_for_agents

from test_multirank import results

SLOW_RATE = "400mbit"  # 50 MB/s against ~1 GB/s for Gloo over an unlimited veth: far below any tolerance
TOLERANCE = 0.5


@pytest.fixture(scope="module")
def slow_link_run(module_virtual_nodes, tmp_path_factory):
    cluster = module_virtual_nodes(3)
    cluster.limit_rate(cluster.nodes[1], SLOW_RATE)
    run_dir = tmp_path_factory.mktemp("slow-link")
    report = run_dir / "report"
    arguments = ["--quick", f"--cluster={node_profile(run_dir, timeout_s=60, tolerance=TOLERANCE)}",
                 f"--report-dir={report}", "-m", "network or training", "-k", "scaling or pairwise or training"]
    agents = start_agents(cluster, cluster.nodes, arguments, run_dir, nproc_per_node=[2, 1, 1])
    wait_for_agents(agents, timeout_s=300)  # ~70 s on an idle 2-core machine; a hang still fails
    return agents, results(report), report


def test_ranks_hosts_and_node_boundaries(slow_link_run):
    agents, data, report = slow_link_run
    run = data["run"]
    assert (run["world_size"], run["launcher"], run["backend"]) == (4, "torchrun", "gloo")
    assert run["hosts"] == ["n0", "n1", "n2"]
    assert run["environment"]["GLOO_SOCKET_IFNAME"] == "eth0"
    assert agents[0].output().count("clusterbench summary") == 1  # rank 0 alone talks to the terminal
    assert sorted(p.name for p in (report / "logs").iterdir()) == ["rank-1.log", "rank-2.log", "rank-3.log"]


def test_scaling_shows_intra_and_inter_node_apart(slow_link_run):
    _, data, _ = slow_link_run
    # Ranks 0-1 on n0, 2 on n1, 3 on n2 (c10d orders nodes by address): n0's ranks alone are
    # intra-node; one rank per node (3 ranks) and the whole world (4) cross node boundaries.
    scaling = {(m["params"]["ranks"], m["params"]["span"]): m["value"] for m in data["measurements"]
               if m["metric"] == "scaling.allreduce_busbw_gbps"}
    assert set(scaling) == {(2, "intra-node"), (3, "inter-node"), (4, "inter-node")}
    assert all(value > 0 for value in scaling.values())
    outcome = next(t for t in data["tests"] if t["nodeid"].endswith("test_allreduce_scaling"))
    assert outcome["outcome"] == "passed"


def test_slow_link_is_blamed_on_its_node_only(slow_link_run):
    agents, data, _ = slow_link_run
    assert agents[0].process.returncode == 1, agents[0].output()[-3000:]  # the slow node fails the run
    pairs = {(tuple(m["details"]["pair"]), m["params"]["round"]): m["value"] for m in data["measurements"]
             if m["metric"] == "pairwise.busbw_gbps"}
    # First pass: n0-n1 and (odd count) n2-n0, between the nodes' first ranks. n0-n1 is slow, so
    # both of its ends are re-paired with n2, the one node of a good pair.
    assert set(pairs) == {(("n0", "n1"), 1), (("n2", "n0"), 1), (("n0", "n2"), 2), (("n1", "n2"), 2)}
    assert pairs[("n0", "n1"), 1] < (1 - TOLERANCE) * pairs[("n2", "n0"), 1]

    verdicts = {c["host"]: c["verdict"] for c in data["checks"] if c["metric"] == "pairwise.busbw_gbps"}
    assert verdicts == {"n1": "FAIL", "n0": "PASS"}  # n1 named; n0, its first partner, cleared; no link blamed
    pairwise = next(t for t in data["tests"] if t["nodeid"].endswith("test_pairwise_nodes"))
    assert pairwise["outcome"] == "failed" and "node n1 is slow" in pairwise["message"]
    assert "node n0 is slow" not in pairwise["message"] and "node n2" not in pairwise["message"]


def test_training_across_nodes_keeps_ranks_in_step(slow_link_run):
    _, data, _ = slow_link_run
    spans = {(m["params"]["ranks"], m["params"]["span"])
             for m in data["measurements"] if m["metric"] == "train.step_time_ms"}
    assert spans == {(1, "single"), (2, "intra-node"), (3, "inter-node"), (4, "inter-node")}  # 3: one rank per node
    # DDP across the node boundary: every rank ends with the same parameters, and the loss falls.
    rules = {(c["metric"], c["params"]["ranks"]): c["verdict"] for c in data["checks"]
             if c["metric"] in ("train.params_mismatched", "train.loss_drop")}
    assert rules[("train.params_mismatched", 4)] == "PASS" and rules[("train.loss_drop", 4)] == "PASS"
    outcomes = {t["nodeid"].split("::")[-1]: t["outcome"] for t in data["tests"] if "test_training" in t["nodeid"]}
    assert outcomes["test_training[train.step_time_ms]"] == "passed"
    assert outcomes["test_training[train.params_mismatched]"] == "passed"
