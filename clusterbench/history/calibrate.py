"""Calibration: a run on a known-good cluster becomes a profile that says "this is what it does".

Each figure the run measured becomes an expectation with provenance `baseline`, its target the
measured figure (the median over devices), its tolerance the stated margin: the threshold lies that
fraction below a throughput (above a latency). Where the run's own raw samples spread wider than the
margin allows, the tolerance is widened to 3 robust deviations of them and the source says so,
because a threshold inside a figure's own noise would fail the very cluster it was taken from.

The written file loads with --cluster OUT.toml (it is checked by loading it back) and keeps the
run's cluster name, settings and storage targets, so that the same params are measured again.

Storage expectations name their target only where the run measured several (then the target is
what tells /scratch's figures from /home's). With one target, the path (resolved: the calibrating
checkout's absolute directory) is left out, so that the profile judges whatever target a later run
measures: from another checkout, or on another machine of the same kind with --storage-target.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterbench.errors import ClusterbenchError
from clusterbench.history.figures import at_largest_sweep_point, is_performance_figure
from clusterbench.history.keys import canonical_params
from clusterbench.history.noise import robust_sigma
from clusterbench.judge import format_value
from clusterbench.metrics import METRICS
from clusterbench.model import Better, Measurement
from clusterbench.profile import KNOWN_DTYPES, Profile, Settings, StorageSettings

DEFAULT_MARGIN = 0.10
NOISE_K = 3.0
MAX_TOLERANCE = 0.9  # profile tolerances are fractions below 1
STORAGE_TARGET_PARAM = "target"


class CalibrationError(ClusterbenchError):
    pass


@dataclass(frozen=True)
class CalibratedFigure:
    metric: str
    params: dict[str, Any]
    target: float
    unit: str
    better: Better
    tolerance: float
    source: str


def _profile_params(m: Measurement) -> dict[str, Any] | None:
    """The measurement's params a profile may state, or None when a value could not be stated."""
    allowed = METRICS[m.metric].params
    params = {k: v for k, v in m.params.items() if k in allowed}
    if "dtype" in params and params["dtype"] not in KNOWN_DTYPES:
        return None
    return params


def _portable_params(params: dict[str, Any], pin_target: bool) -> dict[str, Any]:
    """Storage params without the target's path unless several targets must be told apart."""
    return params if pin_target else {k: v for k, v in params.items() if k != STORAGE_TARGET_PARAM}


def _unpinned(group: list[Measurement], params: dict[str, Any]) -> str:
    """Where a storage figure whose target was left out of its params was measured, for its source."""
    targets = sorted({str(m.params[STORAGE_TARGET_PARAM]) for m in group if STORAGE_TARGET_PARAM in m.params})
    if not targets or STORAGE_TARGET_PARAM in params:
        return ""
    return f", on storage target {', '.join(targets)}; judges whichever target a run measures"


def calibrated_figures(measurements: list[Measurement], margin: float, run_id: str, date: str,
                       storage_targets: int = 1) -> list[CalibratedFigure]:
    """One figure per metric and params; a sweep only at its largest point, where it is judged.
    `storage_targets`: how many storage targets the run measured (more than one: each figure names its own)."""
    groups: dict[tuple[str, str], list[Measurement]] = {}
    params_of: dict[tuple[str, str], dict[str, Any]] = {}
    for m in measurements:
        if not is_performance_figure(m.metric) or not math.isfinite(m.value):
            continue
        params = _profile_params(m)
        if params is None:
            continue
        params = _portable_params(params, pin_target=storage_targets > 1)
        key = (m.metric, canonical_params(params))
        groups.setdefault(key, []).append(m)
        params_of[key] = params
    figures = []
    for key, group in sorted(at_largest_sweep_point(groups).items()):
        metric = key[0]
        spec = METRICS[metric]
        target = float(f"{statistics.median(m.value for m in group):.6g}")
        if target <= 0 and spec.better is Better.HIGHER:
            continue  # a throughput of zero is no baseline
        spread = max((robust_sigma(m.samples) / abs(m.value) for m in group if m.samples and m.value), default=0.0)
        tolerance = min(MAX_TOLERANCE, max(margin, math.ceil(NOISE_K * spread * 100) / 100))
        how = f"margin {margin:.0%}" if tolerance == margin else (
            f"margin widened from {margin:.0%} to {tolerance:.0%}: {NOISE_K:g} robust "
            "deviations of the run's raw samples")
        where = (f"median of {len(group)} figures" if len(group) > 1
                 else f"on {group[0].location.host}/{group[0].location.device}")
        source = (f"run {run_id} on {date}: measured {format_value(target, spec.unit)} "
                  f"({where}{_unpinned(group, params_of[key])}); {how}")
        figures.append(CalibratedFigure(metric, params_of[key], target, spec.unit, spec.better, tolerance, source))
    return figures


