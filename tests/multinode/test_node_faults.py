"""Faults injected into runs across virtual nodes: a node that dies mid-collective, a node that never
turns up. Each run must end by its deadline, name the node at fault, and leave its report behind.
(The slow link is in test_nodes_network.py, whose run has one.)"""

from __future__ import annotations

import re
import subprocess
import sys
import time

from node_runs import (
    REPO_ROOT,
    node_environment,
    node_profile,
    start_agents,
    wait_for_agents,
)

from test_multirank import results


def test_dead_node_is_named_within_the_deadline_and_the_report_is_written(virtual_nodes, tmp_path):
    cluster = virtual_nodes(3)
    doomed = cluster.nodes[2]
    # Slowing the doomed node's link stretches the all_reduce sweep to several seconds, so the kill
    # below lands inside a collective rather than between tests.
    cluster.limit_rate(doomed, "100mbit")
    deadline_s = 10
    report = tmp_path / "report"
    arguments = ["--quick", f"--cluster={node_profile(tmp_path, timeout_s=deadline_s)}", f"--report-dir={report}",
                 "-m", "network", "-k", "bus_bandwidth and all_reduce or scaling", "-o",
                 "faulthandler_timeout=60"]  # a hang would show its stack in the logs
    agents = start_agents(cluster, cluster.nodes, arguments, tmp_path)

    # Kill the node once it is sending collective data (a few MB: far more than the rendezvous).
    started = time.monotonic()
    while cluster.sent_bytes(doomed) < 3_000_000:
        assert time.monotonic() - started < 90, "the doomed node never started its collective"
        assert agents[0].process.poll() is None, agents[0].output()[-3000:]
        time.sleep(0.05)
    killed = cluster.kill_node(doomed)
    assert killed  # its agent and its rank
    elapsed = wait_for_agents(agents[:2], timeout_s=3 * deadline_s + 60)
    # The failed collective, rank 0's wait for the missing rank, and the survivors' exits.
    assert elapsed < 3 * deadline_s + 20, f"survivors took {elapsed:.0f} s after the kill"
    assert [a.process.returncode for a in agents[:2]] == [1, 1], agents[0].output()[-3000:]

    data = results(report)
    outcomes = {t["nodeid"].split("::")[-1]: t for t in data["tests"]}
    during = outcomes["test_collective_bus_bandwidth[all_reduce]"]
    assert during["outcome"] == "failed"
    assert f"rank 2 (n2) did not arrive within {deadline_s} s" in during["message"]
    after = outcomes["test_allreduce_scaling"]
    assert after["outcome"] == "failed"
    assert after["message"].startswith("not run:") and "rank 2 (n2)" in after["message"]
    assert data["verdict"] == "FAIL" and data["run"]["finished_at"]
    assert "rank 2 (n2) did not arrive" in agents[0].output()  # rank 0 told the terminal too
    assert cluster.processes() == {}  # nothing of the run is left on any node


def test_missing_node_stops_torchrun_rendezvous_within_its_timeout(virtual_nodes, tmp_path):
    """Three nodes expected, two start: torchrun's rendezvous gives up after join_timeout."""
    cluster = virtual_nodes(3)
    join_timeout_s = 5  # the failure is the expected outcome: no need to wait long for it
    arguments = ["--quick", f"--cluster={node_profile(tmp_path, timeout_s=30)}", f"--report-dir={tmp_path / 'report'}",
                 "-m", "network", "-k", "all_reduce"]
    agents = start_agents(cluster, cluster.nodes[:2], arguments, tmp_path, nnodes=3, join_timeout_s=join_timeout_s)
    elapsed = wait_for_agents(agents, timeout_s=join_timeout_s + 60)
    assert elapsed < join_timeout_s + 30
    # Whichever agent reaches join_timeout first times out and closes the rendezvous; which one that
    # is, is a race (both wait the same timeout), so the other may see it closed or its store gone.
    assert all(agent.process.returncode != 0 for agent in agents)
    outputs = [agent.output() for agent in agents]
    assert any("RendezvousTimeoutError" in output for output in outputs), outputs[0][-2000:]
    for output in outputs:
        assert re.search(r"Rendezvous(Timeout|Closed|Connection)Error", output), output[-2000:]
    assert not (tmp_path / "report" / "results.json").exists()  # no rank ever started


def test_missing_rank_fails_the_join_with_one_line(virtual_nodes, tmp_path):
    """Ranks started with a static world (as srun or a static torchrun does) where one node's rank
    never starts: clusterbench's join gives up after the profile's deadline with one line."""
    cluster = virtual_nodes(2)
    deadline_s = 5  # the failure is the expected outcome: no need to wait long for it
    profile = node_profile(tmp_path, timeout_s=deadline_s)
    procs = []
    for rank, node in enumerate(cluster.nodes):
        env = {**node_environment(node, tmp_path), "RANK": str(rank), "WORLD_SIZE": "3", "LOCAL_RANK": "0",
               "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": cluster.nodes[0].address, "MASTER_PORT": "29500"}
        command = node.command(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--quick",
                               f"--cluster={profile}",
                               f"--report-dir={tmp_path / 'report'}", "-m", "network", "-k", "all_reduce")
        procs.append(subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True))
    started = time.monotonic()
    try:
        outputs = [proc.communicate(timeout=deadline_s + 60) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert time.monotonic() - started < deadline_s + 40
    out, err = outputs[0]
    assert procs[0].returncode == 4, out + err  # pytest's usage error
    assert "Traceback" not in out + err
    error_lines = [line for line in err.splitlines() if line.startswith("ERROR:")]
    assert len(error_lines) == 1, err
    assert f"could not join the 3-rank world at {cluster.nodes[0].address}:29500" in error_lines[0]
    assert procs[1].returncode != 0
