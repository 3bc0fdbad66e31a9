"""What identifies a stored run and a stored figure: a run's key and summary, a figure's series key
(the same figure across runs), and new run IDs."""

from __future__ import annotations

import datetime as dt
import functools
import json
import secrets
from dataclasses import dataclass
from typing import Any

from clusterbench.model import Measurement


@dataclass(frozen=True)
class StoredRun:
    """One stored run's key and summary, as `history list` shows it."""

    pk: int
    run_id: str
    cluster: str
    profile_name: str
    fingerprint: str
    toolkit_version: str
    quick: bool
    started_at: str
    finished_at: str | None
    verdict: str
    measurements: int = 0

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "pk"}
        return data


@dataclass(frozen=True)
class SeriesKey:
    """What makes two figures the same figure across runs. The host is left out on purpose: rank r
    on another node of the same hardware is still rank r's figure (see fingerprint.py)."""

    metric: str
    params: str  # canonical JSON
    rank: int
    device: str
    unit: str


def canonical_params(params: dict[str, Any]) -> str:
    return _canonical(tuple(sorted(params.items())))


@functools.lru_cache(maxsize=65536)
def _canonical(items: tuple) -> str:
    # Cached: a run of 10,000 figures has a few hundred distinct params, and json.dumps is slow.
    return json.dumps(dict(items), separators=(",", ":"))


def series_key(measurement: dict[str, Any]) -> SeriesKey:
    """The key of a measurement as results.json writes it."""
    return SeriesKey(
        measurement["metric"], canonical_params(measurement.get("params") or {}), int(measurement["rank"]),
        str(measurement["device"]), measurement["unit"],
    )


def measurement_series_key(m: Measurement) -> SeriesKey:
    """The same key from a Measurement (without to_json, whose deep copy of samples is slow)."""
    return SeriesKey(m.metric, canonical_params(m.params), m.location.rank, m.location.device, m.unit)


def new_run_id(started_at: str) -> str:
    """Sortable by time, unique without coordination: 20261129T025500Z-3f9a1c."""
    try:
        stamp = dt.datetime.fromisoformat(started_at).astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    except ValueError:
        stamp = "unknown"
    return f"{stamp}-{secrets.token_hex(3)}"