# -- a small TOML writer: profiles hold strings, numbers, booleans, arrays and inline tables ---------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CalibrationError(f"cannot write {value} in a profile")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + "}"
    raise CalibrationError(f"cannot write {type(value).__name__} {value!r} in a profile")


def _table(name: str, values: dict[str, Any]) -> list[str]:
    return [f"[{name}]", *(f"{_key(k)} = {_value(v)}" for k, v in values.items()), ""]


def _non_default(obj: Any, defaults: Any) -> dict[str, Any]:
    """The settings that differ from their defaults: only what the profile chose is repeated."""
    return {
        f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
        if getattr(obj, f.name) != getattr(defaults, f.name) and getattr(obj, f.name) is not None
    }


def profile_text(profile: Profile, figures: list[CalibratedFigure], run_id: str, date: str, fingerprint: str,
                 margin: float,
                 storage: StorageSettings | None = None) -> str:
    """`storage`: the [storage] the run measured with (the profile's, or --storage-target's targets)."""
    cluster = profile.cluster
    lines = [
        f"# Calibrated by clusterbench from run {run_id} ({date}) of cluster '{cluster.name}',",
        f"# hardware fingerprint {fingerprint}: every expectation is a figure that run measured,",
        f"# with a tolerance of {margin:.0%} unless the figure's own noise needed more (see each source).",
        "",
        *_table("cluster", {
            "name": cluster.name, "nodes": cluster.nodes, "accelerators_per_node": cluster.accelerators_per_node,
            "accelerator": cluster.accelerator,
            "description": f"baseline of {cluster.name} calibrated from run {run_id}",
            # The host list too, so the calibrated profile still fails a run that misses a named node.
            **({"hosts": cluster.hosts} if cluster.hosts else {}),
        }),
    ]
    settings = _non_default(profile.settings, Settings())
    if settings:
        lines += _table("settings", settings)
    storage_table = _non_default(storage or profile.storage, StorageSettings())
    if storage_table:
        lines += _table("storage", storage_table)
    if profile.golden:
        lines += _table("golden", profile.golden)
    for figure in figures:
        lines += [
            "[[expect]]",
            f"metric = {_value(figure.metric)}",
            *([f"params = {_value(figure.params)}"] if figure.params else []),
            f"target = {_value(figure.target)}",
            f"unit = {_value(figure.unit)}",
            f"better = {_value(figure.better.value)}",
            f"tolerance = {_value(figure.tolerance)}",
            f"warn = {_value(round(figure.tolerance / 2, 4))}",
            'provenance = "baseline"',
            f"source = {_value(figure.source)}",
            "",
        ]
    return "\n".join(lines)


def run_storage_settings(profile: Profile, storage_targets: tuple[str, ...]) -> StorageSettings:
    """The [storage] a run measured with: --storage-target's targets replace the profile's, as the
    run itself does (AcceptanceRun.storage), and `shared` keeps only targets still measured."""
    if not storage_targets:
        return profile.storage
    shared = tuple(t for t in profile.storage.shared if t in storage_targets)
    return dataclasses.replace(profile.storage, targets=tuple(storage_targets), shared=shared)


def write_calibrated_profile(
    path: Path, profile: Profile, measurements: list[Measurement], *, run_id: str, date: str, fingerprint: str,
    margin: float,
    storage_targets: tuple[str, ...] = (),
) -> int:
    """Write the profile and load it back (so a file that would not load is never left); returns
    how many expectations it holds. `storage_targets`: the run's --storage-target, if any."""
    from clusterbench.catalog import resolve_cluster

    storage = run_storage_settings(profile, storage_targets)
    figures = calibrated_figures(measurements, margin, run_id, date, storage_targets=len(storage.targets))
    if not figures:
        raise CalibrationError(f"{path}: not written: the run measured no figure to calibrate")
    text = profile_text(profile, figures, run_id, date, fingerprint, margin, storage)
    temporary = path.absolute().with_name(f".{path.stem}.tmp.toml")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(text, encoding="utf-8")
        resolve_cluster(str(temporary), path.parent)  # raises ProfileError if it would not load
        temporary.replace(path)
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot write the calibrated profile: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return len(figures)
