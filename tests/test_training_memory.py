"""The device memory a training run holds: nothing left once a run ends, however it ends, and each
phase's peak recorded (CUDA's counters are modelled by a test double: no GPU here)."""

from __future__ import annotations

import json
import subprocess
import sys
import weakref

import pytest
import torch

from clusterbench.model import Location
from clusterbench.probes.training import loop
from clusterbench.probes.training.figures import GroupRun, group_measurements
from clusterbench.probes.training.flops import flops_per_token
from clusterbench.probes.training.loop import MemoryPeak, PhaseMemory, TrainingPlan, TrainingResult, train
from clusterbench.probes.training.presets import PRESETS
from clusterbench.runners.local_ranks import run_local_ranks

# Run in a fresh interpreter: only the first optimizer of a process triggers torch's lazy import whose
# frame cycle held the first run's model (see loop.release_device_memory). Automatic collection is
# off, as good as on a GPU node where a run allocates too few Python objects to trigger it.
TWO_RUNS_IN_A_FRESH_PROCESS = """
import gc, json, torch
from clusterbench.probes.training.loop import TrainingPlan, train
from clusterbench.probes.training.model import GPT
from clusterbench.probes.training.presets import PRESETS

gc.disable()
torch.set_num_threads(1)
plan = TrainingPlan(PRESETS["tiny"], "fp32", warmup=1, steps=2)
alive = []
for _ in range(2):
    train(plan, torch.device("cpu"))
    objects = gc.get_objects()  # what gc tracks, collectable garbage included
    alive.append([sum(isinstance(o, GPT) for o in objects), sum(isinstance(o, torch.optim.AdamW) for o in objects)])
print(json.dumps(alive))
"""


def test_the_first_run_of_a_process_leaves_no_model_or_optimizer_behind():
    done = subprocess.run([sys.executable, "-c", TWO_RUNS_IN_A_FRESH_PROCESS], check=False, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    alive_after_each_run = json.loads(done.stdout.strip().splitlines()[-1])
    # Before the fix: [[1, 1], [0, 0]], the first run's GPT and AdamW held by torch.fx's frame cycle.
    assert alive_after_each_run == [[0, 0], [0, 0]]


def test_a_failed_run_leaves_no_model_behind_even_while_its_exception_is_kept(monkeypatch):
    built = []

    def build_and_watch(*args, **kwargs):
        model = build_model(*args, **kwargs)
        built.append(weakref.ref(model))
        return model

    batches = {"made": 0}

    def batch_then_fail(config, device, generator):
        batches["made"] += 1
        if batches["made"] > 3:  # inside the measured steps, activations and optimizer state allocated
            raise RuntimeError("CUDA out of memory (simulated)")
        return synthetic_batch(config, device, generator)

    build_model, synthetic_batch = loop.build_model, loop.synthetic_batch
    monkeypatch.setattr(loop, "build_model", build_and_watch)
    monkeypatch.setattr(loop, "synthetic_batch", batch_then_fail)
    with pytest.raises(RuntimeError, match="simulated") as caught:
        train(TrainingPlan(PRESETS["tiny"], "fp32", warmup=2, steps=4), torch.device("cpu"))
    # A run that remembers its failure keeps the exception, and with it the traceback.
    kept = caught.value
    assert kept.__traceback__ is not None and len(built) == 1
    assert built[0]() is None, "the failed run's model is still alive through the exception's traceback"


class FakeCudaAllocator:
    """A test double of torch.cuda's caching-allocator counters: a peak that each reset sets to the
    current use, as the real counters do."""

    def __init__(self) -> None:
        self.allocated = self.reserved = 0
        self.peak_allocated = self.peak_reserved = 0
        self.resets = self.emptied = 0

    def use(self, allocated: int, reserved: int) -> None:
        self.allocated, self.reserved = allocated, reserved
        self.peak_allocated, self.peak_reserved = max(self.peak_allocated, allocated), max(self.peak_reserved, reserved)

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", self.reset_peak_memory_stats)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.peak_allocated)
        monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: self.peak_reserved)
        monkeypatch.setattr(torch.cuda, "empty_cache", self.empty_cache)

    def reset_peak_memory_stats(self, device=None) -> None:
        self.resets += 1
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def empty_cache(self) -> None:
        self.emptied += 1
        self.reserved = self.allocated


