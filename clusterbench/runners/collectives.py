"""Running the collective sweeps of an acceptance run, wherever its ranks come from.

Under a launcher (torchrun, srun, mpirun) every rank of the job sweeps together over the world's
process group. Under plain pytest on one host, the sweep starts its own local ranks (one per GPU;
on a CPU the profile's `local_ranks`) through torch's multiprocessing, with the profile's deadline
(WorldRunner.on_every_rank). Either way each op is swept once per run and the figures are reused by
every test that needs them; a sweep that failed is not retried either: its failure is raised again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from clusterbench.judge.node_pairs import Blame, PairResult, blame, second_pass_pairs
from clusterbench.model import Location, Measurement, NotMeasured
from clusterbench.probes.collective_ops import COLLECTIVES
from clusterbench.probes.collectives import CollectiveSweep, size_sweep, sweep_collective
from clusterbench.runners.devices import rank_device
from clusterbench.runners.groups import Pair, first_pass_pairs, node_leaders, scaling_groups, subgroup
from clusterbench.runners.runner import WorldRunner

MiB = 1 << 20
PAIRWISE_METRIC = "pairwise.busbw_gbps"
SCALING_METRIC = "scaling.allreduce_busbw_gbps"


@dataclass(frozen=True)
class SweepPlan:
    """Sizes and timing of a sweep; nccl-tests' -b/-e/-f/-n/-w in other words, and how many times the
    n back-to-back ops are repeated (one sample each; the figure is their median)."""

    sizes: tuple[int, ...]
    dtype: str
    warmup: int
    iterations: int
    timeout_s: float
    repeats: int = 5


SMALLEST_BYTES = 8  # nccl-tests' -b 8: the time column at the smallest sizes is the collective's latency
# --quick climbs from the smallest size in x8 steps (8 B, 64 B, 512 B, ...): the 8 B latency for 6 sizes
# below the CPU's 1 MiB instead of doubling's 17, which would cost Gloo's quick sweeps 3x as long there.
QUICK_LATENCY_FACTOR = 8


def _plan_sizes(low: int, high: int, factor: int, *, quick: bool) -> tuple[int, ...]:
    """The latency ladder from SMALLEST_BYTES up to the bandwidth sweep's first size `low` (doubling,
    as nccl-tests -b 8 -f 2; x8 steps in --quick), then the bandwidth sweep `low`..`high` by `factor`."""
    latency_factor = QUICK_LATENCY_FACTOR if quick else 2
    latency = [size for size in size_sweep(SMALLEST_BYTES, low, latency_factor) if size < low]
    return (*latency, *size_sweep(low, high, factor))


def sweep_plan(*, on_gpu: bool, quick: bool, timeout_s: float) -> SweepPlan:
    if on_gpu:  # full: 8 B..4 GiB doubling, nccl-tests' -b 8 -e 4G -f 2
        low, high, factor = (16 * MiB, 1024 * MiB, 4) if quick else (1 * MiB, 4096 * MiB, 2)
        return SweepPlan(_plan_sizes(low, high, factor, quick=quick), "bf16", 5, 20, timeout_s,
                         repeats=5 if quick else 10)
    # Gloo over TCP moves ~1 GB/s: bandwidth sizes that finish in seconds on a CPU runner, x4 apart.
    low, high, factor = (1 * MiB, 16 * MiB, 4) if quick else (64 * 1024, 64 * MiB, 4)
    return SweepPlan(_plan_sizes(low, high, factor, quick=quick), "fp32", 2 if quick else 5, 5 if quick else 10,
                     timeout_s, repeats=3 if quick else 5)


def _step_callback(op: str, inplace: bool):
    """The progress callback for one mode's sweep, where this process shows progress: rank 0 of a
    launcher's world (the plugin installed a reporter) or local rank 0 (it forwards each step to the
    pytest process that started it); None elsewhere."""
    from clusterbench import progress

    return progress.callback_for(f"{op} {'in-place' if inplace else 'out-of-place'}")


def _sweep_all_modes(op: str, plan: SweepPlan, location: Location, backend: str) -> list[CollectiveSweep]:
    import torch.distributed as dist

    return [
        sweep_collective(
            op,
            sizes=plan.sizes,
            dtype=plan.dtype,
            device=rank_device(backend),
            location=location,
            inplace=inplace,
            warmup=plan.warmup,
            iterations=plan.iterations,
            repeats=plan.repeats,
            backend=backend,
            timeout=plan.timeout_s,
            on_step=_step_callback(op, inplace),
        )
        for inplace in COLLECTIVES[op].inplace_modes
        if dist.get_world_size() > 1
    ]


def _sweep_scaling(plan: SweepPlan, hosts: dict[int, str], location: Location, backend: str) -> list[Measurement]:
    """all_reduce at the plan's largest size on every scaling group; members only, others wait."""
    import torch.distributed as dist

    device = rank_device(backend)
    measurements: list[Measurement] = []
    for group in scaling_groups(hosts):
        process_group = subgroup(group.ranks, plan.timeout_s)  # every rank makes every group, in order
        if dist.get_rank() not in group.ranks:
            continue
        sweep = sweep_collective(
            "all_reduce", sizes=plan.sizes[-1:], dtype=plan.dtype, device=device, group=process_group,
            location=replace(location, device=f"{len(group.ranks)} ranks {group.span}"), inplace=True,
            warmup=plan.warmup, iterations=plan.iterations, repeats=plan.repeats, backend=backend,
            timeout=plan.timeout_s,
        )
        for m in sweep.measurements():
            if m.metric == "allreduce.busbw_gbps":
                measurements.append(replace(m, metric=SCALING_METRIC, params={**m.params, "span": group.span}))
    return measurements


