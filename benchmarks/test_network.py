"""Acceptance: collective bus bandwidth as nccl-tests measures it, its correctness, MPI and InfiniBand.

Under a launcher the sweeps run across every rank of the job; under plain pytest they start local
ranks (one per GPU; on a CPU the profile's `local_ranks`). Rank 0 reports the figures, which the
sweep already combined across ranks (the slowest rank governs each repeat of n back-to-back ops).
One sweep per op feeds its busbw, time and #wrong tests: the figures on screen, judged and stored
are the same numbers.
"""

import pytest

from clusterbench.judge import pairwise_check
from clusterbench.model import NotMeasured
from clusterbench.probes import infiniband
from clusterbench.probes.collectives import COLLECTIVES
from clusterbench.probes.mpi_allreduce import measure_mpi_allreduce
from clusterbench.reports.collective_table import render_table, timing_line

OPS = tuple(COLLECTIVES)


def sweep_figures(acceptance, op):
    """Every figure of `op`'s sweep (each test keeps its own metric's): run by every rank at once."""
    return lambda: [m for sweep in acceptance.runners.collectives.sweeps(op) for m in sweep.measurements()]


@pytest.mark.network
@pytest.mark.parametrize("op", OPS)
def test_collective_bus_bandwidth(acceptance, op):
    measured = acceptance.measure(f"{COLLECTIVES[op].metric_name}.busbw_gbps", sweep_figures(acceptance, op))
    if measured:
        runs = acceptance.runners.collectives
        sweeps = runs.sweeps(op)
        modes = {sweep.inplace: sweep.rows for sweep in sweeps}
        title = f"{op}: {runs.ranks} ranks, {runs.backend}, {runs.plan.dtype}, launcher {acceptance.world.launcher}"
        timing = "; ".join(filter(None, [timing_line(runs.plan.iterations, runs.plan.repeats),
                                         *dict.fromkeys(sweep.caveat for sweep in sweeps)]))
        acceptance.show(render_table(modes.get(False, ()), modes.get(True, ()), title=title, timing=timing))


@pytest.mark.network
@pytest.mark.parametrize("op", OPS)
def test_collective_time(acceptance, op):
    """nccl-tests' time column as a figure of its own (us per op, every size), for latency expectations."""
    acceptance.measure(f"{COLLECTIVES[op].metric_name}.time_us", sweep_figures(acceptance, op))


@pytest.mark.network
@pytest.mark.parametrize("op", OPS)
def test_collective_results_are_exact(acceptance, op):
    acceptance.measure("collective.wrong", sweep_figures(acceptance, op), params={"op": op})


@pytest.mark.network
def test_mpi_allreduce(acceptance):
    """A second opinion on the fabric, independent of torch: MPI_Allreduce timed as OSU does."""

    def measure():
        if acceptance.world.launcher != "mpi":
            raise NotMeasured(f"started by {acceptance.world.launcher}, not an MPI launcher (mpirun/mpiexec); "
                              "MPI ranks are needed")
        runs = acceptance.runners.collectives
        return measure_mpi_allreduce(list(runs.plan.sizes),
                                     quick=acceptance.quick, location=runs.location).measurements()

    acceptance.measure("mpi.allreduce_busbw_gbps", measure)


@pytest.mark.network
@pytest.mark.parametrize("metric", infiniband.PROBE.metric_names)
def test_infiniband_ports(acceptance, metric):
    """Active InfiniBand/RoCE ports and the slowest one's rate, from sysfs, once per node."""
    acceptance.measure(metric, lambda: infiniband.MEASURES[metric](acceptance.location("node")))


@pytest.mark.network
def test_allreduce_scaling(acceptance):
    """all_reduce busbw at 2, 4, 8, ... ranks up to the world, then intra-node and inter-node apart."""
    acceptance.measure("scaling.allreduce_busbw_gbps", acceptance.runners.collectives.scaling)


@pytest.mark.network
def test_pairwise_nodes(acceptance):
    """Every node paired with another; slow pairs re-paired with good nodes to name the culprit."""
    tolerance = acceptance.profile.settings.outlier_tolerance
    found: dict[str, list] = {"blames": []}

    def measure():
        measurements, found["blames"] = acceptance.runners.collectives.pairwise(tolerance)
        return measurements

    acceptance.share(None, lambda _: [pairwise_check(b, tolerance) for b in found["blames"]])
    acceptance.measure("pairwise.busbw_gbps", measure)
