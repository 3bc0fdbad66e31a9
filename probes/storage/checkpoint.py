"""Checkpoint save and load throughput of a real model state, the way DLIO's PyTorch path does it.

The state is a stack of Linear layers and its AdamW optimizer after one step (so the optimizer holds
its two moment buffers: the checkpoint is ~3x the weights, as in training). Save = torch.save into an
open file + flush + os.fsync, timed together: serialisation is part of what training waits for.
Then the file's pages are evicted (posix_fadvise DONTNEED after the fsync) and mincore(2) reports
how much of it is still cached, since eviction is only advice; load = torch.load of the whole file.
Every loaded tensor is compared with the saved one. GB/s = file size / seconds (1e9 B/s); the
headline is the median over repeats, each repeat a fresh file.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clusterbench.metrics import METRICS
from clusterbench.model import Location, Measurement, ParamValue
from clusterbench.probes.stats import summarize
from clusterbench.probes.storage.errors import StorageIntegrityError, StorageRunError
from clusterbench.probes.storage.filesystem import TargetFacts, evict_file
from clusterbench.probes.storage.workloads import GiB, MiB
from clusterbench.probes.storage.workspace import Workspace, human_bytes

SAVE_METRIC = "checkpoint.save_gbps"
LOAD_METRIC = "checkpoint.load_gbps"
FLOAT32_BYTES = 4
OPTIMIZER_FACTOR = 3  # weights + AdamW's exp_avg + exp_avg_sq
CACHED_TOLERANCE = 0.01  # a load that starts with more of the file cached than this is flagged
FULL_BELOW_BYTES = 1 << 20  # free space below which a failed save is put down to a full filesystem


@dataclass(frozen=True)
class CheckpointPlan:
    width: int  # each layer is Linear(width, width)
    layers: int
    repeats: int

    @classmethod
    def standard(cls, quick: bool, max_bytes: int | None = None) -> CheckpointPlan:
        """~64 MiB (quick) or ~1 GiB of checkpoint, fewer layers if `max_bytes` is smaller."""
        width = 1024 if quick else 2048
        wanted = 64 * MiB if quick else GiB
        if max_bytes is not None:
            wanted = min(wanted, max_bytes)
        per_layer = OPTIMIZER_FACTOR * FLOAT32_BYTES * (width * width + width)
        return cls(width, max(1, wanted // per_layer), repeats=3 if quick else 5)

    @property
    def parameters(self) -> int:
        return self.layers * (self.width * self.width + self.width)

    @property
    def approx_bytes(self) -> int:
        return OPTIMIZER_FACTOR * FLOAT32_BYTES * self.parameters


def training_state(plan: CheckpointPlan, seed: int = 0) -> dict[str, Any]:
    """Model and optimizer state dicts after one AdamW step on random data (random weights too:
    zeros would compress on filesystems that compress). The caller's RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(*(torch.nn.Linear(plan.width, plan.width) for _ in range(plan.layers)))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model(torch.randn(8, plan.width)).square().mean().backward()
        optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


def first_difference(saved: Any, loaded: Any, where: str = "state") -> str | None:
    """Where `loaded` first differs from `saved` (tensors bit for bit), or None when equal."""
    if isinstance(saved, torch.Tensor):
        if not isinstance(loaded, torch.Tensor) or saved.dtype != loaded.dtype or saved.shape != loaded.shape:
            return f"{where}: a tensor came back as {type(loaded).__name__} {getattr(loaded, 'shape', '')}"
        return None if torch.equal(saved, loaded) else f"{where}: tensor values differ"
    if isinstance(saved, dict):
        if not isinstance(loaded, dict) or saved.keys() != loaded.keys():
            return f"{where}: keys differ"
        return next((d for k in saved if (d := first_difference(saved[k], loaded[k], f"{where}[{k!r}]"))), None)
    if isinstance(saved, (list, tuple)):
        if type(saved) is not type(loaded) or len(saved) != len(loaded):
            return f"{where}: sequence differs"
        return next((d for i, s in enumerate(saved) if (d := first_difference(s, loaded[i], f"{where}[{i}]"))), None)
    return None if saved == loaded else f"{where}: {saved!r} came back as {loaded!r}"


