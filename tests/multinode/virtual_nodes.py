"""Several "nodes" on one machine: network namespaces joined by veth links to a switch.

Each node is a network namespace with its own loopback and one link (`eth0`, an address in
198.18.0.0/24, the range RFC 2544 sets aside for benchmarking) to a bridge. The bridge lives in a
namespace of its own, the "switch", so the machine's own namespace never sees a link, an address or
a route of the test, and bridged traffic is not subject to the host's firewall. Nothing can reach
an external address: the namespaces have no route out.

Names carry the creating process's id (cbt-<pid>-...), so parallel runs do not clash and the
namespaces of a run that was killed can be recognised and removed by the next one.

Teardown kills every process inside each namespace (whatever started it), then deletes the
namespaces, which deletes the links and the bridge with them. It runs from the fixture finalizer
and again at interpreter exit, and tolerates being run twice.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field

SUBNET = "198.18.0"  # RFC 2544 benchmarking range; the nodes are .1, .2, ...
PREFIX_LEN = 24
NODE_INTERFACE = "eth0"
NAMESPACE_PATTERN = re.compile(r"^cbt-(\d+)-")


class NetnsError(RuntimeError):
    """An `ip`/`tc` command failed while building or changing the virtual network."""


def ip(*args: str, check: bool = True) -> str:
    """Run `ip args...`, returning its stdout."""
    return run_command(["ip", *args], check=check)


def run_command(command: list[str], check: bool = True) -> str:
    proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(command)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def in_namespace(namespace: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *command]


def list_namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def namespace_pids(namespace: str) -> list[int]:
    return [int(pid) for pid in ip("netns", "pids", namespace, check=False).split()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_namespace_processes(namespace: str, timeout_s: float = 10.0) -> None:
    """SIGKILL every process in `namespace` and wait until none is left."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = namespace_pids(namespace)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise NetnsError(f"processes {pids} in namespace {namespace} survived SIGKILL for {timeout_s:g} s")
        time.sleep(0.05)


def remove_namespace(namespace: str) -> None:
    if namespace not in list_namespaces():
        return
    kill_namespace_processes(namespace)
    ip("netns", "delete", namespace)


def remove_stale_namespaces() -> list[str]:
    """Delete the namespaces of earlier runs whose process is gone (a run killed before teardown)."""
    removed = []
    for namespace in list_namespaces():
        match = NAMESPACE_PATTERN.match(namespace)
        if match and not _pid_alive(int(match.group(1))):
            remove_namespace(namespace)
            removed.append(namespace)
    return removed


@dataclass(frozen=True)
class VirtualNode:
    name: str  # "n0": also the node name clusterbench reports (CLUSTERBENCH_NODE_NAME)
    namespace: str
    address: str
    switch_port: str  # the far end of this node's link, in the switch namespace

    interface = NODE_INTERFACE

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside this node's namespace."""
        return in_namespace(self.namespace, *argv)


@dataclass
class VirtualCluster:
    """A switch and `count` nodes on it; `teardown()` removes everything this object created."""

    prefix: str
    nodes: list[VirtualNode] = field(default_factory=list)
    switch: str = ""
    _namespaces: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, count: int, tag: str = "") -> VirtualCluster:
        prefix = f"cbt-{os.getpid()}-{tag}" if tag else f"cbt-{os.getpid()}-"
        cluster = cls(prefix=prefix)
        atexit.register(cluster.teardown)
        try:
            cluster._build(count)
        except BaseException:
            cluster.teardown()
            raise
        return cluster

    def _add_namespace(self, name: str) -> str:
        namespace = f"{self.prefix}{name}"
        self._namespaces.append(namespace)  # recorded first: teardown must find a half-built one
        ip("netns", "add", namespace)
        ip("-n", namespace, "link", "set", "lo", "up")
        return namespace

    def _build(self, count: int) -> None:
        self.switch = self._add_namespace("sw")
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for index in range(count):
            name = f"n{index}"
            namespace = self._add_namespace(name)
            # Both ends are created straight into their namespaces: the host's namespace never
            # holds them, so their names only need to be unique inside each namespace.
            ip("link", "add", NODE_INTERFACE, "netns", namespace, "type", "veth", "peer", "name", name, "netns",
               self.switch)
            ip("-n", self.switch, "link", "set", name, "master", "br0")
            ip("-n", self.switch, "link", "set", name, "up")
            address = f"{SUBNET}.{index + 1}"
            ip("-n", namespace, "addr", "add", f"{address}/{PREFIX_LEN}", "dev", NODE_INTERFACE)
            ip("-n", namespace, "link", "set", NODE_INTERFACE, "up")
            self.nodes.append(VirtualNode(name, namespace, address, name))
        self._wait_for_links()

    def _wait_for_links(self, timeout_s: float = 10.0) -> None:
        """The bridge ports pass traffic once they leave the 'learning' state; wait for it, so the
        first rendezvous is not lost to a port that is not forwarding yet."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = ip("-n", self.switch, "-d", "link", "show", "master", "br0")
            if states.count("state forwarding") >= len(self.nodes) and "state learning" not in states:
                return
            time.sleep(0.1)
        raise NetnsError(f"bridge ports of {self.switch} not forwarding within {timeout_s:g} s")

    def limit_rate(self, node: VirtualNode, rate: str) -> None:
        """Rate-limit `node`'s link both ways with a token bucket (tc tbf), like a slow NIC or a
        port negotiated down: the node's egress inside its namespace, its ingress at the switch port."""
        for namespace, device in ((node.namespace, node.interface), (self.switch, node.switch_port)):
            tbf = ["tc", "qdisc", "add", "dev", device, "root", "tbf", "rate", rate, "burst", "64kb", "latency",
                   "400ms"]
            run_command(in_namespace(namespace, *tbf))

    def sent_bytes(self, node: VirtualNode) -> int:
        """Bytes `node` has sent over its link (its interface's tx counter)."""
        out = ip("-n", node.namespace, "-s", "link", "show", node.interface)
        lines = out.splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("TX:"):
                return int(lines[i + 1].split()[0])
        raise NetnsError(f"no TX counters for {node.interface} in {node.namespace}: {out!r}")

    def kill_node(self, node: VirtualNode) -> list[int]:
        """Kill every process on `node` at once, as a node losing power would."""
        pids = namespace_pids(node.namespace)
        kill_namespace_processes(node.namespace)
        return pids

    def processes(self) -> dict[str, list[int]]:
        return {ns: pids for ns in self._namespaces if ns in list_namespaces() and (pids := namespace_pids(ns))}

    def teardown(self) -> None:
        errors = []
        for namespace in reversed(self._namespaces):
            try:
                remove_namespace(namespace)
            except NetnsError as exc:
                errors.append(str(exc))
        self._namespaces.clear()
        if errors:
            raise NetnsError("; ".join(errors))


def leftovers(prefix: str) -> list[str]:
    """Namespaces of this prefix still present (the teardown check)."""
    return [ns for ns in list_namespaces() if ns.startswith(prefix)]
