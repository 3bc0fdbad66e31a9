"""The noise-aware regression rule, the comparison against a stored window, and the trends."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clusterbench.errors import ProfileError
from clusterbench.history.compare import (
    CompareSpecError,
    RunKey,
    compare_run,
    parse_compare_spec,
)
from clusterbench.history.fingerprint import run_fingerprint
from clusterbench.history.noise import (
    Change,
    RegressionRule,
    compare_with_run,
    compare_with_window,
)
from clusterbench.history.store import HistoryStore
from clusterbench.model import Better, Verdict
from clusterbench.profile import load_profile_file

sys.path.insert(0, str(Path(__file__).parent))
from history_results import CPU_DEVICE, measurement, results

RULE = RegressionRule(min_effect=0.05, noise_k=3.0, min_runs=5)
STEADY = [100.0, 101.0, 99.0, 100.5, 99.5, 100.0]
NOISY = [100.0, 130.0, 70.0, 120.0, 80.0, 100.0]


def test_a_drop_beyond_effect_and_noise_is_a_regression():
    comparison = compare_with_window(80.0, STEADY, Better.HIGHER, RULE)
    assert comparison.change is Change.REGRESSION
    assert comparison.baseline == 100.0 and comparison.worse_by == pytest.approx(0.20)


def test_a_drop_inside_the_windows_noise_is_not_flagged():
    assert compare_with_window(80.0, NOISY, Better.HIGHER, RULE).change is Change.WITHIN_NOISE


def test_a_drop_beyond_noise_but_below_the_minimum_effect_is_not_flagged():
    assert compare_with_window(97.0, [100.0] * 6, Better.HIGHER, RULE).change is Change.UNCHANGED


def test_direction_comes_from_the_metric():
    assert compare_with_window(120.0, STEADY, Better.LOWER, RULE).change is Change.REGRESSION  # latency up
    assert compare_with_window(120.0, STEADY, Better.HIGHER, RULE).change is Change.IMPROVEMENT
    assert compare_with_window(80.0, STEADY, Better.LOWER, RULE).change is Change.IMPROVEMENT


def test_too_little_history_says_so():
    comparison = compare_with_window(50.0, STEADY[:4], Better.HIGHER, RULE)
    assert comparison.change is Change.TOO_LITTLE_HISTORY and comparison.points == 4


def test_one_stored_run_uses_both_runs_raw_samples_as_noise():
    tight = compare_with_run(90.0, 100.0, [89.0, 90.0, 91.0], [99.0, 100.0, 101.0], Better.HIGHER, RULE)
    spread = compare_with_run(90.0, 100.0, [60.0, 90.0, 120.0], [99.0, 100.0, 101.0], Better.HIGHER, RULE)
    assert tight.change is Change.REGRESSION and spread.change is Change.WITHIN_NOISE


@pytest.mark.parametrize("text, window, run_id", [("last", 1, None), ("window:7", 7, None), ("20260101T000000Z-abc123", None, "20260101T000000Z-abc123")])
def test_compare_specs(text, window, run_id):
    spec = parse_compare_spec(text)
    assert (spec.window, spec.run_id) == (window, run_id)


@pytest.mark.parametrize("text", ["window:0", "window:x", "window", ""])
def test_bad_compare_specs_are_one_line_errors(text):
    with pytest.raises(CompareSpecError, match="--compare"):
        parse_compare_spec(text)


def stored_history(path: Path, copy_gbps: list[float], *, quick: bool = True, cluster: str = "test-cluster",
                   devices: list | None = None, first_day: int = 1) -> list[str]:
    with HistoryStore.open(path) as store:
        return [
            store.record(results([measurement("memory.copy_gbps", v, samples=[v * 0.99, v, v * 1.01]),
                                  measurement("storage.randread_p99_us", 200.0, {"target": "/scratch"}, unit="us")],
                                 day=first_day + i, quick=quick, cluster=cluster, devices=devices).to_json())
            for i, v in enumerate(copy_gbps)
        ]


def current_key(quick: bool = True) -> RunKey:
    return RunKey("test-cluster", run_fingerprint(results([]).to_json()["run"])[0], quick)


def compare(path: Path, figures, spec: str, verdict: Verdict = Verdict.FAIL, rule: RegressionRule = RULE):
    with HistoryStore.open(path) as store:
        return compare_run(store, figures, current_key(), parse_compare_spec(spec), rule, verdict,
                           {"memory.copy_gbps", "storage.randread_p99_us"})


def test_a_regression_check_carries_both_runs_figures(tmp_path):
    path = tmp_path / "history.sqlite"
    stored_history(path, [20.0, 20.2, 19.8, 20.1, 19.9, 20.0])
    figures = [measurement("memory.copy_gbps", 15.0), measurement("storage.randread_p99_us", 300.0, {"target": "/scratch"}, unit="us")]
    checks = compare(path, figures, "window:5").checks
    summary, *changes = checks
    assert summary.verdict is Verdict.PASS and "2 figure(s) compared" in summary.message and "2 regression" in summary.message
    by_metric = {c.metric: c for c in changes}
    copy = by_metric["memory.copy_gbps"]
    assert copy.verdict is Verdict.FAIL and copy.blocking and copy.provenance == "history"
    assert (copy.observed, copy.target) == (15.0, 20.0)
    assert "15.0 GB/s now vs 20.0 GB/s" in copy.message and "25.0% slower" in copy.message
    latency = by_metric["storage.randread_p99_us"]
    assert latency.verdict is Verdict.FAIL and latency.better is Better.LOWER and "50.0% higher" in latency.message


def test_regressions_can_be_warnings_by_profile_choice(tmp_path):
    path = tmp_path / "history.sqlite"
    stored_history(path, [20.0] * 5)
    checks = compare(path, [measurement("memory.copy_gbps", 15.0)], "window:5", Verdict.WARN).checks
    assert [c.verdict for c in checks] == [Verdict.PASS, Verdict.WARN] and not checks[1].blocking


def test_too_few_stored_runs_is_said_not_guessed(tmp_path):
    path = tmp_path / "history.sqlite"
    stored_history(path, [20.0, 20.0])
    [check] = compare(path, [measurement("memory.copy_gbps", 5.0)], "window:10").checks
    assert check.verdict is Verdict.NOT_MEASURED and not check.blocking
    assert "only 2 stored run(s)" in check.message and "at least 5" in check.message


def test_only_runs_of_the_same_cluster_hardware_and_mode_count(tmp_path):
    path = tmp_path / "history.sqlite"
    other_gpu = [dict(CPU_DEVICE, kind="cuda", name="Other GPU")]
    stored_history(path, [5.0] * 5, cluster="other-cluster")
    stored_history(path, [5.0] * 5, devices=other_gpu, first_day=10)
    stored_history(path, [5.0] * 5, quick=False, first_day=20)
    [check] = compare(path, [measurement("memory.copy_gbps", 20.0)], "window:5").checks
    assert check.verdict is Verdict.NOT_MEASURED and "no stored run" in check.message


def test_last_and_a_named_run(tmp_path):
    path = tmp_path / "history.sqlite"
    run_ids = stored_history(path, [30.0, 20.0])
    last = compare(path, [measurement("memory.copy_gbps", 15.0)], "last").checks
    named = compare(path, [measurement("memory.copy_gbps", 15.0)], run_ids[0]).checks
    assert last[1].target == 20.0 and run_ids[1] in last[1].source and last[1].verdict is Verdict.FAIL
    assert named[1].target == 30.0 and run_ids[0] in named[1].source


def test_trends_list_stored_runs_oldest_first_beside_this_run(tmp_path):
    path = tmp_path / "history.sqlite"
    run_ids = stored_history(path, [18.0, 19.0, 20.0])
    trends = compare(path, [measurement("memory.copy_gbps", 21.0)], "window:3").trends
    [copy] = [t for t in trends if t.metric == "memory.copy_gbps"]
    assert [p.run_id for p in copy.points] == run_ids and [p.value for p in copy.points] == [18.0, 19.0, 20.0]
    assert copy.current == 21.0 and copy.unit == "GB/s" and copy.better == "higher"


@pytest.mark.parametrize("line, problem", [
    ('regression_verdict = "maybe"', "'regression_verdict' must be one of fail, warn"),
    ("regression_min_runs = 1", "'regression_min_runs' must be 3 or more"),
    ("regression_min_effect = 1.5", "'regression_min_effect' is a fraction"),
    ("regression_noise_k = -1", "'regression_noise_k' must be zero or more"),
])
def test_regression_settings_are_validated(write_profile, line, problem):
    path = write_profile(f'[cluster]\nname = "x"\n[settings]\n{line}\n')
    with pytest.raises(ProfileError, match=problem):
        load_profile_file(path, lambda name, origin: origin)


def test_regression_settings_load(write_profile):
    path = write_profile('[cluster]\nname = "x"\n[settings]\nregression_min_effect = 0.1\nregression_verdict = "warn"\n')
    settings = load_profile_file(path, lambda name, origin: origin).settings
    assert (settings.regression_min_effect, settings.regression_verdict, settings.regression_noise_k) == (0.1, "warn", 3.0)
