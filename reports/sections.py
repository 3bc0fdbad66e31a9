"""The HTML report's body: one section per probe family (its checks, its figures, its plots), the
scaling section and the trends, built from a RunResults.

Every list here is bounded, so that a run of thousands of devices renders in seconds into a page a
laptop opens: check tables show the problems (all of them up to MAX_CHECK_ROWS), and a per-figure
summary (count, min, median, max) stands for the thousands of passing rows.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from clusterbench.judge import Scope, format_value
from clusterbench.metrics import FAMILIES, METRICS
from clusterbench.model import Better, Check, Measurement, Verdict
from clusterbench.reports import plots
from clusterbench.reports.copy_matrix import METRIC as COPY_MATRIX_METRIC
from clusterbench.reports.copy_matrix import copy_matrix_plots
from clusterbench.reports.overview import CheckRow, problem_checks
from clusterbench.reports.scaling import ScalingSeries, scaling_series
from clusterbench.reports.stragglers import NODE, Straggler, peer_groups, per_rank_measurements
from clusterbench.results import RunResults, Trend, TrendPoint

MAX_CHECK_ROWS = 200
MAX_FIGURE_ROWS = 200
FAMILY_TITLES = {
    "compute": "Compute (GEMM)",
    "memory": "Memory bandwidth",
    "network": "Network and collectives",
    "storage": "Storage and checkpoints",
    "training": "Training",
    "health": "Node health",
    "site": "Site checks",
    "other": "Other checks",
}
# Families whose per-location figures are drawn as bars (health figures are counts and gauges,
# network figures are the job's own, drawn against message size instead).
BAR_FAMILIES = ("compute", "memory", "training")
STORAGE_IOPS = ("storage.randread_iops", "storage.randwrite_iops", "storage.metadata_ops")
STORAGE_GBPS = ("storage.seqread_gbps", "storage.seqwrite_gbps", "checkpoint.save_gbps", "checkpoint.load_gbps")
LATENCY_PERCENTILES = ("p50", "p99", "p99.9")


def family_of(metric: str) -> str:
    spec = METRICS.get(metric)
    if spec is not None:
        return spec.family
    return "health" if metric.startswith(("node.", "gpu.")) else "other"


def _params_key(params: dict[str, Any], without: tuple[str, ...] = ()) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in params.items() if k not in without))


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


@dataclass(frozen=True)
class Plot:
    title: str
    svg: Markup
    caption: str = ""


@dataclass(frozen=True)
class CheckGroup:
    """The checks of one metric at one set of params, summarised."""

    metric: str
    params: str
    counts: dict[str, int]
    observed: str  # min / median / max of the observed figures
    target: str
    provenance: str


@dataclass(frozen=True)
class FigureRow:
    """One measured figure, or the spread of one figure over several locations."""

    metric: str
    params: str
    where: str
    median: str
    low: str
    high: str
    locations: int
    caveat: str = ""  # the caveats its figures carry, joined with "; "


@dataclass
class FamilySection:
    key: str
    title: str
    counts: dict[str, int]
    check_groups: list[CheckGroup]
    check_rows: list[CheckRow]
    checks_left_out: int
    figures: list[FigureRow]
    figures_left_out: int
    plots: list[Plot] = field(default_factory=list)

    @property
    def worst(self) -> str:
        present = [Verdict(v) for v, n in self.counts.items() if n]
        worst = Verdict.worst(present)
        return worst.value if worst else "NO EXPECTATION"


def _spread(values: list[float], unit: str) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return format_value(values[0], unit)
    return " / ".join(format_value(v, unit) for v in (min(values), statistics.median(values), max(values)))


def _check_groups(checks: list[Check]) -> list[CheckGroup]:
    groups: dict[tuple, list[Check]] = {}
    for check in checks:
        groups.setdefault((check.metric, _params_key(check.params), check.provenance), []).append(check)
    rows = []
    for (metric, _, provenance), group in groups.items():
        counts = Counter(c.verdict.value for c in group)
        targets = sorted({c.target for c in group if c.target is not None})
        target = (format_value(targets[0], group[0].unit) if len(targets) == 1
                  else f"{len(targets)} targets" if targets else "-")
        rows.append(
            CheckGroup(metric, _params_text(group[0].params), dict(counts),
                       _spread([c.observed for c in group if c.observed is not None], group[0].unit), target,
                       provenance)
        )
    return rows


def _figure_rows(measurements: list[Measurement]) -> list[FigureRow]:
    """A row per figure; a sweep (message sizes) at its largest point, as the judge reads it."""
    largest: dict[tuple, Any] = {}
    for m in measurements:
        sweep = METRICS[m.metric].judged_at_max if m.metric in METRICS else None
        if sweep and sweep in m.params:
            key = (m.metric, _params_key(m.params, (sweep,)))
            largest[key] = max(largest.get(key, m.params[sweep]), m.params[sweep])
    groups: dict[tuple, list[Measurement]] = {}
    for m in measurements:
        sweep = METRICS[m.metric].judged_at_max if m.metric in METRICS else None
        if sweep and sweep in m.params and m.params[sweep] != largest[(m.metric, _params_key(m.params, (sweep,)))]:
            continue
        groups.setdefault((m.metric, _params_key(m.params)), []).append(m)
    rows = []
    for group in groups.values():
        first = group[0]
        values = [m.value for m in group]
        where = f"{first.location.host}/{first.location.device}" if len(group) == 1 else f"{len(group)} locations"
        caveats = "; ".join(dict.fromkeys(c for c in (m.caveat for m in group) if c))
        rows.append(
            FigureRow(first.metric, _params_text(first.params), where,
                      format_value(statistics.median(values), first.unit),
                      format_value(min(values), first.unit), format_value(max(values), first.unit), len(group), caveats)
        )
    return rows


def _collective_plots(measurements: list[Measurement], expectations: list[dict[str, Any]]) -> list[Plot]:
    """busbw against message size per collective, one line per group size (and in-place mode)."""
    by_metric: dict[str, dict[str, list[tuple[float, float]]]] = {}
    units: dict[str, str] = {}
    for m in measurements:
        if (not m.metric.endswith("busbw_gbps") or m.metric.startswith(("scaling.", "pairwise."))
                or "size_bytes" not in m.params):
            continue
        label = f"{m.params.get('ranks', '?')} ranks" + (" in-place" if m.params.get("inplace") else "")
        by_metric.setdefault(m.metric, {}).setdefault(label, []).append((float(m.params["size_bytes"]), m.value))
        units[m.metric] = m.unit
    result = []
    for metric, lines in by_metric.items():
        markers = [
            plots.Marker(
                f"target {format_value(e['target'], e['unit'])} ({e['provenance']}"
                + (f", {e['params']['ranks']} ranks" if "ranks" in e.get("params", {}) else "") + ")",
                float(e["target"]),
                float(e["params"]["size_bytes"]) if "size_bytes" in e.get("params", {}) else None,
            )
            for e in expectations
            if e.get("metric") == metric
        ]
        ordered = [plots.Line(label, sorted(points)) for label,
                   points in sorted(lines.items(), key=lambda kv: _rank_order(kv[0]))]
        svg = plots.busbw_by_size(metric, ordered, markers, units[metric])
        caption = "bus bandwidth as nccl-tests defines it; dashed: the profile's expectation" if markers else \
            "bus bandwidth as nccl-tests defines it; the profile states no expectation for it"
        result.append(Plot(metric, Markup(svg), caption))
    return result


def _rank_order(label: str) -> tuple[int, str]:
    head = label.split(" ", 1)[0]
    return (int(head) if head.isdigit() else 0, label)


def _bar_plots(measurements: list[Measurement], stragglers: list[Straggler]) -> list[Plot]:
    """Per-device and per-node bars of each figure measured on several locations."""
    flagged = {(s.metric, _params_key(s.params), s.level, s.host, s.device) for s in stragglers}
    result = []
    for group in peer_groups(measurements):
        if len(group.values) < 2:
            continue
        key = _params_key(group.params)
        levels: list[tuple[str, dict[tuple[str, str], float]]] = [("device", group.values)]
        if group.spans_nodes:
            levels.append((NODE, {(host, NODE): v for host, v in group.per_node().items()}))
        for level, values in levels:
            bars = [
                plots.Bar(host if level == NODE else f"{host}/{device}", value,
                          (group.metric, key, level, host, device) in flagged)
                for (host, device), value in values.items()
            ]
            median = statistics.median(values.values())
            per_rank = level != NODE and all(device.startswith("rank ") for _, device in values)
            title = f"{group.label} per {'rank' if per_rank else level}"
            named = [b.label for b in bars if b.outlier]
            caption = (f"stragglers: {', '.join(named[:10])}{' ...' if len(named) > 10 else ''}" if named
                   else "no stragglers")
            svg = plots.location_bars(title, group.unit, group.better, bars, median)
            result.append(Plot(title, Markup(svg), caption))
    return result


def _storage_value(group: list[Measurement]) -> tuple[float, bool]:
    """The target's figure and whether it is the job's: the aggregate over ranks where the run made
    one, else the median rank's."""
    aggregates = [m.value for m in group if m.location.rank < 0]
    if aggregates:
        return aggregates[0], True
    return statistics.median(m.value for m in group), False


