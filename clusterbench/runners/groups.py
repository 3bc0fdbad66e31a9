"""The groups of ranks a run measures on: node leaders, scaling groups, and their process groups."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch.distributed as dist


def node_leaders(hosts: dict[int, str]) -> dict[str, int]:
    """The first rank of each host, by host, in the order of those ranks: the rank that measures for its
    node (storage `one-per-node`), links nodes pairwise, and stands for its node in a scaling group."""
    leaders: dict[str, int] = {}
    for rank in sorted(hosts):
        leaders.setdefault(hosts[rank], rank)
    return leaders


Pair = tuple[str, str]


def first_pass_pairs(nodes: list[str]) -> list[Pair]:
    """Pair nodes off in order; with an odd count the last one is paired with the first node."""
    pairs = [(nodes[i], nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)]
    if len(nodes) % 2 and len(nodes) > 1:
        pairs.append((nodes[-1], nodes[0]))
    return pairs


def subgroup(ranks: Iterable[int], timeout_s: float) -> dist.ProcessGroup:
    """A process group of `ranks`, made on every rank of the world, in the same order (torch requires
    it). With the run's deadline: torch's default (30 minutes for Gloo) would hold the survivors of a
    dead rank for that long."""
    import torch.distributed as dist

    return dist.new_group(list(ranks), timeout=timedelta(seconds=timeout_s))


@dataclass(frozen=True)
class ScalingGroup:
    """A group of ranks the all_reduce is swept on (or trained on), to show how a figure changes with scale."""

    ranks: tuple[int, ...]
    span: str  # "intra-node" when every member shares a host, else "inter-node"; "single" for one rank


def scaling_groups(hosts: dict[int, str]) -> list[ScalingGroup]:
    """Groups of 2, 4, 8, ... ranks up to the world; then one node's ranks alone, and one rank per
    node alone, so intra-node and inter-node bandwidth are shown apart. Every group includes rank 0."""
    world = sorted(hosts)
    sizes = [2 ** i for i in range(1, len(world).bit_length()) if 2 ** i < len(world)] + [len(world)]
    candidates = [tuple(world[:k]) for k in sizes if k >= 2]
    candidates.append(tuple(r for r in world if hosts[r] == hosts[world[0]]))
    candidates.append(tuple(node_leaders(hosts).values()))
    groups: list[ScalingGroup] = []
    for ranks in candidates:
        if len(ranks) >= 2 and ranks not in [g.ranks for g in groups]:
            span = "intra-node" if len({hosts[r] for r in ranks}) == 1 else "inter-node"
            groups.append(ScalingGroup(tuple(ranks), span))
    return groups
