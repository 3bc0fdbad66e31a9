"""Fixtures for runs across several nodes on one machine: virtual nodes (network namespaces) and a
single-host Slurm. Both need root and iproute2 / the Slurm daemons; without them the tests skip and
say which is missing.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess

import pytest
from virtual_nodes import VirtualCluster, leftovers, remove_stale_namespaces


def _require_namespaces() -> None:
    if os.geteuid() != 0:
        pytest.skip("virtual nodes need root (network namespaces, veth links, tc)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            pytest.skip(f"virtual nodes need `{tool}` (apt-get install iproute2)")
    probe = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"network namespaces unavailable here: {probe.stderr.strip()}")


def _virtual_node_factory():
    """Yields `build(count)`, which builds a switch and `count` nodes n0, n1, ... (198.18.0.1, ...).

    Whatever happens in the tests, the teardown kills every process in the namespaces and deletes
    them, then checks that nothing of the run is left; an atexit hook repeats the teardown should
    the session itself be killed between test and finalizer.
    """
    _require_namespaces()
    remove_stale_namespaces()
    clusters: list[VirtualCluster] = []

    def build(count: int) -> VirtualCluster:
        cluster = VirtualCluster.create(count, tag=f"{len(clusters)}-")
        clusters.append(cluster)
        return cluster

    yield build
    for cluster in clusters:
        cluster.teardown()
        assert not leftovers(cluster.prefix), f"namespaces left behind: {leftovers(cluster.prefix)}"


@pytest.fixture
def virtual_nodes():
    """`virtual_nodes(3)`: three virtual nodes for one test (see _virtual_node_factory)."""
    yield from _virtual_node_factory()


@pytest.fixture(scope="module")
def module_virtual_nodes():
    """The same, shared by the tests of a module that check one run from several sides."""
    yield from _virtual_node_factory()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A private single-host Slurm for the session; stopped afterwards, with nothing left running."""
    from slurm_cluster import SlurmCluster, SlurmUnavailable

    try:
        cluster = SlurmCluster.start(tmp_path_factory.mktemp("slurm"))
    except SlurmUnavailable as exc:
        pytest.skip(f"no Slurm: {exc}")
    atexit.register(cluster.stop)
    yield cluster
    cluster.stop()
    assert not cluster.leftovers(), f"Slurm processes left behind: {cluster.leftovers()}"
