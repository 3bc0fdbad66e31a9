"""Train the model for real on one group of ranks and time every step as the reference tools do.

- Warm-up steps run first and are not timed (the first steps allocate memory, pick kernels, and on
  GPUs autotune).
- Each measured step is bracketed by marks: on a GPU CUDA events on the current stream, read after
  one synchronisation at the end (so timing adds no host-device round trip to the step); on a CPU
  the host clock, since CPU ops return when their work is done.
- Data generation (synthetic tokens made on the device) is timed apart from the step.
- Across ranks, each step's time is the slowest rank's (SuperBench all-reduces step times with MAX;
  data parallel ranks wait for each other in the gradient all-reduce anyway).
- With DDP, a second phase runs forward and backward without gradient synchronisation (no_sync) and
  without the optimizer step, so the weights do not change: the difference between the backward
  phase with and without the all-reduce is the communication the step could not hide behind
  compute (exposed communication).
- After the measured steps every rank checksums its parameters; the checksums travel to every
  member, to be compared by whoever judges them.
- On a GPU each phase's peak device memory is recorded (the caching allocator's peak counters, reset
  as the phase starts), and when the run ends, however it ends, nothing of it stays on the device.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.distributed as dist

from clusterbench.probes.training.checksum import ParameterChecksum, parameter_checksum
from clusterbench.probes.training.flops import FlopCount, model_flops
from clusterbench.probes.training.fsdp import find_fsdp2, sharding_precision
from clusterbench.probes.training.model import GPT, ModelConfig, build_model, synthetic_batch

PARALLEL_MODES = ("ddp", "fsdp")
TRAINING_DTYPES = ("bf16", "fp32")


@dataclass(frozen=True)
class TrainingPlan:
    config: ModelConfig
    dtype: str  # "bf16": bf16 autocast over fp32 weights (GPUs); "fp32": plain fp32 (CPUs)
    warmup: int
    steps: int
    parallel: str = "ddp"
    seed: int = 20240501
    split_steps: int = 0  # forward+backward steps without gradient sync, for the exposed-communication split

    def __post_init__(self) -> None:
        if self.steps < 2:
            raise ValueError(f"a training run needs at least 2 measured steps, got {self.steps}")
        if self.dtype not in TRAINING_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(TRAINING_DTYPES)}, got {self.dtype!r}")
        if self.parallel not in PARALLEL_MODES:
            raise ValueError(f"parallel must be one of {', '.join(PARALLEL_MODES)}, got {self.parallel!r}")


@dataclass
class TrainingResult:
    """One group's training run, the same on every member of the group."""

    ranks: int
    parallel: str
    step_s: list[float]  # per measured step, the slowest rank's step time
    data_s: list[float]  # per measured step, the slowest rank's data generation time
    backward_s: list[float]  # per measured step, the slowest rank's forward+backward (gradient sync included)
    losses: list[float]  # per measured step, the loss averaged over the ranks
    warmup_losses: list[float]
    rank_step_median_s: list[float]  # each rank's own median step time, by rank in the group
    local_backward_s: list[float] | None  # forward+backward without gradient sync; None where not measured
    checksums: list[ParameterChecksum] | None  # by rank in the group; None where replicas are sharded
    flops: FlopCount
    why_no_split: str = ""
    why_no_checksum: str = ""
    precision: str = ""  # the mixed-precision scheme the group trained with, in words
    fsdp_api: str = ""  # where FSDP2's fully_shard came from; "" where the group is not sharded
    peak_memory: dict[str, MemoryPeak] | None = None  # by phase, the group's largest; None off CUDA
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_step_s(self) -> float:
        return statistics.median(self.step_s)

    @property
    def exposed_communication_s(self) -> float | None:
        """Median forward+backward with the all-reduce minus without it; 0 on one rank (nothing to
        communicate); None where not measured. Clipped at 0: a negative difference is noise."""
        if self.ranks == 1:
            return 0.0
        if not self.local_backward_s:
            return None
        return max(0.0, statistics.median(self.backward_s) - statistics.median(self.local_backward_s))


