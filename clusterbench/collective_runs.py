"""Running the collective sweeps of an acceptance run, wherever its ranks come from.

Under a launcher (torchrun, srun, mpirun) every rank of the job sweeps together over the world's
process group. Under plain pytest on one host, the sweep starts its own local ranks (one per GPU;
on a CPU the profile's `local_ranks`) through torch's multiprocessing, with the profile's deadline.
Either way each op is swept once per run and the figures are reused by every test that needs them;
a sweep that failed is not retried either (clusterbench.measured_once): its failure is raised again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta

from clusterbench.measured_once import MeasuredOnce, MeasuredOnceByKey
from clusterbench.model import Location, Measurement, NotMeasured
from clusterbench.pairwise import Blame, Pair, PairResult, blame, first_pass_pairs, second_pass_pairs
from clusterbench.probes.collectives import COLLECTIVES, CollectiveSweep, size_sweep, sweep_collective

MiB = 1 << 20
PAIRWISE_METRIC = "pairwise.busbw_gbps"
SCALING_METRIC = "scaling.allreduce_busbw_gbps"
SWEEP_DEADLINES = 3


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


def sweep_plan(*, on_gpu: bool, quick: bool, timeout_s: float) -> SweepPlan:
    if on_gpu:
        low, high, factor = (16 * MiB, 1024 * MiB, 4) if quick else (1 * MiB, 4096 * MiB, 2)
        return SweepPlan(tuple(size_sweep(low, high, factor)), "bf16", 5, 20, timeout_s, repeats=5 if quick else 10)
    # Gloo over TCP moves ~1 GB/s: sizes that finish in seconds on a CPU runner.
    low, high, factor = (1 * MiB, 16 * MiB, 4) if quick else (64 * 1024, 64 * MiB, 4)
    return SweepPlan(tuple(size_sweep(low, high, factor)), "fp32", 2 if quick else 5, 5 if quick else 10, timeout_s,
                     repeats=3 if quick else 5)


def _step_callback(op: str, inplace: bool):
    """The progress callback for one mode's sweep, where this process shows progress: rank 0 of a
    launcher's world (the plugin installed a reporter) or local rank 0 (it forwards each step to the
    pytest process that started it); None elsewhere."""
    from clusterbench import progress

    return progress.callback_for(f"{op} {'in-place' if inplace else 'out-of-place'}")


def _sweep_all_modes(op: str, plan: SweepPlan, location: Location, backend: str) -> list[CollectiveSweep]:
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    return [
        sweep_collective(
            op,
            sizes=plan.sizes,
            dtype=plan.dtype,
            device=device,
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


def _local_rank_worker(rank: int, world_size: int, op: str, plan: SweepPlan, location: Location, backend: str):
    # run_local_ranks has set this rank's CUDA device (NCCL) before calling it.
    return _sweep_all_modes(op, plan, location, backend)


@dataclass(frozen=True)
class ScalingGroup:
    """A group of ranks the all_reduce is swept on, to show how busbw changes with scale."""

    ranks: tuple[int, ...]
    span: str  # "intra-node" when every member shares a host, else "inter-node"


def scaling_groups(hosts: dict[int, str]) -> list[ScalingGroup]:
    """Groups of 2, 4, 8, ... ranks up to the world; then one node's ranks alone, and one rank per
    node alone, so intra-node and inter-node bandwidth are shown apart."""
    world = sorted(hosts)
    sizes = [2 ** i for i in range(1, len(world).bit_length()) if 2 ** i < len(world)] + [len(world)]
    candidates = [tuple(world[:k]) for k in sizes if k >= 2]
    candidates.append(tuple(r for r in world if hosts[r] == hosts[world[0]]))
    candidates.append(tuple({hosts[r]: r for r in reversed(world)}[h] for h in dict.fromkeys(hosts[r] for r in world)))
    groups: list[ScalingGroup] = []
    for ranks in candidates:
        if len(ranks) >= 2 and ranks not in [g.ranks for g in groups]:
            span = "intra-node" if len({hosts[r] for r in ranks}) == 1 else "inter-node"
            groups.append(ScalingGroup(tuple(ranks), span))
    return groups


def _sweep_scaling(plan: SweepPlan, hosts: dict[int, str], location: Location, backend: str) -> list[Measurement]:
    """all_reduce at the plan's largest size on every scaling group; members only, others wait."""
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    measurements: list[Measurement] = []
    for group in scaling_groups(hosts):
        # every rank creates every group, in order; with the plan's deadline, since torch's default
        # (30 minutes for Gloo) would hang the survivors of a dead rank for that long
        process_group = dist.new_group(list(group.ranks), timeout=timedelta(seconds=plan.timeout_s))
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


