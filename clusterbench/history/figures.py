"""Which figures of a run the history compares, trends and calibrates, shared by those three."""

from __future__ import annotations

import json
from typing import TypeVar

from clusterbench.metrics import METRICS

Group = TypeVar("Group")


def is_performance_figure(metric: str) -> bool:
    """Performance figures only: health readings and error counts (zero wrong elements, ECC) keep
    their fixed rules; "what this cluster happened to read last week" would only weaken them."""
    spec = METRICS.get(metric)
    return spec is not None and spec.family != "health" and spec.unit != "count"


def at_largest_sweep_point(groups: dict[tuple[str, str], Group]) -> dict[tuple[str, str], Group]:
    """Of groups keyed by (metric, canonical params JSON), a sweep's (message sizes) only at its
    largest point, where a fabric reaches its bandwidth and where expectations judge it."""
    largest: dict[tuple[str, str], float] = {}
    rest_of: dict[tuple[str, str], tuple[tuple[str, str], float]] = {}
    for metric, params in groups:
        sweep = METRICS[metric].judged_at_max
        if sweep is None:
            continue
        decoded = json.loads(params)
        rest = (metric, json.dumps({k: v for k, v in decoded.items() if k != sweep}, sort_keys=True))
        size = decoded.get(sweep, 0)
        rest_of[(metric, params)] = (rest, size)
        largest[rest] = max(largest.get(rest, float("-inf")), size)
    return {
        key: group for key, group in groups.items()
        if key not in rest_of or rest_of[key][1] == largest[rest_of[key][0]]
    }
