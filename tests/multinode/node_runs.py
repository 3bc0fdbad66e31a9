"""One torchrun agent per virtual node, rendezvousing over c10d across the nodes' links.

This is how users start clusterbench on several machines (one `torchrun` per node, the same
`--rdzv-endpoint` everywhere); only the machines are namespaces here. Each agent's output goes to
a file, so a test can read rank 0's terminal output and nothing blocks on a full pipe.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from virtual_nodes import VirtualCluster, VirtualNode

REPO_ROOT = Path(__file__).resolve().parents[2]
RDZV_PORT = 29400  # free by construction: it is opened inside the first node's own namespace

PROFILE = """
[cluster]
name = "virtual-nodes"

[settings]
collective_timeout_s = {timeout}
outlier_tolerance = {tolerance}
"""


def node_profile(directory: Path, *, timeout_s: float, tolerance: float = 0.5) -> Path:
    """A profile with only the settings these runs need: the deadline and the outlier tolerance."""
    path = directory / "virtual-nodes.toml"
    path.write_text(PROFILE.format(timeout=timeout_s, tolerance=tolerance))
    return path


@dataclass
class AgentRun:
    node: VirtualNode
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def node_environment(node: VirtualNode, run_dir: Path) -> dict[str, str]:
    """What a node's ranks need beyond the launcher's variables: their node's name (every
    namespace shares the machine's host name) and the interface Gloo must use. TMPDIR keeps
    torchrun's log folders inside the test's own folder rather than in /tmp."""
    return {
        **os.environ,
        "TMPDIR": str(run_dir),
        "CLUSTERBENCH_NODE_NAME": node.name,
        "GLOO_SOCKET_IFNAME": node.interface,
        "OMP_NUM_THREADS": "1",  # several ranks share two cores
        "PYTHONUNBUFFERED": "1",
    }


def start_agents(
    cluster: VirtualCluster,
    nodes: list[VirtualNode],
    pytest_args: list[str],
    run_dir: Path,
    *,
    nnodes: int | None = None,
    nproc_per_node: int | list[int] = 1,
    join_timeout_s: float = 60,
) -> list[AgentRun]:
    """Start `torchrun` on each of `nodes`, all meeting at the first node of the cluster;
    `nproc_per_node` is one count for all, or one per node."""
    host = cluster.nodes[0]
    runs = []
    per_node = nproc_per_node if isinstance(nproc_per_node, list) else [nproc_per_node] * len(nodes)
    for node, nproc in zip(nodes, per_node):
        command = node.command(
            sys.executable, "-m", "torch.distributed.run",
            f"--nnodes={nnodes or len(nodes)}", f"--nproc-per-node={nproc}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={host.address}:{RDZV_PORT}", f"--rdzv-id={cluster.prefix}job",
            # is_host: the namespaces share one host name, so torchrun cannot tell by name which
            # agent serves the rendezvous; local-addr: the address the other nodes reach this one on.
            f"--rdzv-conf=is_host={int(node == host)},join_timeout={join_timeout_s:g}",
            f"--local-addr={node.address}", "--max-restarts=0",
            "-m", "pytest", "-p", "no:cacheprovider", *pytest_args,
        )
        log = run_dir / f"agent-{node.name}.log"
        with log.open("w") as out:
            process = subprocess.Popen(command, cwd=REPO_ROOT, env=node_environment(node, run_dir), stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        runs.append(AgentRun(node, process, log))
    return runs


def wait_for_agents(runs: list[AgentRun], timeout_s: float) -> float:
    """Seconds until every agent has exited. On timeout every agent is killed and the test fails
    with each one's last lines: a hang is a failure, not a wait."""
    started = time.monotonic()
    deadline = started + timeout_s
    for run in runs:
        try:
            run.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in runs:
                other.process.kill()
            tails = "\n".join(f"--- {r.node.name}\n{r.output()[-2000:]}" for r in runs)
            raise AssertionError(f"agents still running after {timeout_s:g} s:\n{tails}") from None
    return time.monotonic() - started
