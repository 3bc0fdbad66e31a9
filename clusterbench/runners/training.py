"""Running the training probe of an acceptance run: weak scaling over the world, or over local ranks.

The same per-rank batch trains at group sizes 1, 2, 4, ... up to the world, then on one node's ranks
alone and on one rank per node alone (groups.scaling_groups), so that intra-node and inter-node
scaling show apart. Every group trains a fresh model from the same seed; ranks outside a group wait at
a barrier. Under a launcher the groups are carved out of the world's process group; under plain pytest
the run starts its own local ranks (one per GPU; on a CPU the profile's `local_ranks`), as
WorldRunner.on_every_rank decides. Either way the scaling run happens once per session and every
training test reads its figures, which rank 0 holds (every group includes rank 0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clusterbench.model import Measurement, NotMeasured
from clusterbench.probes.training.figures import GroupRun, Peak, Price, group_measurements
from clusterbench.probes.training.presets import PRESETS
from clusterbench.probes.training.scaling import largest_efficient_scale, scaling_efficiency
from clusterbench.runners.devices import rank_device
from clusterbench.runners.groups import ScalingGroup, scaling_groups, subgroup
from clusterbench.runners.runner import WorldRunner

if TYPE_CHECKING:
    from clusterbench.probes.training.loop import TrainingPlan

EFFICIENCY_METRIC = "train.scaling_efficiency"
# What `training_preset = "auto"` trains: a toy on a CPU, GPT-2 small for a quick GPU run, ~1 B otherwise.
AUTO_PRESET = {"cpu": "tiny", "gpu-quick": "small", "gpu": "1b"}


def training_ladder(hosts: dict[int, str]) -> list[ScalingGroup]:
    """Rank 0 alone (the base of the efficiency), then the collective scaling groups."""
    return [ScalingGroup((min(hosts),), "single"), *scaling_groups(hosts)]


def training_plan(preset: str, parallel: str, *, on_gpu: bool, quick: bool):
    from clusterbench.probes.training.loop import TrainingPlan

    if preset == "auto":
        preset = AUTO_PRESET["cpu" if not on_gpu else "gpu-quick" if quick else "gpu"]
    config = PRESETS[preset]
    if on_gpu:
        warmup, steps = (5, 20) if quick else (10, 50)
    else:
        warmup, steps = (3, 10) if quick else (5, 30)
    return TrainingPlan(config, "bf16" if on_gpu else "fp32", warmup, steps, parallel, split_steps=max(3, steps // 2))


def _run_ladder(plan, hosts: dict[int, str], backend: str, timeout_s: float,
                corrupt_rank: int | None) -> list[GroupRun]:
    """Train every group of the ladder; every rank takes part in each group it belongs to. Returns
    this rank's view of its groups (rank 0: all of them)."""
    import torch.distributed as dist

    from clusterbench import progress
    from clusterbench.probes.training.loop import threads, train

    rank = dist.get_rank()
    here = hosts.get(rank)
    device = rank_device(backend)
    runs = []
    ladder = training_ladder(hosts)
    on_step = progress.callback_for("training ladder") if rank == 0 else None
    with threads(_cpu_threads(backend, sum(1 for host in hosts.values() if host == here))):
        for done, members in enumerate(ladder, start=1):
            # Every rank makes every group, in the same order, as torch.distributed requires.
            group = subgroup(members.ranks, timeout_s) if len(members.ranks) > 1 else None
            if rank in members.ranks:
                result = train(plan, device, group, rank_in_group=members.ranks.index(rank), corrupt_rank=corrupt_rank)
                runs.append(GroupRun(members.ranks, members.span, result))
            dist.barrier()  # the others wait here until the group is done
            if on_step is not None:
                on_step(done, len(ladder), f"{len(members.ranks)} ranks {members.span}")
    return runs


