"""Acceptance: collective bus bandwidth as nccl-tests measures it, its correctness, MPI and InfiniBand.

Under a launcher the sweeps run across every rank of the job; under plain pytest they start local
ranks (one per GPU; on a CPU the profile's `local_ranks`). Rank 0 reports the figures, which the
sweep already combined across ranks (the slowest rank governs each repeat of n back-to-back ops).
One sweep per op feeds its busbw, time and #wrong tests: the figures on screen, judged and stored
are the same numbers.
"""

import pytest

from clusterbench.judge import Scope
from clusterbench.model import NotMeasured
from clusterbench.probes.collective_table import render_table, timing_line
from clusterbench.probes.collectives import COLLECTIVES
from clusterbench.probes.infiniband import measure_ib_min_rate, measure_ib_ports
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
        timing = "; ".join(filter(None, [timing_line(runs.plan.iterations, runs.plan.repeats),
                                         *dict.fromkeys(sweep.caveat for sweep in sweeps)]))
        acceptance.show(render_table(modes.get(False, ()), modes.get(True, ()), title=title, timing=timing))


@pytest.mark.network
@pytest.mark.parametrize("op", OPS)
def test_collective_time(acceptance, op):
    """nccl-tests' time column as a figure of its own (us per op, every size), for latency expectations."""
    metric = f"{COLLECTIVES[op].metric_name}.time_us"
    acceptance.measure(Scope(metric), _sweep_attempts(acceptance, op, metric))


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


IB_PROBES = {"ib.active_ports": measure_ib_ports, "ib.min_active_rate_gbps": measure_ib_min_rate}


@pytest.mark.network
@pytest.mark.parametrize("metric", list(IB_PROBES))
def test_infiniband_ports(acceptance, metric):
    """Active InfiniBand/RoCE ports and the slowest one's rate, from sysfs, once per node."""
    attempts = []
    if acceptance.world.local_rank == 0:
        location = acceptance.location("node")
        attempts.append((location, lambda: IB_PROBES[metric](location)))
    acceptance.measure(Scope(metric), attempts, compare_peers=True)


@pytest.mark.network
def test_allreduce_scaling(acceptance):
    """all_reduce busbw at 2, 4, 8, ... ranks up to the world, then intra-node and inter-node apart."""
    metric = "scaling.allreduce_busbw_gbps"
    if not acceptance.is_reporter:
        acceptance.collectives.scaling()  # take part in every group this rank belongs to
        acceptance.measure(Scope(metric), [])
        return
    acceptance.measure(Scope(metric), [(acceptance.collectives.location, acceptance.collectives.scaling)])


@pytest.mark.network
def test_pairwise_nodes(acceptance):
    """Every node paired with another; slow pairs re-paired with good nodes to name the culprit."""
    tolerance = acceptance.profile.settings.outlier_tolerance
    found: dict[str, list] = {"blames": []}

    def measure():
        measurements, found["blames"] = acceptance.collectives.pairwise(tolerance)
        return measurements if acceptance.is_reporter else []

    acceptance.share(None, lambda _: [pairwise_check(b, tolerance) for b in found["blames"]])
    if acceptance.is_reporter:
        acceptance.measure(Scope("pairwise.busbw_gbps"), [(acceptance.collectives.location, measure)])
    else:
        try:
            measure()  # take part in every pair this rank leads or joins
        except NotMeasured:
            pass  # rank 0 reports why, identically
        acceptance.measure(Scope("pairwise.busbw_gbps"), [])


def pairwise_check(blame, tolerance):
    from clusterbench.model import Check, Location, Provenance, Verdict

    return Check(
        metric="pairwise.busbw_gbps",
        params={},
        verdict=Verdict.FAIL if blame.slow else Verdict.PASS,
        observed=None,
        target=None,
        unit="GB/s",
        provenance=Provenance.PEERS.value,
        source=f"median of all node pairs, outlier_tolerance {tolerance:.0%}; second pass re-pairs suspects",
        message=blame.message,
        location=Location(host=blame.subject, rank=-1, device="link" if blame.is_link else "node"),
    )
