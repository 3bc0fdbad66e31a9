"""metrics.prom: every figure and verdict of a run as Prometheus gauges, for node_exporter's textfile collector.

The file is in the Prometheus text exposition format (0.0.4), the one node_exporter's
`--collector.textfile.directory` reads: point it at the report directory, or copy the file there.
Each figure is a gauge named after its metric (`gemm.tflops` -> `clusterbench_gemm_tflops`) with
the cluster, host, device, rank and the figure's params as labels; each check is a
`clusterbench_check_verdict` sample of 1 with its verdict as a label (plus its observed and target
figures); the run's verdict is `clusterbench_run_verdict`. Nothing is measured or judged here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from clusterbench.metrics import METRICS
from clusterbench.model import Check, Location, Measurement
from clusterbench.results import RunResults

METRICS_FILENAME = "metrics.prom"
PREFIX = "clusterbench_"
# Labels every sample carries; a param of the same name is written as param_<name>.
FIXED_LABELS = ("cluster", "host", "device", "rank", "metric", "unit", "verdict")


@dataclass
class _Family:
    name: str
    help: str
    samples: dict[tuple[tuple[str, str], ...], float]


def _name(text: str) -> str:
    """A valid Prometheus metric or label name: [a-zA-Z_][a-zA-Z0-9_]*."""
    name = re.sub(r"[^a-zA-Z0-9_]", "_", text)
    return name if re.match(r"[a-zA-Z_]", name) else f"_{name}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _where(location: Location | None) -> dict[str, str]:
    if location is None:
        return {"host": "", "device": "", "rank": ""}
    return {"host": location.host, "device": location.device, "rank": str(location.rank)}


def _param_labels(params: dict) -> dict[str, str]:
    labels = {}
    for key, value in sorted(params.items()):
        name = _name(str(key))
        labels[f"param_{name}" if name in FIXED_LABELS else name] = str(value)
    return labels


def _add(families: dict[str, _Family], name: str, help_text: str, labels: dict[str, str], value: float) -> None:
    family = families.setdefault(name, _Family(name, help_text, {}))
    # A series appears once: node_exporter rejects a file that repeats a name with the same labels.
    family.samples.setdefault(tuple(sorted(labels.items())), value)


def _measurement_help(m: Measurement) -> str:
    spec = METRICS.get(m.metric)
    description = f": {spec.description}" if spec is not None else ""
    return f"clusterbench figure {m.metric} in {m.unit}{description}"


def _figures(families: dict[str, _Family], cluster: str, measurements: Iterable[Measurement]) -> None:
    for m in measurements:
        labels = {"cluster": cluster, **_where(m.location), **_param_labels(m.params)}
        _add(families, PREFIX + _name(m.metric), _measurement_help(m), labels, m.value)


def _checks(families: dict[str, _Family], cluster: str, checks: Iterable[Check]) -> None:
    for c in checks:
        labels = {"cluster": cluster, "metric": c.metric, **_where(c.location), **_param_labels(c.params)}
        _add(families, PREFIX + "check_verdict", "clusterbench check: 1, with the verdict as a label",
             {**labels, "verdict": c.verdict.value, "unit": c.unit}, 1.0)
        if c.observed is not None:
            _add(families, PREFIX + "check_observed", "clusterbench check: the figure judged, in its unit label",
                 {**labels, "unit": c.unit}, c.observed)
        if c.target is not None:
            _add(families, PREFIX + "check_target", "clusterbench check: the expected figure, in its unit label",
                 {**labels, "unit": c.unit}, c.target)


def render_openmetrics(results: RunResults) -> str:
    """The run as Prometheus text: one family per figure's metric, then the checks, then the run."""
    cluster = results.run.cluster
    families: dict[str, _Family] = {}
    _figures(families, cluster, results.measurements)
    _checks(families, cluster, results.checks)
    _add(families, PREFIX + "run_verdict", "clusterbench run: 1, with the run's verdict as a label",
         {"cluster": cluster, "verdict": results.verdict}, 1.0)
    lines: list[str] = []
    for family in families.values():
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} gauge")
        for labels, value in family.samples.items():
            text = ",".join(f'{key}="{_escape_label(val)}"' for key, val in labels)
            lines.append(f"{family.name}{{{text}}} {_format_value(value)}")
    return "\n".join(lines) + "\n"
