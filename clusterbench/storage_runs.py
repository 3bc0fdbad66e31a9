"""Running the storage probes of an acceptance run: each target measured once per rank, on first use.

Every rank measures at the same time (the tests of a run are settled across ranks in step), so on a
shared filesystem the figures show what it gives many clients at once, and the peers check names
the slowest node; on node-local disks each node is measured on its own disk. On a target the
profile lists as shared, the measuring ranks of a job write one sharded checkpoint together
through torch.distributed.checkpoint; elsewhere each rank saves its own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from clusterbench.model import Location, Measurement, NotMeasured, ProbeFailed
from clusterbench.profile import StorageSettings

if TYPE_CHECKING:
    from clusterbench.probes.storage import CheckpointGroup


def node_leaders(hosts: dict[int, str]) -> tuple[int, ...]:
    """The first rank of each host: the one that measures for its node with `one-per-node`."""
    first: dict[str, int] = {}
    for rank in sorted(hosts):
        first.setdefault(hosts[rank], rank)
    return tuple(sorted(first.values()))


@dataclass
class StorageRuns:
    settings: StorageSettings
    quick: bool
    location: Callable[[str], Location]  # device label -> this rank's location
    rank: int
    # Under a launcher, every rank's host; None in a world of one.
    hosts: dict[int, str] | None = None
    timeout_s: float = 300.0  # the run's collective deadline, for the checkpoint group's collectives
    _results: dict[str, object] = field(default_factory=dict)  # target -> StorageResult or the error
    _group: "CheckpointGroup | None" = None
    _group_made: bool = False

    @property
    def measuring_ranks(self) -> tuple[int, ...]:
        if self.hosts is None:
            return (self.rank,)
        return node_leaders(self.hosts) if self.settings.ranks == "one-per-node" else tuple(sorted(self.hosts))

    def _checkpoint_group(self) -> "CheckpointGroup | None":
        """The process group of the measuring ranks, made once, on every rank of the world (making
        a group is collective), when a shared target has two or more ranks measuring it."""
        if not self._group_made:
            self._group_made = True
            ranks = self.measuring_ranks
            if self.hosts is not None and len(ranks) > 1 and set(self.settings.shared) & set(self.settings.targets):
                import torch.distributed as dist

                from clusterbench.probes.storage import CheckpointGroup

                # With the run's deadline: torch's default (30 minutes for Gloo) would hold the
                # group for that long after a rank died.
                timeout = dt.timedelta(seconds=self.timeout_s)
                group = None if len(ranks) == len(self.hosts) else dist.new_group(list(ranks), timeout=timeout)
                if self.rank in ranks:
                    self._group = CheckpointGroup(group, ranks.index(self.rank), len(ranks))
        return self._group

    def _result(self, target: str):
        from clusterbench import progress
        from clusterbench.probes.storage import StorageIntegrityError, StorageRunError, StorageTargetError, measure_storage
        from clusterbench.probes.storage.distributed_checkpoint import withdraw_from_checkpoint

        if target not in self._results:
            group = self._group if target in self.settings.shared else None
            try:
                self._results[target] = measure_storage(
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
                self._results[target] = exc.result if exc.result is not None else exc
            except Exception as exc:
                # A bad target, a full disk: every figure of the target fails with the same one line
                # (the probe has already removed what it wrote). The other ranks of a shared
                # checkpoint are told at once rather than left waiting for this one.
                if group is not None:
                    try:
                        withdraw_from_checkpoint(group, target, self.location("").host, str(exc).splitlines()[0])
                    except StorageRunError:
                        pass
                if not isinstance(exc, (StorageTargetError, StorageRunError, NotMeasured)):
                    raise
                self._results[target] = exc
        return self._results[target]

    def attempts(self, metric: str) -> list[tuple[Location, Callable[[], list[Measurement]]]]:
        self._checkpoint_group()  # every rank calls attempts(), so every rank joins in making it
        if self.rank not in self.measuring_ranks:
            return []  # the node's first rank measures for it
        return [(self.location(f"storage {t}"), lambda t=t: self._figures(t, metric)) for t in self.settings.targets]

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