@dataclass(frozen=True)
class CheckpointRound:
    bytes: int
    save_s: float
    load_s: float
    cached_before_load: float | None  # fraction of the file's pages cached when the load began


def _failure(workspace: Workspace, path: Path, exc: Exception) -> StorageRunError:
    """One line for a save or load that failed. torch.save reports a full disk as a RuntimeError
    about zip positions, so the free space is looked up and named when it has run out."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[0]
    vfs = os.statvfs(workspace.path)
    free = vfs.f_bavail * vfs.f_frsize
    full = f"; the filesystem is full ({human_bytes(free)} free)" if vfs.f_blocks and free < FULL_BELOW_BYTES else ""
    return StorageRunError(f"checkpoint {path}: {reason}{full}")


def _one_round(workspace: Workspace, state: dict[str, Any], name: str) -> CheckpointRound:
    path = workspace.file(name)
    try:
        start = time.perf_counter()
        with open(path, "xb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        saved = time.perf_counter()
        size = os.path.getsize(path)
        cached = evict_file(path)
        load_start = time.perf_counter()
        with open(path, "rb") as file:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
        loaded_at = time.perf_counter()
    except (OSError, RuntimeError) as exc:
        raise _failure(workspace, path, exc) from None
    finally:
        workspace.remove(name)
    difference = first_difference(state, loaded)
    if difference is not None:
        raise StorageIntegrityError(f"checkpoint {path}: what torch.load returned differs from "
                                    f"what was saved: {difference}")
    return CheckpointRound(size, saved - start, loaded_at - load_start, cached)


def measure_checkpoint(workspace: Workspace, facts: TargetFacts,
                       location: Location, plan: CheckpointPlan) -> list[Measurement]:
    """checkpoint.save_gbps and checkpoint.load_gbps of `plan`'s state, median over repeats."""
    state = training_state(plan)
    rounds = [_one_round(workspace, state, f"checkpoint-{i}.pt") for i in range(plan.repeats)]
    return checkpoint_figures(rounds, facts, location, plan, engine="torch.save", details={})


def checkpoint_figures(
    rounds: list[CheckpointRound],
    facts: TargetFacts,
    location: Location,
    plan: CheckpointPlan,
    *,
    engine: str,
    details: dict[str, Any],
) -> list[Measurement]:
    """The save and load figures of `rounds` (median GB/s, raw samples kept), with the caveat a
    load that may have read cached pages, or a filesystem in RAM, calls for."""
    cached = [r.cached_before_load for r in rounds]
    load_cached = facts.memory_backed or any(c is None or c > CACHED_TOLERANCE for c in cached)
    if facts.memory_backed:
        load_caveat = f"{facts.filesystem} keeps files in RAM: these figures measure memory, not a disk"
    elif load_cached:
        load_caveat = ("pages of the checkpoint were (or may have been) still cached when loading began: "
                       "the load figure may include page-cache reads")
    else:
        load_caveat = None
    common = {
        "bytes": rounds[0].bytes,
        "layers": plan.layers,
        "width": plan.width,
        "parameters": plan.parameters,
        "optimizer": "AdamW",
        "torch": torch.__version__,
        "filesystem": facts.filesystem,
        "repeats": plan.repeats,
        **details,
    }
    params: dict[str, ParamValue] = {"target": facts.target, "engine": engine, "direct": False,
                                     "bytes": rounds[0].bytes}
    save = [r.bytes / r.save_s / 1e9 for r in rounds]
    load = [r.bytes / r.load_s / 1e9 for r in rounds]
    unit = METRICS[SAVE_METRIC].unit
    return [
        Measurement(
            SAVE_METRIC, statistics.median(save), unit, dict(params), location, save,
            {**common, "seconds": [r.save_s for r in rounds], "fsync": True, "page_cache_possible": facts.memory_backed,
             "caveat": load_caveat if facts.memory_backed else None, "sample_summary": summarize(save).to_json()},
        ),
        Measurement(
            LOAD_METRIC, statistics.median(load), unit, dict(params), location, load,
            {**common, "seconds": [r.load_s for r in rounds], "cached_fraction_before_load": cached,
             "page_cache_possible": load_cached, "caveat": load_caveat, "sample_summary": summarize(load).to_json()},
        ),
    ]
