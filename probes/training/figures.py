"""The figures of a scaling run: step time, throughput, MFU, efficiency, cost, loss drop, consistency.

Plain data in (the training result of each group, the device peak and the price when known), plain
Measurements out; nothing here judges them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from clusterbench.model import Location, Measurement, ParamValue
from clusterbench.probes.stats import summarize
from clusterbench.probes.training.flops import mfu
from clusterbench.probes.training.loop import TrainingPlan, TrainingResult
from clusterbench.probes.training.scaling import (
    ScalePoint,
    cost_per_million_tokens,
    scaling_efficiency,
)

MISMATCH_METRIC = "train.params_mismatched"


@dataclass(frozen=True)
class Peak:
    """A device's dense peak for the training dtype, and the document it comes from."""

    tflops: float
    device: str
    source: str


@dataclass(frozen=True)
class Price:
    per_accelerator_hour: float
    currency: str


@dataclass(frozen=True)
class GroupRun:
    """One group size's training run and where its ranks are."""

    ranks: tuple[int, ...]
    span: str  # "single", "intra-node" or "inter-node"
    result: TrainingResult

    @property
    def size(self) -> int:
        return len(self.ranks)

    def tokens_per_step(self, plan: TrainingPlan) -> int:
        return self.size * plan.config.tokens_per_rank_step

    def tokens_per_s(self, plan: TrainingPlan) -> float:
        return self.tokens_per_step(plan) / self.result.median_step_s

    def point(self, plan: TrainingPlan) -> ScalePoint:
        return ScalePoint(self.size, self.span, self.tokens_per_s(plan))