def _cpu_threads(backend: str, ranks_on_this_host: int) -> int:
    """Ranks sharing a CPU split its cores, as they would split a node's GPUs; ranks with a GPU each
    keep every core for their host-side work."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // ranks_on_this_host) if backend == "gloo" else cores


@dataclass
class TrainingRuns(WorldRunner):
    """The scaling run of one acceptance run, measured on first use."""

    plan: TrainingPlan  # imported for type checking only: probes.training.loop needs torch
    timeout_s: float
    peak: Peak | None
    why_no_peak: str
    price: Price | None
    efficiency_floor: float | None = None  # from the profile's expectation, for "largest scale"
    floor_source: str = ""
    corrupt_rank: int | None = None  # the toolkit's own tests only: a rank that corrupts its weights

    def runs(self) -> list[GroupRun]:
        """The groups' results, trained on first use. A failed run is not retried by the next test:
        under a launcher a dead rank would make every retry wait out the deadline again."""
        return self.measured_once("runs", self._measure)

    def _measure(self) -> list[GroupRun]:
        if self.plan.parallel == "fsdp" and self.ranks > 1:
            from clusterbench.probes.training.fsdp import find_fsdp2

            # Before any rank trains: a torch without FSDP2 is NOT MEASURED on every rank alike, rather
            # than a crash inside the first sharded group with its peers waiting in a collective.
            find_fsdp2()
        return self.on_every_rank(_run_ladder, self.plan, self.rank_hosts, self.backend, self.timeout_s,
                                  self.corrupt_rank, deadline_s=self.timeout_s)

    def measurements(self) -> list[Measurement]:
        """Every figure of every group (rank 0's full set; other ranks' groups only)."""
        return self.measured_once("measurements", self._figures_of_runs)

    def _figures_of_runs(self) -> list[Measurement]:
        runs = self.runs()
        base = min(runs, key=lambda r: r.size)
        measurements = [m for run in runs for m in group_measurements(run, self.plan, base, self.location, self.peak,
                                                                       self.price, self.rank_hosts)]
        largest = self.largest_efficient_ranks()
        for m in measurements:
            if m.metric == EFFICIENCY_METRIC:
                m.details.update(efficiency_floor=self.efficiency_floor, floor_source=self.floor_source,
                                 largest_efficient_ranks=largest)
        return measurements

    def figures(self, metric: str) -> list[Measurement]:
        measurements = self.measurements()  # first: every rank trains, whichever figure is asked for
        if metric == "train.mfu" and self.peak is None:
            raise NotMeasured(self.why_no_peak)
        if metric == "train.cost_per_mtokens" and self.price is None:
            raise NotMeasured("the profile states no [cluster] price_per_accelerator_hour")
        if metric == EFFICIENCY_METRIC and self.ranks < 2:
            raise NotMeasured(f"scaling needs at least 2 ranks; this run has {self.ranks}")
        found = [m for m in measurements if m.metric == metric]
        if not found and metric == "train.params_mismatched":
            runs = self.runs()
            why = next((r.result.why_no_checksum for r in runs if r.result.why_no_checksum), "")
            raise NotMeasured(why or f"parameters are compared across ranks only; this run has {self.ranks}")
        return found

    def ladder_efficiencies(self) -> dict[int, float]:
        """Efficiency by rank count along the ladder 1, 2, 4, ..., world (the first ranks of the
        world; not the node-local or one-rank-per-node extras); 1.0 at its base."""
        world = tuple(sorted(self.hosts))
        ladder = [run for run in self.runs() if run.ranks == world[:run.size]]
        base = min(ladder, key=lambda run: run.size)
        return {run.size: scaling_efficiency(run.point(self.plan), base.point(self.plan)) for run in ladder}

    def largest_efficient_ranks(self) -> int | None:
        if self.efficiency_floor is None:
            return None
        return largest_efficient_scale(self.ladder_efficiencies(), self.efficiency_floor)

    def footer(self) -> list[str]:
        """The lines under the table: the floor and the largest scale that meets it."""
        lines = []
        if self.peak is None:
            lines.append(f"MFU not reported: {self.why_no_peak}")
        else:
            lines.append(f"MFU against {self.peak.tflops:g} TFLOP/s dense {self.plan.dtype} "
                         f"({self.peak.device}; {self.peak.source})")
        if self.price is not None:
            lines.append(f"cost at {self.price.per_accelerator_hour:g} {self.price.currency} per accelerator-hour")
        if self.efficiency_floor is None:
            lines.append("no scaling efficiency expectation in the profile: no floor to meet")
        else:
            largest = self.largest_efficient_ranks()
            verdict = (f"{largest} rank{'s' if largest != 1 else ''}" if largest is not None
                       else "none (the smallest size already misses it)")
            lines.append(f"largest scale meeting the efficiency floor {self.efficiency_floor:.3f} "
                         f"({self.floor_source}): {verdict}")
        return lines


def device_peak(devices: list, dtype: str) -> tuple[Peak | None, str]:
    """The dense peak of the run's accelerator for `dtype` from the hardware table, or why there is none."""
    from clusterbench.hardware import match_accelerator, mig_profile

    if not devices or devices[0].kind == "cpu":
        name = devices[0].name if devices else "this host"
        return None, f"no accelerator ({name}): the hardware table states no peak for a CPU, so MFU is not reported"
    name = devices[0].name
    slice_profile = mig_profile(name)
    if slice_profile is not None:
        # A slice has a fraction of the GPU's SMs; the whole GPU's peak would understate its MFU.
        return None, (f"'{name}' is a MIG slice ({slice_profile}): the table's peaks are whole GPUs', "
                      "so MFU is not reported")
    spec = match_accelerator(name)
    if spec is None:
        return None, f"'{name}' is not in the hardware table: its peak is unknown, so MFU is not reported"
    figure = spec.peak_tflops.get(dtype)
    if figure is None:
        return None, f"the hardware table states no dense {dtype} peak for {spec.name}: MFU is not reported"
    return Peak(figure.value, spec.name, figure.citation), ""


def training_runs(profile, collectives, devices: list, quick: bool) -> TrainingRuns:
    """The scaling run for an acceptance run, on the same ranks and backend as its collectives."""
    on_gpu = bool(devices) and devices[0].kind != "cpu"
    settings = profile.settings
    plan = training_plan(settings.training_preset, settings.training_parallel, on_gpu=on_gpu, quick=quick)
    peak, why_no_peak = device_peak(devices, plan.dtype)
    cluster = profile.cluster
    price = Price(cluster.price_per_accelerator_hour, cluster.currency) if cluster.price_per_accelerator_hour else None
    ladder_params = {"preset": plan.config.name, "dtype": plan.dtype, "batch": plan.config.batch,
                     "seq_len": plan.config.seq_len, "parallel": plan.parallel}
    floors = [e for e in profile.expectations_for(EFFICIENCY_METRIC, ladder_params) if "ranks" not in e.params]
    return TrainingRuns(
        distributed=collectives.distributed,
        backend=collectives.backend,
        ranks=collectives.ranks,
        plan=plan,
        location=collectives.location,
        hosts=collectives.hosts,
        timeout_s=profile.settings.collective_timeout_s,
        peak=peak,
        why_no_peak=why_no_peak,
        price=price,
        efficiency_floor=floors[0].fail_threshold if floors else None,
        floor_source=(f"target {floors[0].target:g} - tolerance {floors[0].tolerance:.0%}, "
                      f"{floors[0].provenance.value}: {floors[0].source}") if floors else "",
    )

