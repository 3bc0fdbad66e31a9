"""The history at scale: 100 stored runs of 10,000 figures each, then one comparison of a run of
10,000 figures against the window of all 100 (what `--compare window:100` does at the end of a run).

Prints the time to store each run, the file's growth per run, and the comparison's time, taken as
the median of several repetitions (a fresh connection each, as in a run). Usage:

    python tools/history_scale.py [--runs 100] [--figures 10000] [--dir /tmp/history-scale]

`--false-alarms` instead runs the regression rule itself (noise.judge_change) on Gaussian figures:
for each number of stored runs and run-to-run spread, the share of unchanged figures flagged (false
alarms) and of figures planted 10% and 30% worse that are caught, for `last` and for a window.

    python tools/history_scale.py --false-alarms [--trials 20000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import time
from pathlib import Path

from clusterbench.history.compare import RunKey, compare_run, parse_compare_spec
from clusterbench.history.fingerprint import run_fingerprint
from clusterbench.history.noise import (
    Change,
    RegressionRule,
    judge_change,
    robust_sigma,
    spread_of,
)
from clusterbench.history.store import HistoryStore, file_size
from clusterbench.judge import judge_regressions
from clusterbench.model import Better, Location, Measurement, ParamValue, Verdict
from clusterbench.results import RunInfo, RunResults

DEVICE = {"torch_device": "cuda:0", "kind": "cuda", "index": 0, "name": "NVIDIA H200", "memory_bytes": 141 * 2**30,
          "compute_capability": "9.0", "count_cores": 132}


def synthetic_run(day: int, figures: int, seed: int) -> RunResults:
    """`figures` measurements as a 64-rank cluster gives them: per rank, GEMM per dtype and
    collective sweeps per size, each with 5 raw samples; values vary a few % from run to run."""
    rng = random.Random(seed)
    started = (dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=day)).isoformat(timespec="seconds")
    info = RunInfo(cluster="scale", profile={"name": "scale", "files": []}, hosts=[f"node{i}" for i in range(8)],
                   world_size=64, launcher="torchrun", backend="nccl", started_at=started, command_line=[],
                   versions={"clusterbench": "0.1.0"}, devices=[DEVICE], quick=False, finished_at=started)
    measurements = []
    for index in range(figures):
        rank, kind = index % 64, index // 64
        value = (100.0 + kind) * rng.gauss(1.0, 0.02)
        params: dict[str, ParamValue] = {"size_bytes": 1024 * (kind + 1), "ranks": 64, "dtype": "bf16",
                                         "backend": "nccl"}
        measurements.append(Measurement("allreduce.busbw_gbps", value, "GB/s", params,
                                        Location(f"node{rank // 8}", rank, f"cuda:{rank % 8}"),
                                        samples=[value * rng.gauss(1.0, 0.01) for _ in range(5)]))
    return RunResults(run=info, measurements=measurements)


def flag_rates(rng: random.Random, runs: int, sigma: float, factor: float, single_run: bool, rule: RegressionRule,
               family: str, trials: int) -> tuple[float, float, float]:
    """Shares of `trials` figures failed, warned of (a regression against a spread not known yet),
    and failed by the plain band the rule replaced, when this run is `factor` x the hardware's figure and
    `runs` stored runs vary by `sigma` (relative, Gaussian) around 1.0."""
    failed = warned = plain = 0
    for _ in range(trials):
        stored = [rng.gauss(1.0, sigma) for _ in range(runs)]
        current = factor * rng.gauss(1.0, sigma)
        baseline = stored[-1] if single_run else statistics.median(stored)
        comparison = judge_change(current, baseline, 1 if single_run else runs, spread_of(stored, rule, family),
                                  Better.HIGHER, family, rule)
        if comparison.change is Change.REGRESSION:
            failed += comparison.noise_known
            warned += not comparison.noise_known
        # The window rule before issue 16: beyond min_effect and a plain 3 MAD-deviations band.
        drop = (baseline - current) / baseline
        plain += (runs >= rule.min_runs and drop > rule.min_effect
                  and drop * baseline > rule.noise_k * robust_sigma(stored))
    return failed / trials, warned / trials, plain / trials


def false_alarm_table(trials: int) -> None:
    rule, rng = RegressionRule(), random.Random(16)
    print("| --compare | stored runs | run-to-run spread | false alarms: FAIL (WARN) | caught "
          "at 10% worse: FAIL (WARN) "
          "| caught at 30% worse: FAIL (WARN) | false alarms of a plain 3-MAD band |")
    print("|---|---|---|---|---|---|---|")
    for single_run, label in ((True, "last"), (False, "window")):
        for runs in (2, 5, 10, 30):
            if not single_run and runs < rule.min_runs:
                continue
            for sigma in (0.01, 0.03, 0.10):
                rates = [flag_rates(rng, runs, sigma, f, single_run, rule, "compute", trials) for f in (1.0, 0.9, 0.7)]
                cells = [f"{fail:.2%} ({warn:.2%})" for fail, warn, _ in rates]
                print(f"| {label} | {runs} | {sigma:.0%} | {' | '.join(cells)} | {rates[0][2]:.2%} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--figures", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/history-scale"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="compare against the history a previous call stored")
    parser.add_argument("--false-alarms", action="store_true", help="the rule's false-alarm and catch rates, simulated")
    parser.add_argument("--trials", type=int, default=20_000)
    args = parser.parse_args()
    if args.false_alarms:
        false_alarm_table(args.trials)
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / "history.sqlite"
    if not args.reuse:
        store_runs(path, args.runs, args.figures)
    current = synthetic_run(args.runs + 1, args.figures, seed=12345)
    for m in current.measurements[:10]:
        m.value *= 0.7  # ten clear regressions among the 10,000 figures
    key = RunKey("scale", run_fingerprint(current.to_json()["run"])[0], False)
    spec = parse_compare_spec(f"window:{args.runs}")
    timings = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        with HistoryStore.open(path, read_only=True) as store:
            comparison = compare_run(store, current.measurements, key, spec, RegressionRule(), {"allreduce.busbw_gbps"})
            assert comparison.regression is not None  # asked for with a spec, so made
            checks = judge_regressions(comparison.regression, Verdict.FAIL)
        timings.append(time.perf_counter() - start)
    failures = [c for c in checks if c.verdict is Verdict.FAIL]
    planted = {(m.location.rank, json.dumps(m.params, sort_keys=True)) for m in current.measurements[:10]}
    caught = sum(c.location is not None and (c.location.rank, json.dumps(c.params, sort_keys=True)) in planted
                 for c in failures)
    print(f"compare {args.figures} figures against window:{args.runs}: median {statistics.median(timings):.2f} s "
          f"(min {min(timings):.2f}, max {max(timings):.2f}, {args.repeat} repetitions); "
          f"{len(failures)} regressions flagged, {caught} of the 10 planted (-30%) among them; "
          f"summary: {checks[0].message}")
    return 0


def store_runs(path: Path, runs: int, figures: int) -> None:
    for stale in (path, Path(f"{path}-journal")):
        stale.unlink(missing_ok=True)
    HistoryStore.open(path).close()
    empty = file_size(path)
    store_times = []
    for day in range(runs):
        data = synthetic_run(day, figures, seed=day).to_json()
        start = time.perf_counter()
        with HistoryStore.open(path) as store:
            store.record(data)
        store_times.append(time.perf_counter() - start)
    grown = file_size(path) - empty
    print(f"stored {runs} runs x {figures} figures: file {file_size(path) / 1e6:.1f} MB, "
          f"growth {grown / runs / 1e6:.2f} MB per run ({grown / runs / figures:.0f} bytes per figure); "
          f"store time median {statistics.median(store_times):.2f} s per run")


if __name__ == "__main__":
    sys.exit(main())
