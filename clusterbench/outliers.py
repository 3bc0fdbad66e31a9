"""Stragglers: the devices, nodes and links that fall behind their peers on the same figure.

The rule is robust, so that one bad device cannot hide itself by dragging the average: a location is
a straggler when it is worse than the median of its peer group by more than the profile's
`outlier_tolerance` (a fraction of the median, as the peers check of the judge uses) AND its modified
z-score (0.6745 * |x - median| / MAD, Iglewicz and Hoaglin) exceeds Z_THRESHOLD (more in groups of
thousands, see z_cut_off). The tolerance keeps
a tight fleet from blaming noise (a MAD of zero makes any difference "significant"); the z-score
keeps a naturally spread figure from blaming its slower half.

It judges nothing: reports call it to list the stragglers first and to mark them in plots.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

from clusterbench.judge import format_value
from clusterbench.metrics import METRICS
from clusterbench.model import Better, Location, Measurement, ParamValue

MIN_PEERS = 3  # below three there is no telling which one is the odd one out
Z_THRESHOLD = 3.5  # Iglewicz and Hoaglin's cut-off for the modified z-score
# Over thousands of locations, plain noise passes 3.5 sigma a few times (1 in 4,300 for a normal
# spread): the cut-off rises with the group so that noise alone names a straggler in fewer than 1
# group in 20 (the normal quantile of 1 - 0.05 / n; 4.4 at 8,192 devices).
FALSE_ALARM_PER_GROUP = 0.05
MAD_TO_SIGMA = 0.6745  # the modified z-score's scale: MAD of a normal distribution / its sigma
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
        if is_job_level(m.location):
            continue
        key = (m.metric, tuple(sorted((k, str(v)) for k, v in m.params.items())))
        group = groups.get(key)
        if group is None:
            spec = METRICS.get(m.metric)
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


def z_cut_off(locations: int) -> float:
    """The robust z-score a straggler must exceed in a group of `locations`."""
    return max(Z_THRESHOLD, statistics.NormalDist().inv_cdf(1 - FALSE_ALARM_PER_GROUP / locations))


def _stragglers_of(group: PeerGroup, values: dict[tuple[str, str], float], level: str, tolerance: float) -> list[Straggler]:
    if len(values) < MIN_PEERS:
        return []
    median = statistics.median(values.values())
    if median == 0:
        return []  # a fraction of zero is meaningless (error counts): the judge handles those
    mad = statistics.median(abs(v - median) for v in values.values())
    z_threshold = z_cut_off(len(values))
    found = []
    for (host, device), value in values.items():
        worse_by = (median - value) if group.better is Better.HIGHER else (value - median)
        shortfall = worse_by / abs(median)
        if shortfall <= tolerance:
            continue
        robust_z = MAD_TO_SIGMA * worse_by / mad if mad > 0 else None
        if robust_z is not None and robust_z <= z_threshold:
            continue
        found.append(
            Straggler(group.metric, group.params, level, host, device, value, median, group.unit, group.better,
                      shortfall, robust_z, len(values))
        )
    return found


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
