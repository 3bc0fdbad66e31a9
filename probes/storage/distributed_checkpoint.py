"""Checkpoint throughput of one sharded checkpoint that several ranks write together into a shared
filesystem, through torch.distributed.checkpoint (DCP), the way sharded training saves.

Rank 0 of the group makes a fresh subdirectory in its own workspace for each round and tells the
others its path. Before anything is timed, every rank proves it sees rank 0's workspace (a token
file rank 0 wrote there): the same path naming node-local directories on different nodes would
otherwise pass for a shared filesystem. A round: barrier, `dcp.save` of each rank's own shard (the
writer fsyncs every file), the pages evicted, barrier, `dcp.load` into fresh tensors, a bit-for-bit
comparison. A rank's figure is its shard's bytes over its own seconds; the job's figure, formed on
rank 0 of the run by the metric's aggregate rule, is N x the slowest rank: all bytes over the
longest time, as MLPerf Storage counts checkpointing.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from clusterbench.model import Location, Measurement
from clusterbench.probes.storage.checkpoint import (
    CheckpointPlan,
    CheckpointRound,
    checkpoint_figures,
    first_difference,
    training_state,
)
from clusterbench.probes.storage.errors import StorageIntegrityError, StorageRunError
from clusterbench.probes.storage.filesystem import TargetFacts, evict_file
from clusterbench.probes.storage.workspace import Workspace

ENGINE = "torch.distributed.checkpoint"
TOKEN_FILE = "shared-token"
# The names DCP's FileSystemWriter gives its files: one or more data files per rank, and the
# metadata file (written as .tmp, then renamed). Only these are removed with a round's directory.
DCP_FILE_NAMES = re.compile(r"__\d+_\d+\.distcp|(__\d+)?\.metadata(\.tmp)?")


@dataclass(frozen=True)
class CheckpointGroup:
    """The ranks that write one checkpoint together. `group` is a torch.distributed process group
    (None: the default group); `rank` and `size` are this rank's place in it and its size."""

    group: Any
    rank: int
    size: int

    def barrier(self) -> None:
        dist.barrier(group=self.group)

    def broadcast_from_first(self, value: Any) -> Any:
        box = [value]
        source = 0 if self.group is None else dist.get_global_rank(self.group, 0)
        dist.broadcast_object_list(box, src=source, group=self.group)
        return box[0]

    def gather_all(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value, group=self.group)
        return values


def shard_state(plan: CheckpointPlan, rank: int) -> dict[str, torch.Tensor]:
    """This rank's shard: the tensors of a model and optimizer state under names no other rank
    uses, so DCP writes every rank's bytes (it would write a replicated tensor only once)."""
    tensors: dict[str, torch.Tensor] = {}

    def collect(value: Any, name: str) -> None:
        if isinstance(value, torch.Tensor):
            tensors[name] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                collect(item, f"{name}.{key}")
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                collect(item, f"{name}.{index}")

    collect(training_state(plan, seed=rank), f"rank{rank}")
    return tensors


def _one_line(exc: BaseException) -> str:
    """DCP gathers every rank's exception into one CheckpointException; name the first rank's."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and failures:
        rank, cause = sorted(failures.items())[0]
        return f"rank {rank} of the checkpoint group: {_first_line(cause)}"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sees(workspace_path: Path, token: str, facts: TargetFacts) -> str:
    """Why this rank does not see rank 0's workspace in its own target, or "" when it does."""
    token_path = workspace_path / TOKEN_FILE
    try:
        if not workspace_path.resolve().is_relative_to(Path(facts.target).resolve()):
            return f"rank 0's directory {workspace_path} is not inside this rank's target {facts.target}"
        if token_path.read_text() != token:
            return f"{token_path} holds another run's token"
    except OSError as exc:
        return f"cannot read {token_path} ({exc.strerror})"
    return ""