def _measure_pairs(pairs: list[Pair], leaders: dict[str, int], round_: int, plan: SweepPlan, backend: str,
                   location: Location) -> tuple[list[PairResult], list[Measurement]]:
    """send/recv between the leader ranks of each pair, one pair at a time; every rank learns all."""
    import torch.distributed as dist

    device = rank_device(backend)
    local: list[Measurement] = []
    for a, b in pairs:
        members = [leaders[a], leaders[b]]
        process_group = subgroup(members, plan.timeout_s)  # by every rank, in order
        if dist.get_rank() not in members:
            continue
        where = Location(host=a, rank=leaders[a], device=f"link {a}<->{b}")
        sweep = sweep_collective(
            "sendrecv", sizes=plan.sizes[-1:], dtype=plan.dtype, device=device, group=process_group, location=where,
            inplace=False, warmup=plan.warmup, iterations=plan.iterations, repeats=plan.repeats, backend=backend,
            timeout=plan.timeout_s,
        )
        if dist.get_rank() == leaders[a]:
            for m in sweep.measurements():
                if m.metric == "sendrecv.busbw_gbps":
                    params = {k: v for k, v in m.params.items() if k in ("size_bytes", "dtype", "backend")}
                    local.append(replace(m, metric=PAIRWISE_METRIC, params={**params, "round": round_},
                                         details={**m.details, "pair": [a, b]}))
    gathered: list[list[dict]] = [[] for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, [m.to_json() for m in local])
    measurements = [Measurement.from_json(m) for per_rank in gathered for m in per_rank]
    results = [PairResult(tuple(m.details["pair"]), m.value, round_) for m in measurements]
    return results, measurements


@dataclass
class CollectiveRuns(WorldRunner):
    """The sweeps of one acceptance run, by op, measured on first use; a failure is remembered too, so
    the next test that needs the same figures fails at once instead of waiting out the deadline again."""

    plan: SweepPlan

    def sweeps(self, op: str) -> list[CollectiveSweep]:
        """Every mode of `op` swept over the plan's sizes (measured by the first caller)."""
        return self.measured_once(("sweeps", op), lambda: self._measure(op))

    def _measure(self, op: str) -> list[CollectiveSweep]:
        if self.ranks < 2:
            raise NotMeasured(f"{op} needs at least 2 ranks; this run has {self.ranks}")
        return self.on_every_rank(_sweep_all_modes, op, self.plan, self.location, self.backend,
                                  deadline_s=self.plan.timeout_s)

    def scaling(self) -> list[Measurement]:
        """all_reduce busbw of each scaling group. Every group includes rank 0 (scaling_groups builds
        them so), hence rank 0 holds all the figures and reports them."""
        return self.measured_once("scaling", self._measure_scaling)

    def _measure_scaling(self) -> list[Measurement]:
        if self.ranks < 2:
            raise NotMeasured(f"scaling needs at least 2 ranks; this run has {self.ranks}")
        return self.on_every_rank(_sweep_scaling, self.plan, self.rank_hosts, self.location, self.backend,
                                  deadline_s=self.plan.timeout_s)

    def pairwise(self, tolerance: float) -> tuple[list[Measurement], list[Blame]]:
        """The pairwise node test over the launcher's nodes (one leader rank per node)."""
        return self.measured_once(("pairwise", tolerance), lambda: self._measure_pairwise(tolerance))

    def _measure_pairwise(self, tolerance: float) -> tuple[list[Measurement], list[Blame]]:
        leaders = node_leaders(self.hosts)
        nodes = list(leaders)
        if not self.distributed or len(nodes) < 2:
            raise NotMeasured(f"the pairwise node test needs ranks on at least 2 nodes; this run has {len(nodes)} "
                              f"({', '.join(nodes)})")
        first, measured = _measure_pairs(first_pass_pairs(nodes), leaders, 1, self.plan, self.backend, self.location)
        second, remeasured = _measure_pairs(second_pass_pairs(first, tolerance), leaders, 2, self.plan, self.backend,
                                            self.location)
        return measured + remeasured, blame(first, second, tolerance)