def test_each_phase_records_its_own_peak_on_a_gpu(monkeypatch):
    fake = FakeCudaAllocator()
    fake.install(monkeypatch)
    fake.use(5_000, 8_000)  # the model and optimizer, resident before the first phase
    memory = PhaseMemory(torch.device("cuda", 0))
    with memory.phase("train"):
        fake.use(13_000, 16_000)
        fake.use(9_000, 16_000)
    fake.use(4_000, 16_000)  # the optimizer's state freed between the phases
    with memory.phase("no_sync"):
        fake.use(7_000, 16_000)
    assert fake.resets == 2
    assert memory.peaks == {"train": MemoryPeak(13_000, 16_000), "no_sync": MemoryPeak(7_000, 16_000)}


def test_no_peaks_off_cuda_and_the_figure_says_why():
    memory = PhaseMemory(torch.device("cpu"))
    with memory.phase("train"):
        pass
    assert memory.peaks == {}
    result = train(TrainingPlan(PRESETS["tiny"], "fp32", warmup=1, steps=2), torch.device("cpu"))
    assert result.peak_memory is None
    step = _step_figure(result)
    assert step.details["peak_device_memory"].startswith("n/a (cpu)")


def test_releasing_a_gpu_returns_the_cached_blocks(monkeypatch):
    fake = FakeCudaAllocator()
    fake.install(monkeypatch)
    fake.use(0, 6_000)
    loop.release_device_memory(torch.device("cuda", 0))
    assert fake.emptied == 1 and fake.reserved == 0
    loop.release_device_memory(torch.device("cpu"))
    assert fake.emptied == 1  # nothing of CUDA's touched on a CPU


def _result_with_peaks(peaks: dict[str, MemoryPeak] | None) -> TrainingResult:
    return TrainingResult(ranks=1, parallel="none", step_s=[0.1, 0.1], data_s=[0.01, 0.01], backward_s=[0.08, 0.08],
                          losses=[6.0, 5.0], warmup_losses=[], rank_step_median_s=[0.1], local_backward_s=None,
                          checksums=None, flops=flops_per_token(1000, 100, 2, 4, 16, 64), peak_memory=peaks)


def _step_figure(result: TrainingResult):
    plan = TrainingPlan(PRESETS["tiny"], "fp32", warmup=1, steps=2)
    run = GroupRun((0,), "single", result)
    figures = group_measurements(run, plan, run, Location("h", 0, "1 rank"), None, None, {0: "h"})
    return next(m for m in figures if m.metric == "train.step_time_ms")


def test_the_step_figure_carries_each_phases_peak():
    step = _step_figure(_result_with_peaks({"train": MemoryPeak(13_000, 16_000), "no_sync": MemoryPeak(7_000, 16_000)}))
    peaks = step.details["peak_device_memory"]
    assert peaks["train"] == {"allocated_bytes": 13_000, "reserved_bytes": 16_000}
    assert peaks["no_sync"] == {"allocated_bytes": 7_000, "reserved_bytes": 16_000}
    assert "max_memory_allocated" in peaks["how"]


def combine_peaks_across_ranks(rank: int, world_size: int) -> dict[str, MemoryPeak] | None:
    """Each rank's peaks as a GPU node's ranks differ (rank 0 holds less than the others), combined as
    train() combines them; gloo carries the reduction as NCCL would."""
    import torch.distributed as dist

    mine = _result_with_peaks({"train": MemoryPeak(13_000 + rank * 5_000, 20_000 - rank * 1_000),
                               "no_sync": MemoryPeak(7_000 + rank, 9_000)})
    plan = TrainingPlan(PRESETS["tiny"], "fp32", warmup=1, steps=2)
    return loop._across_ranks(mine, plan, torch.device("cpu"), dist.group.WORLD).peak_memory


def test_the_group_reports_its_largest_peak_by_phase():
    peaks = run_local_ranks(combine_peaks_across_ranks, 2, timeout=60)
    assert peaks[0] == peaks[1] == {"train": MemoryPeak(18_000, 20_000), "no_sync": MemoryPeak(7_001, 9_000)}