def _storage_series(by_target: dict[str, dict[str, list[Measurement]]], targets: list[str],
                    metrics: tuple[str, ...]) -> dict[str, list[float | None]]:
    series = {}
    for metric in metrics:
        values: list[float | None] = []
        kinds = set()
        for target in targets:
            group = by_target[target].get(metric)
            if group:
                value, is_job = _storage_value(group)
                values.append(value)
                kinds.add(is_job)
            else:
                values.append(None)
        if kinds:
            kind = "job aggregate" if kinds == {True} else "median rank" if kinds == {False} else "aggregate where made"
            series[f"{metric.split('.', 1)[1].removesuffix('_iops').removesuffix('_gbps')} ({kind})"] = values
    return series


def _storage_plots(measurements: list[Measurement]) -> list[Plot]:
    """IOPS, bandwidth and latency percentiles per storage target."""
    by_target: dict[str, dict[str, list[Measurement]]] = {}
    for m in measurements:
        if family_of(m.metric) == "storage" and "target" in m.params:
            by_target.setdefault(str(m.params["target"]), {}).setdefault(m.metric, []).append(m)
    if not by_target:
        return []
    targets = sorted(by_target)
    result = []
    for metrics, unit, title in ((STORAGE_IOPS, "IOPS, ops/s", "IOPS per target"),
                                 (STORAGE_GBPS, "GB/s", "bandwidth per target")):
        series = _storage_series(by_target, targets, metrics)
        if series:
            result.append(Plot(title, Markup(plots.grouped_bars(title, unit, targets, series))))
    latency: dict[str, list[float | None]] = {}
    for metric, rw in (("storage.randread_iops", "read"), ("storage.randwrite_iops", "write")):
        for percentile in LATENCY_PERCENTILES:
            column = []
            for t in targets:
                found = [m.details.get("latency_us", {}).get(percentile) for m in by_target[t].get(metric, [])]
                found = [v for v in found if isinstance(v, (int, float))]
                column.append(max(found) if found else None)
            if any(v is not None for v in column):
                latency[f"4 KiB rand{rw} {percentile}"] = column
    if latency:
        title = "completion latency percentiles per target (worst rank)"
        result.append(Plot(title, Markup(plots.grouped_bars(title, "us", targets, latency, log=True))))
    return result


