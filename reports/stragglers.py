"""Stragglers: the devices, nodes and links that fall behind their peers on the same figure.

The rule is the judge's one peer-outlier rule (clusterbench.judge.peers: worse than the group's
median by more than the profile's `outlier_tolerance` AND by a robust z-score), so the stragglers a
report lists are the locations the peers verdicts fail. This module finds the groups to ask it about:
one figure per location, per device and per node, and the per-rank figures a job-level one keeps.

It judges nothing: reports call it to list the stragglers first and to mark them in plots.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

from clusterbench.judge import format_value, peer_standings
from clusterbench.metrics import METRICS
from clusterbench.model import Better, Location, Measurement, ParamValue

DEVICE, NODE = "device", "node"
# Figures a probe keeps per rank inside one job-level measurement: metric -> details key holding
# {rank: value} (the training probe's each rank's own median step time).
PER_RANK_DETAILS = {"train.step_time_ms": "rank_step_median_ms"}


@dataclass
class PeerGroup:
    """One figure (a metric at given params) as measured on each of several locations."""

    metric: str
    params: dict[str, ParamValue]
    unit: str
    better: Better
    # (host, device) -> value; a host-wide figure has device "node".
    values: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.metric}[{inner}]" if inner else self.metric

    def per_node(self) -> dict[str, float]:
        """Each host's median over its devices: a whole slow node shows here even when its own
        devices agree with each other."""
        by_host: dict[str, list[float]] = {}
        for (host, _device), value in self.values.items():
            by_host.setdefault(host, []).append(value)
        return {host: statistics.median(values) for host, values in by_host.items()}

    @property
    def spans_nodes(self) -> bool:
        """True when some host holds several devices, so a per-node view differs from the devices'."""
        return len({host for host, _ in self.values}) < len(self.values)


@dataclass(frozen=True)
class Straggler:
    metric: str
    params: dict[str, ParamValue]
    level: str  # DEVICE or NODE
    host: str
    device: str  # the device, or "node" at node level
    value: float
    median: float
    unit: str
    better: Better
    shortfall: float  # fraction of the median by which it is worse (positive)
    robust_z: float | None  # None when the peers' MAD is zero
    peers: int  # locations in the group, itself included

    @property
    def where(self) -> str:
        return self.host if self.level == NODE else f"{self.host}/{self.device}"

    @property
    def label(self) -> str:
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.metric}[{inner}]" if inner else self.metric

    @property
    def kind(self) -> str:
        """What was compared, in the plural: nodes, ranks, links or devices."""
        if self.level == NODE:
            return "nodes"
        return {"rank": "ranks", "link": "links"}.get(self.device.split(" ", 1)[0], "devices")

    def describe(self) -> str:
        relation = "below" if self.better is Better.HIGHER else "above"
        z = f", robust z {self.robust_z:.1f}" if self.robust_z is not None else ""
        return (
            f"{self.where}: {format_value(self.value, self.unit)}, {self.shortfall:.1%} {relation} the median "
            f"{format_value(self.median, self.unit)} of {self.peers} {self.kind}{z}"
        )


# A figure of the whole job (a collective over N ranks, a scaling or training group, a storage
# aggregate) is recorded at rank 0's location, but it belongs to no one location.
_JOB_DEVICE = re.compile(r"^(\d+ ranks\b|aggregate of )")


def is_job_level(location: Location) -> bool:
    return location.host == "*" or location.rank < 0 or bool(_JOB_DEVICE.match(location.device))


def peer_groups(measurements: list[Measurement]) -> list[PeerGroup]:
    """Measurements grouped by metric and params, one value per (host, device) location.

    Figures of the whole job belong to no one location and are left out; so is a group where
    several ranks measured one shared device (a CPU under local ranks): comparing them would blame
    noise, as the judge's peers check also refuses to.
    """
    groups: dict[tuple, PeerGroup] = {}
    duplicated: set[tuple] = set()
    for m in measurements:
        spec = METRICS.get(m.metric)
        if is_job_level(m.location) or (spec is not None and not spec.compared_across_locations):
            continue
        key = (m.metric, tuple(sorted((k, str(v)) for k, v in m.params.items())))
        group = groups.get(key)
        if group is None:
            group = groups[key] = PeerGroup(m.metric, dict(m.params), m.unit, spec.better if spec else Better.HIGHER)
        where = (m.location.host, m.location.device)
        if where in group.values:
            duplicated.add(key)
        group.values[where] = m.value
    return [group for key, group in groups.items() if key not in duplicated]


def per_rank_measurements(measurements: list[Measurement]) -> list[Measurement]:
    """The PER_RANK_DETAILS figures as one Measurement per rank, from the largest group that kept
    them (where the most ranks took part), so that a slow rank is found like a slow GPU. A rank's
    host is the one the figure's details name (`rank_hosts`), else where any other figure of that
    rank was measured ("rank N" where neither says)."""
    hosts = {m.location.rank: m.location.host for m in measurements if m.location.rank >= 0 and m.location.host != "*"}
    found: list[Measurement] = []
    for metric, key in PER_RANK_DETAILS.items():
        keeping = [m for m in measurements if m.metric == metric and isinstance(m.details.get(key), dict)]
        if not keeping:
            continue
        largest = max(keeping, key=lambda m: len(m.details[key]))
        named = largest.details.get("rank_hosts") or {}
        for rank_text, value in largest.details[key].items():
            rank = int(rank_text)
            where = Location(named.get(rank_text) or hosts.get(rank, f"rank {rank}"), rank, f"rank {rank}")
            found.append(Measurement(metric, float(value), largest.unit, dict(largest.params), where))
    return found


def _stragglers_of(group: PeerGroup, values: dict[tuple[str, str], float],
                   level: str, tolerance: float) -> list[Straggler]:
    standings = peer_standings(values, tolerance, group.better)
    return [
        Straggler(group.metric, group.params, level, host, device, standing.value, standing.median, group.unit,
                  group.better, standing.shortfall, standing.robust_z, len(values))
        for (host, device), standing in standings.items() if standing.outlier
    ]


def find_stragglers(measurements: list[Measurement], tolerance: float) -> list[Straggler]:
    """Every straggling node, then every straggling device, link or rank, worst first."""
    nodes: list[Straggler] = []
    devices: list[Straggler] = []
    for group in peer_groups(measurements):
        devices += _stragglers_of(group, group.values, DEVICE, tolerance)
        if group.spans_nodes:
            per_node = {(host, NODE): value for host, value in group.per_node().items()}
            nodes += _stragglers_of(group, per_node, NODE, tolerance)
    return sorted(nodes, key=_worst_first) + sorted(devices, key=_worst_first)


def _worst_first(straggler: Straggler) -> float:
    return -straggler.shortfall
