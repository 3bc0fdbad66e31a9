"""Running the collective sweeps of an acceptance run, wherever its ranks come from.

Under a launcher (torchrun, srun, mpirun) every rank of the job sweeps together over the world's
process group. Under plain pytest on one host, the sweep starts its own local ranks (one per GPU;
on a CPU the profile's `local_ranks`) through torch's multiprocessing, with the profile's deadline.
Either way each op is swept once per run and the figures are reused by every test that needs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterbench.model import Location, NotMeasured
from clusterbench.probes.collectives import COLLECTIVES, CollectiveSweep, size_sweep, sweep_collective

MiB = 1 << 20
SWEEP_DEADLINES = 3


@dataclass(frozen=True)
class SweepPlan:
    """Sizes and timing of a sweep; nccl-tests' -b/-e/-f/-n/-w in other words."""

    sizes: tuple[int, ...]
    dtype: str
    warmup: int
    iterations: int
    timeout_s: float


def sweep_plan(*, on_gpu: bool, quick: bool, timeout_s: float) -> SweepPlan:
    if on_gpu:
        low, high, factor = (16 * MiB, 1024 * MiB, 4) if quick else (1 * MiB, 4096 * MiB, 2)
        return SweepPlan(tuple(size_sweep(low, high, factor)), "bf16", 5, 20 if quick else 50, timeout_s)
    # Gloo over TCP moves ~1 GB/s: sizes that finish in seconds on a CPU runner.
    low, high, factor = (1 * MiB, 16 * MiB, 4) if quick else (64 * 1024, 64 * MiB, 4)
    return SweepPlan(tuple(size_sweep(low, high, factor)), "fp32", 2 if quick else 5, 5 if quick else 20, timeout_s)


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
            backend=backend,
            timeout=plan.timeout_s,
        )
        for inplace in COLLECTIVES[op].inplace_modes
        if dist.get_world_size() > 1
    ]


def _local_rank_worker(rank: int, world_size: int, op: str, plan: SweepPlan, location: Location, backend: str):
    if backend == "nccl":
        import torch

        torch.cuda.set_device(rank)
    return _sweep_all_modes(op, plan, location, backend)


@dataclass
class CollectiveRuns:
    """The sweeps of one acceptance run, by op, measured on first use."""

    distributed: bool  # True under a launcher: the world's process group is already up
    backend: str
    ranks: int
    plan: SweepPlan
    location: Location
    _sweeps: dict[str, list[CollectiveSweep]] | None = None

    def sweeps(self, op: str) -> list[CollectiveSweep]:
        if self._sweeps is None:
            self._sweeps = {}
        if op not in self._sweeps:
            self._sweeps[op] = self._measure(op)
        return self._sweeps[op]

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
