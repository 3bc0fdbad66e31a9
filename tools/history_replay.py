"""Replay a history of real runs on unchanged hardware: how often does the regression gate cry wolf,
and does it catch a planted regression?

Each stored run, oldest first, is compared (as `--compare SPEC` at the end of that run would have
done) with the runs stored before it, then stored itself. Every FAIL is a false alarm: the hardware
did not change. Then the same run with every performance figure made worse by a planted factor (10%
and 30%: throughputs times 0.9 / 0.7, latencies divided by them) is compared: every figure flagged is
a catch. The rule as it was before issue 16 (the noise of `last` from both runs' raw samples; a
window's noise from its own few runs; no floors) is replayed beside it. Usage:

    python tools/history_replay.py HISTORY [--spec last --spec window:5] [--plant 0.9 --plant 0.7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from clusterbench.history.compare import (
    Baseline,
    CompareSpec,
    RunKey,
    baseline_for,
    figure_comparisons,
    parse_compare_spec,
)
from clusterbench.history.fingerprint import run_fingerprint
from clusterbench.history.noise import Change, RegressionRule, robust_sigma
from clusterbench.history.store import HistoryStore
from clusterbench.metrics import METRICS
from clusterbench.model import Better, Measurement

WARN_MARK = "WARN "  # a flag that warns, not fails: noise unknown


@dataclass
class Tally:
    compared: int = 0  # figures with a baseline (unchanged hardware)
    false_alarms: int = 0  # FAILs
    warnings: int = 0  # WARNs (noise unknown)
    runs_with_false_alarm: int = 0  # runs the gate failed
    runs: int = 0
    alarms_by_metric: Counter = field(default_factory=Counter)
    caught: dict[float, int] = field(default_factory=dict)  # plant factor -> figures failed
    caught_warned: dict[float, int] = field(default_factory=dict)  # plant factor -> figures only warned of
    planted: dict[float, int] = field(default_factory=dict)  # plant factor -> figures compared


def planted(measurements: list[Measurement], factor: float) -> list[Measurement]:
    """Every figure worse by `factor`, in its own direction: a throughput times it, a latency divided."""
    def worse(m: Measurement) -> Measurement:
        better = METRICS[m.metric].better if m.metric in METRICS else Better.HIGHER
        scale = factor if better is Better.HIGHER else 1 / factor
        return replace(m, value=m.value * scale, samples=[s * scale for s in m.samples])
    return [worse(m) for m in measurements]


def new_rule_flags(store: HistoryStore, measurements: list[Measurement], key: RunKey, spec: CompareSpec,
                   rule: RegressionRule) -> tuple[int, list[str]]:
    """(figures compared, metrics flagged as regressions) under the rule of clusterbench.history."""
    baseline = baseline_for(store, measurements, key, spec, rule)
    if not baseline.runs or (not spec.single_run and len(baseline.runs) < rule.min_runs):
        return 0, []
    compared, flagged = 0, []
    for m, comparison in figure_comparisons(measurements, baseline, spec, rule):
        # None only for the columns that all_columns=True adds, which this call does not ask for.
        if comparison is None or comparison.change is Change.TOO_LITTLE_HISTORY:
            continue
        compared += 1
        if comparison.change is Change.REGRESSION:
            # Against a spread not known yet, a regression is a WARN (compare._change_check).
            verdict = "" if comparison.noise_known else WARN_MARK
            flagged.append(f"{verdict}{m.metric}{_dtype(m)} {comparison.worse_by:+.0%}")
    return compared, flagged


def old_rule_flags(store: HistoryStore, measurements: list[Measurement], key: RunKey, spec: CompareSpec,
                   rule: RegressionRule) -> tuple[int, list[str]]:
    """The same under the rule before issue 16: `last` against the two runs' raw samples, a window
    against its own MAD, both beyond min_effect and noise_k deviations, no floor."""
    baseline = baseline_for(store, measurements, key, spec, rule)
    if not baseline.runs or (not spec.single_run and len(baseline.runs) < rule.min_runs):
        return 0, []
    stored_samples = store.samples(baseline.runs[0].pk) if spec.single_run else {}
    series = _series_of(store, measurements)
    window = _window_spreads(store, measurements, baseline) if not spec.single_run else []
    compared, flagged = 0, []
    for column, m in enumerate(measurements):
        points = int(baseline.counts[column])
        if m.metric not in METRICS or not points or (not spec.single_run and points < rule.min_runs):
            continue
        if METRICS[m.metric].family == "health" or METRICS[m.metric].unit == "count":
            continue
        compared += 1
        base = float(baseline.values[column])
        if spec.single_run:
            noise = max(robust_sigma(m.samples), robust_sigma(stored_samples.get(series[column], [])))
        else:
            noise = window[column]
        change = (m.value - base) / abs(base) if base else 0.0
        worse_by = -change if METRICS[m.metric].better is Better.HIGHER else change
        if worse_by > rule.min_effect and abs(m.value - base) > rule.noise_k * noise:
            flagged.append(f"{m.metric}{_dtype(m)} {worse_by:+.0%}")
    return compared, flagged


def _dtype(m: Measurement) -> str:
    return f"[{m.params['dtype']}]" if "dtype" in m.params else ""


def _series_of(store: HistoryStore, measurements: list[Measurement]) -> list[int]:
    from clusterbench.history.keys import measurement_series_key

    ids = {k: i for i, k in store.series_by_id().items()}
    return [ids.get(measurement_series_key(m), -1) for m in measurements]


def _window_spreads(store: HistoryStore, measurements: list[Measurement], baseline: Baseline) -> list[float]:
    import numpy as np

    matrix = store.value_matrix([r.pk for r in baseline.runs], np.array(_series_of(store, measurements)))
    spreads = []
    for column in range(matrix.shape[1]):
        values = [float(v) for v in matrix[:, column] if not np.isnan(v)]
        spreads.append(robust_sigma(values))
    return spreads


def replay(path: Path, specs: list[CompareSpec], plants: list[float],
           rule: RegressionRule) -> dict[tuple[str, str], Tally]:
    with HistoryStore.open(path, read_only=True) as source:
        runs = list(reversed(list(source.export())))  # oldest first
    tallies = {(rule_name, spec.text): Tally() for rule_name in ("old", "new") for spec in specs}
    with tempfile.TemporaryDirectory() as folder, HistoryStore.open(Path(folder) / "replay.sqlite") as store:
        for data in runs:
            measurements = [Measurement.from_json(m) for m in data["measurements"]]
            key = RunKey(data["run"]["cluster"], run_fingerprint(data["run"])[0], bool(data["run"].get("quick")))
            for spec in specs:
                for rule_name, flags in (("old", old_rule_flags), ("new", new_rule_flags)):
                    tally = tallies[(rule_name, spec.text)]
                    compared, alarms = flags(store, measurements, key, spec, rule)
                    if not compared:
                        continue
                    tally.runs += 1
                    tally.compared += compared
                    fails = [a for a in alarms if not a.startswith(WARN_MARK)]
                    tally.false_alarms += len(fails)
                    tally.warnings += len(alarms) - len(fails)
                    tally.runs_with_false_alarm += bool(fails)
                    tally.alarms_by_metric.update(alarms)
                    for factor in plants:
                        planted_compared, caught = flags(store, planted(measurements, factor), key, spec, rule)
                        failed = sum(not c.startswith(WARN_MARK) for c in caught)
                        tally.planted[factor] = tally.planted.get(factor, 0) + planted_compared
                        tally.caught[factor] = tally.caught.get(factor, 0) + failed
                        tally.caught_warned[factor] = tally.caught_warned.get(factor, 0) + len(caught) - failed
            store.record({k: v for k, v in data.items() if k in ("run", "measurements", "checks", "tests", "verdict")})
    return tallies


def spread_table(path: Path) -> list[str]:
    """Each figure's run-to-run spread over the stored runs: robust sigma and range, as % of median."""
    with HistoryStore.open(path, read_only=True) as store:
        runs = list(store.export())
    values: dict[str, list[float]] = {}
    for data in runs:
        for m in data["measurements"]:
            if m["metric"] in METRICS and METRICS[m["metric"]].family != "health":
                name = m["metric"] + (f"[{m['params']['dtype']}]" if "dtype" in m["params"] else "")
                values.setdefault(name, []).append(float(m["value"]))
    lines = ["| Figure | Runs | Median | Robust spread | Min .. max |", "|---|---|---|---|---|"]
    for name, series in sorted(values.items()):
        middle = statistics.median(series)
        lines.append(f"| {name} | {len(series)} | {middle:.4g} | {robust_sigma(series) / middle:.1%} | "
                     f"{min(series) / middle - 1:+.0%} .. {max(series) / middle - 1:+.0%} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("history", type=Path)
    parser.add_argument("--spec", action="append", help="--compare specs to replay (default: last, window:5)")
    parser.add_argument("--plant", action="append", type=float, help="planted factors (default: 0.9, 0.7)")
    args = parser.parse_args()
    specs = [parse_compare_spec(s) for s in (args.spec or ["last", "window:5"])]
    plants = args.plant or [0.9, 0.7]
    rule = RegressionRule()
    print("\n".join(spread_table(args.history)))
    print()
    print("| Rule | --compare | Runs judged | Figures compared | False FAILs (runs failed) | False WARNs | "
          + " | ".join(f"{1 - f:.0%} worse: FAIL (+WARN)" for f in plants) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(plants))
    tallies = replay(args.history, specs, plants, rule)
    for (rule_name, spec), t in tallies.items():
        caught = " | ".join(f"{t.caught.get(f, 0)} "
                            f"(+{t.caught_warned.get(f, 0)}) of {t.planted.get(f, 0)}" for f in plants)
        print(f"| {rule_name} | {spec} | {t.runs} | {t.compared} | {t.false_alarms} ({t.runs_with_false_alarm}) | "
              f"{t.warnings} | {caught} |")
    for (rule_name, spec), t in tallies.items():
        if t.alarms_by_metric:
            print(f"{rule_name} {spec} false alarms: "
                  f"{', '.join(f'{a} x{n}' if n > 1 else a for a, n in t.alarms_by_metric.most_common())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
