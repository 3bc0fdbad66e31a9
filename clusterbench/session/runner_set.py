"""The runners a run starts on first use, once each: the collective sweeps, storage, training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from clusterbench.model import Location
from clusterbench.results import RunInfo
from clusterbench.session.context import RunContext

if TYPE_CHECKING:
    from clusterbench.runners.collectives import CollectiveRuns
    from clusterbench.runners.storage import StorageRuns
    from clusterbench.runners.training import TrainingRuns


@dataclass
class Runners:
    context: RunContext
    info: RunInfo  # told how many local ranks the collectives started (the world is one process)
    _collectives: CollectiveRuns | None = None
    _storage: StorageRuns | None = None
    _training: TrainingRuns | None = None

    @property
    def collectives(self) -> CollectiveRuns:
        """The collective sweeps: over the launcher's world, or over local ranks started here."""
        from clusterbench.runners.collectives import CollectiveRuns, sweep_plan  # imports torch

        if self._collectives is None:
            context, world = self.context, self.context.world
            if world.is_distributed:
                backend, ranks = context.exchange.backend or "gloo", world.size
            else:
                backend = "nccl" if context.on_gpu else "gloo"
                ranks = len(context.devices) if context.on_gpu else context.profile.settings.local_ranks
                self.info.local_ranks = ranks  # the world is 1 process; the reports say what ran
            hosts = context.exchange.hosts
            self._collectives = CollectiveRuns(
                distributed=world.is_distributed,
                backend=backend,
                ranks=ranks,
                plan=sweep_plan(on_gpu=context.on_gpu, quick=context.quick,
                                timeout_s=context.profile.settings.collective_timeout_s),
                location=Location(host=hosts.get(0, world.host), rank=0, device=f"{ranks} ranks"),
                hosts=dict(hosts) if world.is_distributed else {r: world.host for r in range(ranks)},
            )
        return self._collectives

    @property
    def storage(self) -> StorageRuns:
        """The storage probes over the targets of --storage-target, else of the profile's [storage]."""
        from clusterbench.runners.storage import StorageRuns

        if self._storage is None:
            context, world = self.context, self.context.world
            hosts = dict(context.exchange.hosts) if world.is_distributed else None
            self._storage = StorageRuns(context.storage, context.quick, context.location, world.rank, hosts,
                                        context.profile.settings.collective_timeout_s)
        return self._storage

    @property
    def training(self) -> TrainingRuns:
        """The training scaling run: over the launcher's world, or over local ranks started here."""
        from clusterbench.runners.training import training_runs  # imports torch

        if self._training is None:
            context = self.context
            self._training = training_runs(context.profile, self.collectives, context.devices, context.quick)
        return self._training
