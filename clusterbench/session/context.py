"""What every part of a run reads and nobody changes: the profile, the world, this rank's devices."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from clusterbench.distributed import Exchange
from clusterbench.model import Location
from clusterbench.profile import Profile, StorageSettings
from clusterbench.results import RunInfo, utc_now
from clusterbench.runinfo import describe_profile, host_versions, recorded_environment
from clusterbench.world import World

if TYPE_CHECKING:
    from clusterbench.probes.devices import LocalDevice


@dataclass(frozen=True)
class RunContext:
    profile: Profile
    exchange: Exchange
    report_dir: Path
    quick: bool
    # True when -m/-k/explicit paths narrowed the suite: expectations outside it are then reported
    # as not measured without failing the run, because nobody asked for them this time.
    narrowed: bool
    devices: list[LocalDevice] = field(default_factory=list)
    storage_targets: tuple[str, ...] = ()  # --storage-target, replacing the profile's targets

    @property
    def world(self) -> World:
        return self.exchange.world

    @property
    def is_reporter(self) -> bool:
        """Only rank 0 prints the summary and writes reports."""
        return self.world.rank == 0

    @property
    def on_gpu(self) -> bool:
        return bool(self.devices) and self.devices[0].kind != "cpu"

    def location(self, device: str) -> Location:
        return Location(host=self.world.host, rank=self.world.rank, device=device)

    @property
    def storage(self) -> StorageSettings:
        """The profile's [storage], its targets replaced by --storage-target when given."""
        settings = self.profile.storage
        return replace(settings, targets=self.storage_targets) if self.storage_targets else settings

    def run_info(self, command_line: list[str]) -> RunInfo:
        """What results.json says of this run before anything is measured."""
        from clusterbench.history.keys import new_run_id

        info = RunInfo(
            cluster=self.profile.cluster.name,
            profile=describe_profile(self.profile),
            hosts=sorted(set(self.exchange.hosts.values())),
            world_size=self.world.size,
            launcher=self.world.launcher,
            backend=self.exchange.backend,
            started_at=utc_now(),
            command_line=command_line,
            versions=host_versions(),
            devices=[asdict(d) for d in self.devices],
            quick=self.quick,
            environment=recorded_environment(),
        )
        info.run_id = new_run_id(info.started_at)
        return info


def rank_devices(world: World) -> list[LocalDevice]:
    """The devices this rank measures: under a launcher one accelerator per rank, as torchrun and
    srun lay ranks out; in a world of one, every local device."""
    from clusterbench.probes.devices import local_devices  # imports torch: only when a run starts
    from clusterbench.runners.devices import local_gpu

    devices = local_devices()
    if world.is_distributed and devices and devices[0].kind != "cpu":
        devices = [devices[local_gpu(world.local_rank)]]
    return devices