def _local_scaling_worker(rank: int, world_size: int, plan: SweepPlan, host: str, location: Location, backend: str):
    return _sweep_scaling(plan, {r: host for r in range(world_size)}, location, backend)


def _measure_pairs(pairs: list[Pair], leaders: dict[str, int], round_: int, plan: SweepPlan, backend: str,
                   location: Location) -> tuple[list[PairResult], list[Measurement]]:
    """send/recv between the leader ranks of each pair, one pair at a time; every rank learns all."""
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    local: list[Measurement] = []
    for a, b in pairs:
        members = [leaders[a], leaders[b]]
        process_group = dist.new_group(members, timeout=timedelta(seconds=plan.timeout_s))  # by every rank, in order
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
class CollectiveRuns:
    """The sweeps of one acceptance run, by op, measured on first use; a failure is remembered too, so
    the next test that needs the same figures fails at once instead of waiting out the deadline again."""

    distributed: bool  # True under a launcher: the world's process group is already up
    backend: str
    ranks: int
    plan: SweepPlan
    location: Location
    hosts: dict[int, str]  # rank -> host, for the intra/inter-node split
    _sweeps: MeasuredOnceByKey[str, list[CollectiveSweep]] = field(default_factory=MeasuredOnceByKey)
    _scaling: MeasuredOnce[list[Measurement]] = field(default_factory=MeasuredOnce)
    _pairwise: MeasuredOnceByKey[float, tuple[list[Measurement], list[Blame]]] = field(
        default_factory=MeasuredOnceByKey)

    def sweeps(self, op: str) -> list[CollectiveSweep]:
        """Every mode of `op` swept over the plan's sizes (measured by the first caller)."""
        return self._sweeps.get(op, lambda: self._measure(op))

    def _measure(self, op: str) -> list[CollectiveSweep]:
        if self.ranks < 2:
            raise NotMeasured(f"{op} needs at least 2 ranks; this run has {self.ranks}")
        if self.distributed:
            return _sweep_all_modes(op, self.plan, self.location, self.backend)
        from clusterbench.probes.local_ranks import run_local_ranks

        results = run_local_ranks(
            _local_rank_worker,
            self.ranks,
            args=(op, self.plan, self.location, self.backend),
            backend=self.backend,
            # Each collective must finish within the deadline; the whole sweep gets a few of them.
            timeout=SWEEP_DEADLINES * self.plan.timeout_s,
            collective_timeout=self.plan.timeout_s,
        )
        return results[0]

    def scaling(self) -> list[Measurement]:
        """all_reduce busbw of each scaling group. Every group includes rank 0 (scaling_groups builds
        them so), hence rank 0 holds all the figures and reports them."""
        return self._scaling.get(self._measure_scaling)

    def _measure_scaling(self) -> list[Measurement]:
        if self.ranks < 2:
            raise NotMeasured(f"scaling needs at least 2 ranks; this run has {self.ranks}")
        if self.distributed:
            return _sweep_scaling(self.plan, self.hosts, self.location, self.backend)
        from clusterbench.probes.local_ranks import run_local_ranks

        results = run_local_ranks(
            _local_scaling_worker,
            self.ranks,
            args=(self.plan, self.location.host, self.location, self.backend),
            backend=self.backend,
            timeout=SWEEP_DEADLINES * self.plan.timeout_s,
            collective_timeout=self.plan.timeout_s,
        )
        return results[0]

    def pairwise(self, tolerance: float) -> tuple[list[Measurement], list[Blame]]:
        """The pairwise node test over the launcher's nodes (one leader rank per node)."""
        return self._pairwise.get(tolerance, lambda: self._measure_pairwise(tolerance))

    def _measure_pairwise(self, tolerance: float) -> tuple[list[Measurement], list[Blame]]:
        nodes = list(dict.fromkeys(self.hosts[r] for r in sorted(self.hosts)))
        if not self.distributed or len(nodes) < 2:
            raise NotMeasured(f"the pairwise node test needs ranks on at least 2 nodes; this run has {len(nodes)} ({', '.join(nodes)})")
        leaders = {host: min(r for r in self.hosts if self.hosts[r] == host) for host in nodes}
        first, measured = _measure_pairs(first_pass_pairs(nodes), leaders, 1, self.plan, self.backend, self.location)
        second, remeasured = _measure_pairs(second_pass_pairs(first, tolerance), leaders, 2, self.plan, self.backend,
                                            self.location)
        return measured + remeasured, blame(first, second, tolerance)
