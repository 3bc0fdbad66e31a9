"""Acceptance: collective bus bandwidth as nccl-tests measures it, its correctness, MPI and InfiniBand.

Under a launcher the sweeps run across every rank of the job; under plain pytest they start local
ranks (one per GPU; on a CPU the profile's `local_ranks`). Rank 0 reports the figures, which the
sweep already combined across ranks (the slowest rank governs each iteration).
"""

import pytest

from clusterbench.judge import Scope
from clusterbench.model import NotMeasured
from clusterbench.probes.collective_table import render_table
from clusterbench.probes.collectives import COLLECTIVES
from clusterbench.probes.infiniband import measure_ib_ports
from clusterbench.probes.mpi_allreduce import measure_mpi_allreduce

OPS = tuple(COLLECTIVES)


def _sweep_attempts(acceptance, op, metric):
    """Sweep `op` on every rank; rank 0 alone offers the (world-wide) figures for judging."""
    if not acceptance.is_reporter:
        acceptance.collectives.sweeps(op)  # take part; a failure here fails the test on this rank
        return []

    def measure():
        sweeps = acceptance.collectives.sweeps(op)
        return [m for sweep in sweeps for m in sweep.measurements() if m.metric == metric]

    return [(acceptance.collectives.location, measure)]


@pytest.mark.network
@pytest.mark.parametrize("op", OPS)
def test_collective_bus_bandwidth(acceptance, op):
    metric = f"{COLLECTIVES[op].metric_name}.busbw_gbps"
    measurements = acceptance.measure(Scope(metric), _sweep_attempts(acceptance, op, metric))
    if measurements:
        sweeps = acceptance.collectives.sweeps(op)
        modes = {sweep.inplace: sweep.rows for sweep in sweeps}
        runs = acceptance.collectives
        title = f"{op}: {runs.ranks} ranks, {runs.backend}, {runs.plan.dtype}, launcher {acceptance.world.launcher}"
        acceptance.show(render_table(modes.get(False, ()), modes.get(True, ()), title=title))


@pytest.mark.network
@pytest.mark.parametrize("op", OPS)
def test_collective_results_are_exact(acceptance, op):
    acceptance.measure(Scope("collective.wrong", {"op": op}), _sweep_attempts(acceptance, op, "collective.wrong"), must_be_zero=True)


@pytest.mark.network
def test_mpi_allreduce(acceptance):
    """A second opinion on the fabric, independent of torch: MPI_Allreduce timed as OSU does."""
    world = acceptance.world
    location = acceptance.collectives.location

    def measure():
        if world.launcher != "mpi":
            raise NotMeasured(f"started by {world.launcher}, not an MPI launcher (mpirun/mpiexec); MPI ranks are needed")
        sizes = acceptance.collectives.plan.sizes
        result = measure_mpi_allreduce(list(sizes), quick=acceptance.quick, location=location)
        return result.measurements() if acceptance.is_reporter else []

    if world.launcher == "mpi" and not acceptance.is_reporter:
        measure()
        acceptance.measure(Scope("mpi.allreduce_busbw_gbps"), [])
    else:
        acceptance.measure(Scope("mpi.allreduce_busbw_gbps"), [(location, measure)])


@pytest.mark.network
def test_infiniband_ports(acceptance):
    """Port state and rate of every InfiniBand/RoCE port, once per node."""
    attempts = []
    if acceptance.world.local_rank == 0:
        location = acceptance.location("node")
        attempts.append((location, lambda: measure_ib_ports(location)))
    acceptance.measure(Scope("ib.active_ports"), attempts)
