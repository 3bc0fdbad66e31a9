"""Cluster profiles: what a cluster is and what it must deliver, as the typed values every later
stage reads.

clusterbench.profile_loader reads a profile's TOML file, merges it with the profiles it extends and
validates it into these values, so that every later stage can trust them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from clusterbench.hostlist import expand_hostlist
from clusterbench.model import Expectation, ParamValue

# The dtypes a `dtype` param may name, in every metric that takes one.
KNOWN_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "fp64", "int8")


@dataclass(frozen=True)
class ClusterInfo:
    name: str
    nodes: int = 1
    accelerators_per_node: int = 0
    accelerator: str = "unknown"
    description: str = ""
    # What one accelerator costs per hour, for the training probe's cost per million tokens.
    price_per_accelerator_hour: float | None = None
    currency: str = ""  # ISO 4217 code of that price, e.g. "USD"
    # The hosts the cluster is made of, as a Slurm hostlist ("gpu[001-016]"); "" names none. A run
    # that spans fewer than `nodes` nodes, or misses a named host, fails (judge.judge_cluster).
    hosts: str = ""

    def host_names(self) -> list[str]:
        """`hosts` expanded (validated when the profile was read, so this does not raise)."""
        return expand_hostlist(self.hosts) if self.hosts else []


@dataclass(frozen=True)
class Settings:
    """Run-wide knobs a profile may set; each has a default that suits a single node."""

    # A device is an outlier when it falls this fraction below the median of its peers.
    outlier_tolerance: float = 0.05
    # A collective that has not completed after this many seconds fails on every surviving rank.
    collective_timeout_s: float = 300.0
    # Ranks started on one host when plain pytest runs the collective probes on a CPU.
    local_ranks: int = 2
    # The training probe's model ("auto": tiny on a CPU, small for a quick GPU run, 1b otherwise)
    # and how it spreads over ranks: "ddp" (replicas) or "fsdp" (FSDP2, sharded).
    training_preset: str = "auto"
    training_parallel: str = "ddp"
    # History comparison (--compare): a figure regresses only when it is worse than the stored
    # baseline by more than regression_min_effect (a fraction) AND by more than regression_noise_k
    # robust standard deviations of the window; a window needs regression_min_runs stored runs.
    regression_min_effect: float = 0.05
    regression_noise_k: float = 3.0
    regression_min_runs: int = 5
    regression_verdict: str = "fail"  # what a regression is: "fail" (blocks the run) or "warn"
    # Burn-in: seconds of sustained GEMM per device (--quick caps it, see probes/burnin.py).
    burnin_s: float = 60.0
    # The vendors' own tools as second opinions where a node has them: nccl-tests' binaries (a
    # folder; "" searches PATH), DCGM's diagnostic level (dcgmi diag -r N; 0 skips it), and how far
    # our figure may differ from theirs before a WARN names both.
    nccl_tests_dir: str = ""
    dcgm_diag_level: int = 1
    second_opinion_tolerance: float = 0.10


StorageEngine = Literal["auto", "fio", "python"]


@dataclass(frozen=True)
class StorageSettings:
    """Where the storage probes work ([storage]): each target is a directory that the probe makes its
    own fresh subdirectory in and removes afterwards. The default is the current directory."""

    targets: tuple[str, ...] = (".",)
    working_size_bytes: int | None = None  # cap on the bytes held on disk at once; None: the probe's plan
    engine: StorageEngine = "auto"  # "auto" (fio where installed), "fio" or "python"
    # "all": every rank measures (a shared filesystem under load from every GPU's process);
    # "one-per-node": each node's first rank only (node-local disks, or one client per node).
    ranks: str = "all"
    # Targets every rank of the job sees as one directory (a shared filesystem). Under a launcher the
    # checkpoint figures of these are one sharded checkpoint written by all measuring ranks together
    # through torch.distributed.checkpoint, as sharded training saves; elsewhere each rank saves its own.
    shared: tuple[str, ...] = ()


STORAGE_ENGINES: tuple[StorageEngine, ...] = ("auto", "fio", "python")
STORAGE_RANKS = ("all", "one-per-node")


@dataclass(frozen=True)
class ProfileFile:
    """One file of the extends chain, kept verbatim so a report can prove what was used."""

    path: str
    sha256: str
    text: str


@dataclass(frozen=True)
class Profile:
    cluster: ClusterInfo
    settings: Settings
    expectations: tuple[Expectation, ...]
    files: tuple[ProfileFile, ...] = ()  # the profile first, then what it extends, in order
    golden: dict[str, Any] = field(default_factory=dict)  # pinned node configuration ([golden])
    storage: StorageSettings = field(default_factory=StorageSettings)
    notes: tuple[str, ...] = field(default_factory=tuple)  # e.g. how the local profile was derived

    def expectations_for(self, metric: str, params: dict[str, ParamValue] | None = None) -> list[Expectation]:
        """Expectations on `metric` that agree with `params` on every key both of them name."""
        params = params or {}
        return [
            e
            for e in self.expectations
            if e.metric == metric and all(params.get(k, v) == v for k, v in e.params.items())
        ]
