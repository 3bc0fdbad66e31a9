"""bad-nodes.txt and the commands that take those nodes out of service.

bad-nodes.txt is for scripts: one node a line, its host name, a tab, and why (lines starting with
'#' are comments), written on every run so that a stale list from an earlier run never survives.
The commands (Slurm drain, Kubernetes cordon) are shown for a person to run; clusterbench never runs them.
"""

from __future__ import annotations

import re
import shlex

from clusterbench.reports.overview import BadNode

BAD_NODES_FILENAME = "bad-nodes.txt"
# What a Slurm node or Kubernetes node name can be; a host name outside it gets no command (it came
# from the machine, and a command line is no place for whatever it holds).
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
MAX_REASON = 120  # Slurm keeps the reason in its state; keep it short


def _one_line(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


def render_bad_nodes(nodes: list[BadNode], run_id: str) -> str:
    lines = [f"# clusterbench run {run_id}: nodes that failed checks or straggled; host<TAB>why"]
    if not nodes:
        lines.append("# none")
    lines += [f"{_one_line(n.host)}\t{_one_line(n.why)}" for n in nodes]
    return "\n".join(lines) + "\n"


def valid_node_name(host: str) -> bool:
    return bool(_NODE_NAME.match(host))


def drain_reason(node: BadNode) -> str:
    reason = _one_line(f"clusterbench: {node.why}")
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"


def slurm_drain_command(node: BadNode) -> str:
    return f"scontrol update nodename={shlex.quote(node.host)} state=drain reason={shlex.quote(drain_reason(node))}"


def kubectl_cordon_command(node: BadNode) -> str:
    return f"kubectl cordon {shlex.quote(node.host)}"


def service_commands(nodes: list[BadNode]) -> tuple[list[str], list[str]]:
    """(Slurm commands, Kubernetes commands) for the nodes whose names can be put on a command line."""
    named = [n for n in nodes if valid_node_name(n.host)]
    return [slurm_drain_command(n) for n in named], [kubectl_cordon_command(n) for n in named]