def _agree_to_start(problem: str, target: str, group: CheckpointGroup, host: str) -> None:
    """Every rank states whether it can take part; one that cannot makes every rank fail at once
    with the same line, instead of the others waiting for it until the deadline."""
    views = group.gather_all((host, group.rank, problem))
    problems = [f"rank {rank} on {host}: {problem}" for host, rank, problem in views if problem]
    if problems:
        raise StorageRunError(f"distributed checkpoint on {target} not run: {'; '.join(problems)}")


def withdraw_from_checkpoint(group: CheckpointGroup, target: str, host: str, reason: str) -> None:
    """For a rank that failed before its checkpoint: answer the group's opening collectives with the
    reason, so that the other ranks give up at once. Raises StorageRunError like they do."""
    group.broadcast_from_first((None, ""))
    _agree_to_start(f"could not measure ({reason})", target, group, host)


def _evict(directory: Path) -> float | None:
    """Advise the kernel to drop the checkpoint's cached pages; the largest fraction still cached."""
    fractions = [evict_file(entry) for entry in directory.iterdir()]
    return None if not fractions or None in fractions else max(f for f in fractions if f is not None)


def _one_round(workspace: Workspace, directory: Path, name: str,
               state: dict[str, torch.Tensor], group: CheckpointGroup) -> CheckpointRound:
    import torch.distributed.checkpoint as dcp

    if group.rank == 0:
        workspace.subdirectory(name, DCP_FILE_NAMES)
    path = directory / name
    loaded = {key: torch.empty_like(tensor) for key, tensor in state.items()}
    try:
        group.barrier()  # the directory exists, and every rank starts the clock together
        start = time.perf_counter()
        dcp.save(state, storage_writer=dcp.FileSystemWriter(path, sync_files=True), process_group=group.group)
        save_s = time.perf_counter() - start
        cached = _evict(path)
        group.barrier()
        start = time.perf_counter()
        dcp.load(loaded, storage_reader=dcp.FileSystemReader(path), process_group=group.group)
        load_s = time.perf_counter() - start
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise StorageRunError(f"distributed checkpoint in {path}: {_one_line(exc)}") from None
    finally:
        # The barrier: nobody still reads or writes when rank 0 removes the directory. It fails when a
        # rank is gone, and then the failure is already on its way up.
        with contextlib.suppress(Exception):
            group.barrier()
        if group.rank == 0:
            workspace.remove(name)
    difference = first_difference(state, loaded)
    if difference is not None:
        raise StorageIntegrityError(f"distributed checkpoint {path}: what dcp.load returned differs from "
                                    f"what was saved: {difference}")
    shard_bytes = sum(t.numel() * t.element_size() for t in state.values())
    return CheckpointRound(shard_bytes, save_s, load_s, cached)


def measure_distributed_checkpoint(
    workspace: Workspace, facts: TargetFacts, location: Location, plan: CheckpointPlan, group: CheckpointGroup
) -> list[Measurement]:
    """This rank's checkpoint.save_gbps and checkpoint.load_gbps of a sharded checkpoint written by
    every rank of `group` at once into rank 0's workspace; all ranks of the group must call it."""
    state = shard_state(plan, group.rank)
    token = ""
    if group.rank == 0:
        token = secrets.token_hex(8)
        workspace.file(TOKEN_FILE).write_text(token)
    directory, token = group.broadcast_from_first((str(workspace.path), token))
    try:
        problem = "" if directory is None else _sees(Path(directory), token, facts)
        if problem:
            problem += "; list a target in [storage] shared only if it is one filesystem for all ranks"
        _agree_to_start(problem, facts.target, group, location.host)
        rounds = [_one_round(workspace, Path(directory), f"dcp-{i}", state, group) for i in range(plan.repeats)]
    finally:
        if group.rank == 0:
            workspace.remove(TOKEN_FILE)
    details = {"ranks_writing": group.size, "shard_tensors": len(state), "shared_directory": directory}
    return checkpoint_figures(rounds, facts, location, plan, engine=ENGINE, details=details)