class Marks:
    """Points in time on the device's timeline: CUDA events on a GPU, the host clock on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.points: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.points.append(event)
        else:
            self.points.append(time.perf_counter())

    def intervals(self, per_round: int) -> list[list[float]]:
        """Seconds between consecutive marks, grouped by round of `per_round` + 1 marks."""
        if self.cuda:
            torch.cuda.synchronize()
        stride = per_round + 1
        rounds = [self.points[i:i + stride] for i in range(0, len(self.points), stride)]
        return [[self._seconds(r[k], r[k + 1]) for k in range(per_round)] for r in rounds]

    def _seconds(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end) / 1e3 if self.cuda else end - start  # elapsed_time is in ms


@dataclass(frozen=True)
class MemoryPeak:
    """The most device memory one phase held: allocated to tensors, and reserved by torch's caching allocator."""

    allocated_bytes: int
    reserved_bytes: int


class PhaseMemory:
    """Peak device memory by phase of a run, from the CUDA caching allocator's peak counters (reset as
    each phase starts, so a phase's peak is its own). They are host-side counters: reading them adds
    no synchronisation. Off CUDA there is nothing to read and `peaks` stays empty."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.peaks: dict[str, MemoryPeak] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        yield
        if self.cuda:
            self.peaks[name] = MemoryPeak(int(torch.cuda.max_memory_allocated(self.device)),
                                          int(torch.cuda.max_memory_reserved(self.device)))


def release_device_memory(device: torch.device) -> None:
    """Free what a finished run left: collect reference cycles, then hand the allocator's cached
    blocks back to the driver, so that the next group (or the next probe) starts from an empty device.

    The collection is needed: torch's own lazy `import torch._dynamo`, which the first optimizer of a
    process triggers, runs torch.fx's `wrap()`, whose frame keeps itself alive through
    `inspect.currentframe()`; its chain of callers' frames reaches `train`'s and keeps the first
    run's model, optimizer and gradients until the garbage collector happens to run, which with few
    Python objects allocated can be never (~13-18 GB per GPU with the 1b preset)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class Wrapping:
    """How one group trains its model: the wrapper, and the precision scheme in words for the figures."""

    module: torch.nn.Module
    autocast: bool  # bf16 autocast over fp32 weights; off under FSDP2, whose policy casts instead
    precision: str
    fsdp_api: str = ""


def _autocast(enabled: bool, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def _wrap(model: GPT, plan: TrainingPlan, device: torch.device, group: Any) -> Wrapping:
    bf16 = plan.dtype == "bf16"
    autocast_words = "bf16 autocast over fp32 weights" if bf16 else "fp32 throughout"
    if group is None or dist.get_world_size(group) == 1:
        # One rank trains the bare model: the baseline of the scaling efficiency.
        return Wrapping(model, bf16, autocast_words)
    if plan.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                      process_group=group)
        return Wrapping(ddp, bf16, autocast_words)
    from torch.distributed.device_mesh import DeviceMesh

    fsdp = find_fsdp2()
    precision = sharding_precision(fsdp, plan.dtype)
    mesh = DeviceMesh.from_group(group, device.type)
    for block in model.blocks:
        fsdp.fully_shard(block, mesh=mesh, mp_policy=precision.policy)
    sharded = fsdp.fully_shard(model, mesh=mesh, mp_policy=precision.policy)
    return Wrapping(sharded, False, precision.description, fsdp.api)