def family_sections(results: RunResults, stragglers: list[Straggler]) -> list[FamilySection]:
    expectations = list(results.run.profile.get("expectations", []))
    checks_by_family: dict[str, list[Check]] = {}
    for check in results.checks:
        checks_by_family.setdefault(family_of(check.metric), []).append(check)
    measured_by_family: dict[str, list[Measurement]] = {}
    for m in results.measurements:
        measured_by_family.setdefault(family_of(m.metric), []).append(m)
    # Each rank's own step time, kept inside the training figure: drawn per rank and per node too.
    per_rank: dict[str, list[Measurement]] = {}
    for m in per_rank_measurements(results.measurements):
        per_rank.setdefault(family_of(m.metric), []).append(m)
    plot_makers: dict[str, Callable[[list[Measurement]], list[Plot]]] = {
        "network": lambda ms: _collective_plots(ms, expectations),
        "storage": _storage_plots,
    }
    sections = []
    for family in (*FAMILIES, "other"):
        checks = checks_by_family.get(family, [])
        measurements = measured_by_family.get(family, [])
        if not checks and not measurements:
            continue
        # All checks when they fit, else the problems only: the group summary stands for the rest.
        shown = checks if len(checks) <= MAX_CHECK_ROWS else problem_checks(checks)
        figures = _figure_rows(measurements)
        section = FamilySection(
            key=family,
            title=FAMILY_TITLES[family],
            counts={v.value: sum(1 for c in checks if c.verdict is v) for v in Verdict},
            check_groups=_check_groups(checks),
            check_rows=[CheckRow.of(c) for c in shown[:MAX_CHECK_ROWS]],
            checks_left_out=len(checks) - min(len(shown), MAX_CHECK_ROWS),
            figures=figures[:MAX_FIGURE_ROWS],
            figures_left_out=max(0, len(figures) - MAX_FIGURE_ROWS),
        )
        if family in plot_makers and measurements:
            section.plots = plot_makers[family](measurements)
        elif family in BAR_FAMILIES:
            # A node's copy matrix is drawn as a matrix: per-pair bars would be 112 plots a node.
            bars = [m for m in measurements if m.metric != COPY_MATRIX_METRIC]
            section.plots = _bar_plots(bars + per_rank.get(family, []), stragglers)
            section.plots += [Plot(p.title, Markup(p.svg), p.caption) for p in copy_matrix_plots(measurements, checks)]
        sections.append(section)
    return sections