def loss_drop(losses: list[float]) -> float:
    """Relative fall of the loss over the measured steps: the mean of the first fifth against the
    mean of the last fifth (at least one step each), so one noisy step does not decide it."""
    if len(losses) < 2:
        raise ValueError("a loss drop needs at least 2 losses")
    k = max(1, len(losses) // 5)
    first, last = statistics.fmean(losses[:k]), statistics.fmean(losses[-k:])
    return (first - last) / first


def mismatched_ranks(run: GroupRun) -> list[tuple[int, str]]:
    """(rank, first differing parameter) for each rank whose parameters differ from the group's first rank."""
    checksums = run.result.checksums or []
    reference = checksums[0] if checksums else None
    out = []
    for rank, checksum in zip(run.ranks, checksums):
        difference = reference.first_difference(checksum) if reference is not None else None
        if difference is not None:
            out.append((rank, difference))
    return out


def group_measurements(run: GroupRun, plan: TrainingPlan, base: GroupRun | None, location: Location,
                       peak: Peak | None, price: Price | None, rank_hosts: dict[int, str]) -> list[Measurement]:
    """Every figure of one group size. `base` is the smallest group, for the scaling efficiency;
    `rank_hosts` names each rank's host, so that a slow rank is reported where it ran."""
    result = run.result
    params: dict[str, ParamValue] = {"preset": plan.config.name, "ranks": run.size, "span": run.span,
                                     "dtype": plan.dtype, "batch": plan.config.batch,
                                     "seq_len": plan.config.seq_len, "parallel": plan.parallel}
    where = Location(location.host, location.rank, f"{run.size} ranks {run.span}")
    tokens_per_step = run.tokens_per_step(plan)
    step = summarize(result.step_s)
    tokens_per_s = run.tokens_per_s(plan)
    per_device = tokens_per_s / run.size
    exposed = result.exposed_communication_s
    timing = {
        "step_ms": _ms_summary(result.step_s),
        "data_ms": _ms_summary(result.data_s),
        "forward_backward_ms": _ms_summary(result.backward_s),
        "forward_backward_no_sync_ms": _ms_summary(result.local_backward_s) if result.local_backward_s else None,
        "exposed_communication_ms": None if exposed is None else exposed * 1e3,
        "compute_ms": None if exposed is None else (step.median - exposed) * 1e3,
        "split_not_measured": result.why_no_split,
        "rank_step_median_ms": {str(r): s * 1e3 for r, s in zip(run.ranks, result.rank_step_median_s)},
        "rank_hosts": {str(r): rank_hosts[r] for r in run.ranks if r in rank_hosts},
        "warmup_steps": plan.warmup,
        "peak_device_memory": peak_memory_details(result),
        # The ladder's parallelism names every size (one series in reports); one rank trains the bare model.
        "wrapped_as": result.parallel,
        "ranks": list(run.ranks),
    }
    flops = result.flops
    model = {"parameters": flops.parameters, "embedding_parameters": flops.embedding_parameters,
             "flops_per_token": flops.flops_per_token, "attention_flops_per_token": flops.attention_flops_per_token,
             "tokens_per_step": tokens_per_step, "tokens_per_s_per_device": per_device,
             # How the figure was obtained: the FLOP count above is the same whatever the scheme.
             "mixed_precision": result.precision, "fsdp_api": result.fsdp_api or "n/a (not sharded)"}
    figures = [
        Measurement("train.step_time_ms", step.median * 1e3, "ms", dict(params), where,
                    samples=[s * 1e3 for s in result.step_s], details={**timing, "p90_ms": step.p90 * 1e3, **model}),
        Measurement("train.tokens_per_s", tokens_per_s, "tokens/s", dict(params), where,
                    samples=[tokens_per_step / s for s in result.step_s],
                    details={**model, "step_ms": step.median * 1e3}),
        Measurement("train.loss_drop", loss_drop(result.losses), "fraction", dict(params), where,
                    samples=list(result.losses), details={"warmup_losses": result.warmup_losses,
                                                          "rule": "mean of the first fifth vs the last fifth"}),
    ]
    if peak is not None:
        figures.append(Measurement(
            "train.mfu", mfu(flops.flops_per_token, per_device, peak.tflops), "fraction", dict(params), where,
            samples=[mfu(flops.flops_per_token, tokens_per_step / s / run.size, peak.tflops) for s in result.step_s],
            details={**model, "peak_tflops": peak.tflops, "peak_device": peak.device, "peak_source": peak.source},
        ))
    if base is not None and run.size > base.size:
        efficiency = scaling_efficiency(run.point(plan), base.point(plan))
        figures.append(Measurement(
            "train.scaling_efficiency", efficiency, "fraction", dict(params), where,
            samples=[tokens_per_step / s / ((run.size / base.size) * base.tokens_per_s(plan)) for s in result.step_s],
            details={"tokens_per_s": tokens_per_s, "base_ranks": base.size,
                     "base_tokens_per_s": base.tokens_per_s(plan),
                     "formula": "X_N / ((N / N_base) * X_base)"},
        ))
    if price is not None:
        figures.append(Measurement(
            "train.cost_per_mtokens", cost_per_million_tokens(price.per_accelerator_hour, run.size, tokens_per_s),
            "cost/Mtokens", {**params, "currency": price.currency}, where,
            details={"price_per_accelerator_hour": price.per_accelerator_hour, "currency": price.currency,
                     "accelerators": run.size, "tokens_per_s": tokens_per_s},
        ))
    if result.checksums is not None and run.size > 1:
        mismatched = mismatched_ranks(run)
        figures.append(Measurement(
            MISMATCH_METRIC, float(len(mismatched)), "count", dict(params), where,
            details={"mismatched": {str(rank): name for rank, name in mismatched},
                     "parameters_compared": len(result.checksums[0].sums), "ranks_compared": list(run.ranks)},
        ))
    return figures


def peak_memory_details(result: TrainingResult) -> dict | str:
    """Each phase's peak device memory (the largest over the group's ranks), or why there is none."""
    if result.peak_memory is None:
        return "n/a (cpu): torch's peak memory counters are CUDA's caching allocator's"
    phases = {name: {"allocated_bytes": peak.allocated_bytes, "reserved_bytes": peak.reserved_bytes}
              for name, peak in result.peak_memory.items()}
    return {**phases, "how": "torch.cuda.max_memory_allocated / max_memory_reserved after reset_peak_memory_stats "
                             "at each phase's start; the largest over the group's ranks"}


def _ms_summary(seconds: list[float]) -> dict[str, float | list[float]]:
    summary = summarize(seconds)
    return {"median": summary.median * 1e3, "p90": summary.p90 * 1e3, "mean": summary.mean * 1e3,
            "samples": [s * 1e3 for s in seconds]}