def train(plan: TrainingPlan, device: torch.device, group: Any = None, *, rank_in_group: int = 0,
          corrupt_rank: int | None = None) -> TrainingResult:
    """Train a fresh model for `plan.warmup` + `plan.steps` steps on `device`, data parallel over
    `group` (None: this rank alone); every member of the group must call it.

    When it returns or raises, the run's model, optimizer, gradients and activations are freed and
    the device's cached memory returned (release_device_memory).

    `corrupt_rank` is for the toolkit's own tests: that rank flips one bit of one weight after
    training, as a faulty device would, so that the checksum comparison can be shown to catch it.
    """
    try:
        return _train(plan, device, group, rank_in_group, corrupt_rank)
    except BaseException as exc:
        # A caller may keep the exception (a run remembers its failure); its traceback's frames would
        # keep the model, optimizer and activations on the device with it, an out-of-memory error's
        # most of all. Clearing their locals keeps what a report shows: file, line and code.
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        release_device_memory(device)


def _train(plan: TrainingPlan, device: torch.device, group: Any, rank_in_group: int,
           corrupt_rank: int | None) -> TrainingResult:
    config = plan.config
    model = build_model(config, device, plan.seed)
    flops = model_flops(model)
    wrapping = _wrap(model, plan, device, group)
    wrapped = wrapping.module
    optimizer = torch.optim.AdamW(wrapped.parameters(), lr=config.learning_rate, weight_decay=0.1)
    generator = torch.Generator(device=device)
    generator.manual_seed(plan.seed + 7919 * (rank_in_group + 1))  # each rank its own batches
    memory = PhaseMemory(device)

    with memory.phase("train"):
        warmup_losses = [_step(wrapped, optimizer, synthetic_batch(config, device, generator), wrapping.autocast,
                               device) for _ in range(plan.warmup)]
        marks, losses = Marks(device), []
        for _ in range(plan.steps):
            marks.mark()
            batch = synthetic_batch(config, device, generator)
            marks.mark()
            losses.append(_step(wrapped, optimizer, batch, wrapping.autocast, device, marks))
            marks.mark()
        data_s, backward_s, optimizer_s = (list(column) for column in zip(*marks.intervals(per_round=3)))
    step_s = [b + o for b, o in zip(backward_s, optimizer_s)]
    # Nothing after the measured steps updates the weights: AdamW's two moments per weight go now,
    # so that the next phase's peak is the forward and backward's alone. The collection frees them
    # even where torch's import-time cycle (see release_device_memory) holds the optimizer; the
    # allocator keeps the blocks cached, so the next phase allocates nothing new from the driver.
    del optimizer, batch
    gc.collect()

    with memory.phase("no_sync"):
        local_backward_s, why_no_split = _local_backward(wrapped, plan, wrapping.autocast, device, generator)
    if local_backward_s is None:
        memory.peaks.pop("no_sync", None)  # a phase that did not run has no peak of its own (same on every rank)
    if corrupt_rank is not None and corrupt_rank == rank_in_group:
        _flip_one_bit(model)
    checksums, why_no_checksum = None, "FSDP shards the parameters: there are no replicas to compare"
    if plan.parallel == "ddp" or group is None or dist.get_world_size(group) == 1:
        checksums, why_no_checksum = [parameter_checksum(model)], ""

    result = TrainingResult(
        ranks=1,
        parallel="none",
        step_s=step_s,
        data_s=data_s,
        backward_s=backward_s,
        losses=torch.stack(losses).float().tolist(),
        warmup_losses=torch.stack(warmup_losses).float().tolist() if warmup_losses else [],
        rank_step_median_s=[statistics.median(step_s)],
        local_backward_s=local_backward_s,
        checksums=checksums,
        flops=flops,
        why_no_split=why_no_split,
        why_no_checksum=why_no_checksum,
        precision=wrapping.precision,
        fsdp_api=wrapping.fsdp_api,
        peak_memory=dict(memory.peaks) if memory.cuda else None,
    )
    if group is not None and dist.get_world_size(group) > 1:
        result = _across_ranks(result, plan, device, group)
    return result