@dataclass(frozen=True)
class ScalingView:
    series: ScalingSeries
    plot: Plot


def scaling_views(results: RunResults) -> list[ScalingView]:
    views = []
    for series in scaling_series(results.measurements, results.checks, results.run.profile):
        points = [(p.ranks, p.value, p.ideal, p.span or "", p.efficiency) for p in series.points]
        floor_ratio = series.floor if series.better is Better.HIGHER else None
        svg = plots.scaling(series.label, series.unit, points, floor_ratio)
        views.append(ScalingView(series, Plot(series.label, Markup(svg))))
    return views


def run_labels(points: list[TrendPoint]) -> list[str]:
    """A label per stored run that tells it from the others: its start, to the minute (UTC, as
    recorded), with the run ID added to every label whose minute another run shares too."""
    stamps = [p.started_at[:16].replace("T", " ") for p in points]
    repeated = {stamp for stamp, n in Counter(stamps).items() if n > 1}
    return [f"{stamp} {p.run_id}" if stamp in repeated and p.run_id else stamp for stamp, p in zip(stamps, points)]


def trend_plots(trends: list[Trend]) -> list[Plot]:
    result = []
    for t in trends:
        label = Scope(t.metric, dict(t.params)).label()
        svg = plots.trend(label, t.unit, run_labels(t.points), [p.value for p in t.points], t.current)
        caption = f"{len(t.points)} earlier runs; {t.better} is better"
        result.append(Plot(label, Markup(svg), caption))
    return result
