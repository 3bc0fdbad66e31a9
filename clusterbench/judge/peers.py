"""The one peer-outlier rule: which locations fall behind their peers on the same figure, and by how much.

A location is an outlier when it is worse than the median of its peer group (itself included) by
more than `tolerance` (a fraction of that median) AND its modified z-score (0.6745 * |x - median| /
MAD, Iglewicz and Hoaglin) exceeds z_cut_off for the group's size. The tolerance keeps a tight fleet
from blaming noise (with a MAD of zero any difference is "significant", so the tolerance alone
decides; below MIN_Z_LOCATIONS locations too); the z-score keeps a naturally spread figure from
blaming its slower half. The verdicts
(judge_peers), the report's straggler list and the pairwise test's slow pairs all ask this rule, so
they cannot disagree.

The median is the group's, not each location's leave-one-out median: with two ranks at 10 and one at
45, the peers of each 10 are {10, 45}, whose median 27.5 would blame both for a fast third.
"""

from __future__ import annotations

import statistics
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from clusterbench.judge.formatting import format_value
from clusterbench.model import Better, Check, Measurement, Provenance, Verdict

MIN_LOCATIONS = 3  # below three there is no telling which one is the odd one out
# Below five locations the MAD says nothing of a figure's natural spread (of three values it is the
# distance to the nearer neighbour): the tolerance alone decides there, as it does when the MAD is 0.
MIN_Z_LOCATIONS = 5
Z_THRESHOLD = 3.5  # Iglewicz and Hoaglin's cut-off for the modified z-score
# Over thousands of locations, plain noise passes 3.5 sigma a few times (1 in 4,300 for a normal
# spread): the cut-off rises with the group so that noise alone names an outlier in fewer than 1
# group in 20 (the normal quantile of 1 - 0.05 / n; 4.4 at 8,192 devices).
FALSE_ALARM_PER_GROUP = 0.05
MAD_TO_SIGMA = 0.6745  # the modified z-score's scale: MAD of a normal distribution / its sigma

Where = TypeVar("Where", bound=Hashable)


def z_cut_off(locations: int) -> float:
    """The robust z-score an outlier must exceed in a group of `locations`."""
    return max(Z_THRESHOLD, statistics.NormalDist().inv_cdf(1 - FALSE_ALARM_PER_GROUP / locations))


@dataclass(frozen=True)
class PeerStanding:
    """One location's figure beside its peer group's."""

    value: float
    median: float  # of the whole group
    shortfall: float  # fraction of the median by which it is worse; negative when better
    robust_z: float | None  # signed like `shortfall`; None when the group's MAD is zero
    outlier: bool


@dataclass(frozen=True)
class PeerYardstick:
    """A peer group's median and spread, and the rule's two thresholds, to place any value against."""

    median: float
    mad: float
    locations: int
    tolerance: float
    better: Better

    @classmethod
    def of(cls, values: list[float], tolerance: float, better: Better,
           min_locations: int = MIN_LOCATIONS) -> PeerYardstick | None:
        """None for a group too small to name an odd one out (fewer than `min_locations`)."""
        if len(values) < min_locations:
            return None
        median = statistics.median(values)
        mad = statistics.median(abs(v - median) for v in values)
        return cls(median, mad, len(values), tolerance, better)

    @property
    def z_cut_off(self) -> float:
        return z_cut_off(self.locations)

    def standing(self, value: float) -> PeerStanding:
        worse_by = (self.median - value) if self.better is Better.HIGHER else (value - self.median)
        # A fraction of a zero median is meaningless (error counts): never an outlier here; the
        # judge's must-be-zero checks handle those.
        shortfall = worse_by / abs(self.median) if self.median else 0.0
        robust_z = MAD_TO_SIGMA * worse_by / self.mad if self.mad > 0 and self.locations >= MIN_Z_LOCATIONS else None
        outlier = shortfall > self.tolerance and (robust_z is None or robust_z > self.z_cut_off)
        return PeerStanding(value, self.median, shortfall, robust_z, outlier)


def peer_standings(values: Mapping[Where, float], tolerance: float, better: Better) -> dict[Where, PeerStanding]:
    """Each location's standing in its group; empty below MIN_LOCATIONS locations."""
    yardstick = PeerYardstick.of(list(values.values()), tolerance, better)
    if yardstick is None:
        return {}
    return {where: yardstick.standing(value) for where, value in values.items()}


def judge_peers(measurements: list[Measurement], tolerance: float, better: Better) -> list[Check]:
    """Name each device that falls behind its peers by the rule above; PASS the others.

    This needs no profile figure: on a node of eight identical GPUs the slow one is visible from the
    other seven alone. It needs MIN_LOCATIONS measurements, and distinct devices: several ranks that
    share one CPU measure the same hardware, so comparing them would blame noise.
    """
    devices = {(m.location.host, m.location.device) for m in measurements}
    if len(devices) < len(measurements):
        return []
    standings = peer_standings(dict(enumerate(m.value for m in measurements)), tolerance, better)
    if not standings:
        return []
    cut_off = z_cut_off(len(measurements))
    rule = f"outlier beyond {tolerance:.0%} and a robust z-score of {cut_off:.1f}"
    checks = []
    for index, measurement in enumerate(measurements):
        standing = standings[index]
        relation = "behind" if standing.shortfall > 0 else "ahead of"
        z = f", robust z {standing.robust_z:.1f}" if standing.robust_z is not None and standing.shortfall > 0 else ""
        message = (
            f"{measurement.location.host}/{measurement.location.device} at "
            f"{format_value(measurement.value, measurement.unit)} is "
            f"{abs(standing.shortfall):.1%} {relation} the median "
            f"{format_value(standing.median, measurement.unit)} of the {len(measurements)} peers{z} ({rule})"
        )
        checks.append(
            Check(
                metric=measurement.metric,
                params=dict(measurement.params),
                verdict=Verdict.FAIL if standing.outlier else Verdict.PASS,
                observed=measurement.value,
                target=standing.median,
                unit=measurement.unit,
                provenance=Provenance.PEERS.value,
                source=f"median of {len(measurements)} peer devices in this run, outlier_tolerance {tolerance:.0%}, "
                       f"robust z-score above {cut_off:.1f}",
                message=message,
                better=better,
                location=measurement.location,
            )
        )
    return checks