def _step(wrapped: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor],
          autocast: bool, device: torch.device, marks: Marks | None = None) -> torch.Tensor:
    """One training step; with `marks`, a mark between the backward pass and the optimizer step."""
    with _autocast(autocast, device):
        loss = wrapped(*batch)
    loss.backward()
    if marks is not None:
        marks.mark()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def _across_ranks(mine: TrainingResult, plan: TrainingPlan, device: torch.device, group: Any) -> TrainingResult:
    """The group's view of one rank's result: each step the slowest rank's times, the loss averaged
    over the ranks, every rank's median step time and checksum."""
    ranks = dist.get_world_size(group)
    peaks = mine.peak_memory or {}
    # Memory peaks ride in the same MAX reduction as the times: one collective, the group's largest.
    peak_values = [float(v) for p in peaks.values() for v in (p.allocated_bytes, p.reserved_bytes)]
    slowest = _reduce(device, group, dist.ReduceOp.MAX, mine.step_s, mine.data_s, mine.backward_s,
                      mine.local_backward_s or [], peak_values)
    largest = [int(v) for v in slowest[4]]
    peak_memory = None if mine.peak_memory is None else {
        name: MemoryPeak(largest[2 * i], largest[2 * i + 1]) for i, name in enumerate(peaks)}
    checksums = None
    if mine.checksums is not None:
        gathered: list[Any] = [None] * ranks
        dist.all_gather_object(gathered, mine.checksums[0].to_json(), group=group)
        checksums = [ParameterChecksum.from_json(c) for c in gathered]
    return replace(
        mine,
        ranks=ranks,
        parallel=plan.parallel,
        step_s=slowest[0],
        data_s=slowest[1],
        backward_s=slowest[2],
        local_backward_s=slowest[3] or mine.local_backward_s,
        losses=[v / ranks for v in _reduce(device, group, dist.ReduceOp.SUM, mine.losses)[0]],
        rank_step_median_s=_gather_floats(device, group, mine.rank_step_median_s[0]),
        checksums=checksums,
        peak_memory=peak_memory,
    )


def _local_backward(wrapped: torch.nn.Module, plan: TrainingPlan, autocast: bool, device: torch.device,
                    generator: torch.Generator) -> tuple[list[float] | None, str]:
    """Forward+backward without gradient synchronisation, timed like the measured steps."""
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(wrapped, DistributedDataParallel):
        if plan.parallel == "fsdp":
            return None, "FSDP gathers weights in the forward pass: no communication-free run to compare with"
        return None, "one rank: nothing to communicate"
    if plan.split_steps < 1:
        return None, "not requested"
    marks = Marks(device)
    with wrapped.no_sync():
        for _ in range(plan.split_steps):
            batch = synthetic_batch(plan.config, device, generator)
            marks.mark()
            with _autocast(autocast, device):
                loss = wrapped(*batch)
            loss.backward()
            marks.mark()
            wrapped.zero_grad(set_to_none=True)  # no optimizer step: the weights stay as trained
    return [r[0] for r in marks.intervals(per_round=1)], ""


def _reduce(device: torch.device, group: Any, op: Any, *series: list[float]) -> list[list[float]]:
    """Element-wise reduction of equally long series over the group, in one collective."""
    lengths = [len(s) for s in series]
    flat = torch.tensor([v for s in series for v in s], dtype=torch.float64, device=device)
    dist.all_reduce(flat, op=op, group=group)
    values, out, start = flat.tolist(), [], 0
    for length in lengths:
        out.append(values[start:start + length])
        start += length
    return out


def _gather_floats(device: torch.device, group: Any, value: float) -> list[float]:
    tensors = [torch.zeros(1, dtype=torch.float64, device=device) for _ in range(dist.get_world_size(group))]
    dist.all_gather(tensors, torch.tensor([value], dtype=torch.float64, device=device), group=group)
    return [t.item() for t in tensors]


@torch.no_grad()
def _flip_one_bit(model: torch.nn.Module) -> None:
    weight = next(model.parameters())
    bits = weight.view(torch.int32).view(-1)
    bits[0] ^= 1


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    """Run torch's CPU ops on `count` threads for a while: local ranks that share a host's cores
    must not each start one thread per core and fight over them."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(before)
