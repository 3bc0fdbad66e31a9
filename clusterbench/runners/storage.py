"""Running the storage probes of an acceptance run: each target measured once per rank, on first use.

Storage runs in this process, as this rank: never over local ranks started here (a disk is measured by
the processes that use it). Under a launcher every rank of the world measures at the same time (the
tests of a run are settled across ranks in step), so on a shared filesystem the figures show what it
gives many clients at once, and the peers check names the slowest node; on node-local disks each node
is measured on its own disk. On a target the profile lists as shared, the measuring ranks of a job
write one sharded checkpoint together through torch.distributed.checkpoint; elsewhere each rank saves
its own.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clusterbench.model import Location, Measurement, NotMeasured, ProbeFailed
from clusterbench.profile import StorageSettings
from clusterbench.runners.groups import node_leaders, subgroup
from clusterbench.runners.runner import Runner

if TYPE_CHECKING:
    from clusterbench.probes.storage import CheckpointGroup


@dataclass
class StorageRuns(Runner):
    settings: StorageSettings
    quick: bool
    location: Callable[[str], Location]  # device label -> this rank's location
    rank: int
    # Under a launcher, every rank's host; None in a world of one.
    hosts: dict[int, str] | None = None
    timeout_s: float = 300.0  # the run's collective deadline, for the checkpoint group's collectives

    @property
    def measuring_ranks(self) -> tuple[int, ...]:
        if self.hosts is None:
            return (self.rank,)
        if self.settings.ranks == "one-per-node":
            return tuple(node_leaders(self.hosts).values())
        return tuple(sorted(self.hosts))

    def _checkpoint_group(self) -> CheckpointGroup | None:
        """The process group of the measuring ranks, made once, on every rank of the world (making
        a group is collective), when a shared target has two or more ranks measuring it."""
        return self.measured_once("checkpoint group", self._make_checkpoint_group)

    def _make_checkpoint_group(self) -> CheckpointGroup | None:
        ranks = self.measuring_ranks
        if self.hosts is None or len(ranks) < 2 or not set(self.settings.shared) & set(self.settings.targets):
            return None
        from clusterbench.probes.storage import CheckpointGroup

        group = None if len(ranks) == len(self.hosts) else subgroup(ranks, self.timeout_s)
        return CheckpointGroup(group, ranks.index(self.rank), len(ranks)) if self.rank in ranks else None

    def _result(self, target: str):
        """The target's StorageResult, or the error that every figure of it fails with (remembered)."""
        return self.measured_once(("target", target), lambda: self._measure(target))

    def _measure(self, target: str):
        from clusterbench import progress
        from clusterbench.probes.storage import (
            StorageIntegrityError,
            StorageRunError,
            StorageTargetError,
            measure_storage,
        )
        from clusterbench.probes.storage.distributed_checkpoint import withdraw_from_checkpoint

        group = self._checkpoint_group() if target in self.settings.shared else None
        try:
            return measure_storage(
                Path(target),
                quick=self.quick,
                engine=self.settings.engine,
                location=self.location(f"storage {target}"),
                working_size=self.settings.working_size_bytes,
                checkpoint_group=group,
                on_step=progress.callback_for(f"storage {target}"),
            )
        except StorageIntegrityError as exc:
            # Data read back wrong: the workloads it hit fail (as recorded failures), the clean
            # figures of the other workloads stand.
            return exc.result if exc.result is not None else exc
        except Exception as exc:
            # A bad target, a full disk: every figure of the target fails with the same one line
            # (the probe has already removed what it wrote). The other ranks of a shared
            # checkpoint are told at once rather than left waiting for this one.
            if group is not None:
                with contextlib.suppress(StorageRunError):
                    withdraw_from_checkpoint(group, target, self.location("").host, str(exc).splitlines()[0])
            if not isinstance(exc, (StorageTargetError, StorageRunError, NotMeasured)):
                raise
            return exc

    def attempts(self, metric: str) -> list[tuple[Location, Callable[[], list[Measurement]]]]:
        self._checkpoint_group()  # every rank calls attempts(), so every rank joins in making it
        if self.rank not in self.measuring_ranks:
            return []  # the node's first rank measures for it
        return [(self.location(f"storage {t}"), functools.partial(self._figures, t, metric))
                for t in self.settings.targets]

    def _figures(self, target: str, metric: str) -> list[Measurement]:
        result = self._result(target)
        if isinstance(result, NotMeasured):
            raise result
        if isinstance(result, Exception):
            raise ProbeFailed(str(result).splitlines()[0] if str(result) else type(result).__name__)
        failed = [f for f in result.failures if metric in f.metrics]
        if failed:
            raise ProbeFailed(f"{target}: {failed[0].workload}: {failed[0].message}")
        figures = [m for m in result.measurements if m.metric == metric]
        if not figures:
            raise NotMeasured(f"{metric} was not measured on {target}")
        for figure in figures:
            figure.details.setdefault("engine_reason", result.engine_reason)
            figure.details.setdefault("fallbacks", list(result.fallbacks))
        return figures
