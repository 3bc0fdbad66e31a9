"""Summary statistics of raw samples, computed the same way by every probe."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SampleSummary:
    n: int
    median: float
    mean: float
    min: float
    max: float
    p10: float
    p90: float
    stdev: float

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]), numpy's default method."""
    if not samples:
        raise ValueError("percentile of no samples")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100.0
    lower = math.floor(position)
    upper = math.ceil(position)
    if lower == upper:
        return float(ordered[lower])
    return float(ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower))


def summarize(samples: Sequence[float]) -> SampleSummary:
    if not samples:
        raise ValueError("cannot summarise an empty list of samples")
    values = [float(s) for s in samples]
    return SampleSummary(
        n=len(values),
        median=statistics.median(values),
        mean=statistics.fmean(values),
        min=min(values),
        max=max(values),
        p10=percentile(values, 10),
        p90=percentile(values, 90),
        stdev=statistics.stdev(values) if len(values) > 1 else 0.0,
    )
