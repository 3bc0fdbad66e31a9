"""The data that crosses module boundaries: measurements, expectations, checks and verdicts.

Probes produce `Measurement`s, profiles produce `Expectation`s, the judge turns a pair of them into a
`Check`, and reports render all three. Everything here is plain data that serialises to JSON.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ParamValue = str | int | float | bool


class Verdict(str, enum.Enum):
    """The judgement of one check. Ordered from best to worst by `severity`."""

    PASS = "PASS"
    WARN = "WARN"
    NOT_MEASURED = "NOT MEASURED"
    FAIL = "FAIL"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @staticmethod
    def worst(verdicts: list[Verdict] | tuple[Verdict, ...]) -> Verdict | None:
        return max(verdicts, key=lambda v: v.severity) if verdicts else None


_SEVERITY = {Verdict.PASS: 0, Verdict.WARN: 1, Verdict.NOT_MEASURED: 2, Verdict.FAIL: 3}


class Better(str, enum.Enum):
    """Which direction of a metric is good."""

    HIGHER = "higher"
    LOWER = "lower"


class Provenance(str, enum.Enum):
    """Where an expected figure came from; it travels with every check into every report."""

    SPEC = "spec"  # vendor spec sheet
    ACHIEVABLE = "achievable"  # published achievable peak (e.g. mamf-finder, nccl-tests)
    BASELINE = "baseline"  # an earlier run of this cluster or its fleet
    CONTRACT = "contract"  # a figure agreed in a purchase or acceptance contract
    # Not profile provenances: checks that compare a device with its peers in this run, and
    # built-in rules that hold whatever the profile says (a collective must not corrupt data).
    PEERS = "peers"
    RULE = "rule"
    GOLDEN = "golden"  # the profile's [golden] node configuration
    HISTORY = "history"  # stored earlier runs of this cluster (--history, --compare)


PROFILE_PROVENANCES = (Provenance.SPEC, Provenance.ACHIEVABLE, Provenance.BASELINE, Provenance.CONTRACT)


@dataclass(frozen=True)
class Location:
    """Where a figure was measured: the host, the global rank, and the device on that host."""

    host: str
    rank: int = 0
    device: str = "cpu"  # "cuda:0", "cpu", or "node" for a figure that belongs to the whole host


def _location_json(location: Location) -> dict[str, Any]:
    return {"host": location.host, "rank": location.rank, "device": location.device}


@dataclass
class Measurement:
    """One figure a probe measured, with the raw samples it summarises.

    `value` is the headline figure in `unit`; `samples` are the raw per-iteration figures (same unit)
    from which it was derived, kept so that anyone can recompute or re-judge it. `details` holds
    probe-specific supporting data (per-shape tables, the engine used), JSON-serialisable.
    """

    metric: str
    value: float
    unit: str
    params: dict[str, ParamValue]
    location: Location
    samples: list[float] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def caveat(self) -> str | None:
        """The caveat the probe attached (details["caveat"], one string), or None: it travels with
        the figure into the check's message and every report."""
        caveat = self.details.get("caveat") if isinstance(self.details, dict) else None
        return caveat.strip() if isinstance(caveat, str) and caveat.strip() else None

    def to_json(self) -> dict[str, Any]:
        # Built by hand, not with asdict(): asdict deep-copies every sample and detail, which is
        # most of the time it takes to write the results of a run of thousands of GPUs.
        return {
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "params": self.params,
            "samples": self.samples,
            "details": self.details,
            **_location_json(self.location),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurement:
        fields = dict(data)
        location = Location(fields.pop("host"), fields.pop("rank"), fields.pop("device"))
        return cls(location=location, **fields)


@dataclass(frozen=True)
class Expectation:
    """What a profile says a metric should reach, and on what authority."""

    metric: str
    target: float
    unit: str
    better: Better
    tolerance: float  # FAIL beyond target * (1 -/+ tolerance)
    warn: float  # WARN in the band of this width (fraction of target) before the FAIL threshold
    provenance: Provenance
    source: str
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    required: bool = True
    origin: str = ""  # the profile file (and expect index) that stated it

    def matches(self, metric: str, params: Mapping[str, ParamValue]) -> bool:
        """True when a measurement of `metric` with `params` is what this expectation speaks of."""
        return metric == self.metric and all(params.get(k) == v for k, v in self.params.items())

    @property
    def fail_threshold(self) -> float:
        sign = -1.0 if self.better is Better.HIGHER else 1.0
        return self.target * (1.0 + sign * self.tolerance)

    @property
    def warn_threshold(self) -> float:
        sign = -1.0 if self.better is Better.HIGHER else 1.0
        return self.target * (1.0 + sign * (self.tolerance - self.warn))

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "params": dict(self.params),
            "target": self.target,
            "unit": self.unit,
            "better": self.better.value,
            "tolerance": self.tolerance,
            "warn": self.warn,
            "fail_threshold": self.fail_threshold,
            "provenance": self.provenance.value,
            "source": self.source,
            "required": self.required,
            "origin": self.origin,
        }


@dataclass
class Check:
    """A verdict on one measurement (or on its absence), with everything needed to explain it."""

    metric: str
    params: dict[str, ParamValue]
    verdict: Verdict
    observed: float | None
    target: float | None
    unit: str
    provenance: str
    source: str
    message: str
    better: Better = Better.HIGHER
    location: Location | None = None
    test: str = ""  # the pytest node id that produced it
    # True when this check alone makes the run fail: a FAIL, or a required figure not measured.
    blocking: bool = False

    def __post_init__(self) -> None:
        if self.verdict is Verdict.FAIL:
            self.blocking = True

    @property
    def margin(self) -> float | None:
        """Signed fraction by which observed beats (positive) or misses (negative) the target."""
        if self.observed is None or not self.target:
            return None
        margin = (self.observed - self.target) / abs(self.target)
        return margin if self.better is Better.HIGHER else -margin

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "params": self.params,
            "verdict": self.verdict.value,
            "observed": self.observed,
            "target": self.target,
            "unit": self.unit,
            "provenance": self.provenance,
            "source": self.source,
            "message": self.message,
            "better": self.better.value,
            "test": self.test,
            "blocking": self.blocking,
            "margin": self.margin,
            **(_location_json(self.location) if self.location is not None else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Check:
        """The inverse of to_json (the derived `margin` is recomputed, not read)."""
        fields = {k: v for k, v in data.items() if k not in ("margin", "host", "rank", "device")}
        location = Location(data["host"], data["rank"], data["device"]) if "host" in data else None
        fields["verdict"] = Verdict(fields["verdict"])
        fields["better"] = Better(fields.get("better", Better.HIGHER.value))
        return cls(location=location, **fields)


class NotMeasured(Exception):
    """Raised by a probe that could not measure: the reason becomes a NOT MEASURED verdict.

    Examples: fp8 on a device without fp8 matmul, pinned memory on a machine without a GPU,
    fio absent. The message must say why, in one line, so the report can show it as is.
    """


class ProbeFailed(Exception):
    """Raised by a probe that ran and found a failure rather than a figure: a storage target that is
    missing or full, data that read back wrong. It fails the test with its one-line message."""
