"""Calibration without a run: which figures become expectations, with which params and margins."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clusterbench.catalog import resolve_cluster
from clusterbench.history.calibrate import (
    CalibrationError,
    calibrated_figures,
    write_calibrated_profile,
)
from clusterbench.judge import judge_measurement, judged_measurements
from clusterbench.model import Location, Measurement, Verdict
from clusterbench.profile import ClusterInfo, Profile, Settings, StorageSettings

sys.path.insert(0, str(Path(__file__).parent))
from history_results import measurement


def sweep(value_at_largest: float) -> list[Measurement]:
    params = {"ranks": 8, "dtype": "fp32", "inplace": False, "backend": "gloo"}
    return [measurement("allreduce.busbw_gbps", value, {**params, "size_bytes": size})
            for size, value in ((1024, 0.5), (1 << 20, 3.0), (1 << 26, value_at_largest))]


def figures_of_a_run() -> list[Measurement]:
    two_gpus = [Measurement("gemm.tflops", v, "TFLOP/s", {"dtype": "bf16"}, Location("n1", r, f"cuda:{r}"),
                            samples=[v] * 5)
                for r, v in ((0, 700.0), (1, 720.0))]
    return [
        *two_gpus,
        *sweep(40.0),
        measurement("storage.randread_p99_us", 250.0, {"target": "/scratch", "engine": "fio"}, unit="us"),
        measurement("collective.wrong", 0.0, {"op": "allreduce"}, unit="count"),
        measurement("gpu.temperature_c", 60.0, unit="C"),
    ]


def test_one_expectation_a_figure_at_the_median_with_the_margin():
    figures = {f.metric: f for f in calibrated_figures(figures_of_a_run(), 0.1, "RUN1", "2026-01-02")}
    assert set(figures) == {"gemm.tflops", "allreduce.busbw_gbps", "storage.randread_p99_us"}  # no counts, no health
    gemm = figures["gemm.tflops"]
    assert (gemm.params, gemm.target, gemm.tolerance) == ({"dtype": "bf16"}, 710.0, 0.1)
    assert "run RUN1 on 2026-01-02" in gemm.source and "median of 2 figures" in gemm.source
    assert figures["allreduce.busbw_gbps"].params["size_bytes"] == 1 << 26  # a sweep at its largest size only
    assert figures["allreduce.busbw_gbps"].target == 40.0
    assert figures["storage.randread_p99_us"].better.value == "lower"


def test_noisy_samples_widen_the_margin_and_say_so():
    noisy = measurement("memory.copy_gbps", 10.0, samples=[7.0, 8.5, 10.0, 11.5, 13.0])
    [figure] = calibrated_figures([noisy], 0.1, "RUN1", "2026-01-02")
    assert figure.tolerance > 0.3 and "widened from 10%" in figure.source


def test_written_profile_loads_and_judges_the_same_figures_as_passing(tmp_path):
    profile = Profile(ClusterInfo("lab", accelerators_per_node=2, accelerator="H200"),
                      Settings(outlier_tolerance=0.08), (), storage=StorageSettings(targets=("/scratch",)))
    run = figures_of_a_run()
    path = tmp_path / "lab-baseline.toml"
    count = write_calibrated_profile(path, profile, run, run_id="RUN1", date="2026-01-02", fingerprint="abc",
                                     margin=0.1)
    loaded = resolve_cluster(str(path), tmp_path)
    assert count == 3 and loaded.cluster.name == "lab" and loaded.settings.outlier_tolerance == 0.08
    assert loaded.storage.targets == ("/scratch",)
    baseline = [e for e in loaded.expectations if e.provenance.value == "baseline"]
    assert len(baseline) == 3
    for expectation in baseline:
        judged = judged_measurements(expectation, run)
        assert judged and all(judge_measurement(expectation, m).verdict is not Verdict.FAIL for m in judged)


def test_nothing_to_calibrate_writes_nothing(tmp_path):
    profile = Profile(ClusterInfo("lab"), Settings(), ())
    with pytest.raises(CalibrationError, match="no figure to calibrate"):
        write_calibrated_profile(tmp_path / "x.toml", profile, [measurement("gpu.temperature_c", 60.0, unit="C")],
                                 run_id="RUN1", date="2026-01-02", fingerprint="abc", margin=0.1)
    assert not (tmp_path / "x.toml").exists()


def storage_figures(target: str) -> list[Measurement]:
    params = {"target": target, "engine": "fio", "direct": True, "block_size": 4096, "iodepth": 32, "numjobs": 4}
    return [measurement("storage.randread_iops", 50_000.0, params, unit="IOPS"),
            measurement("storage.seqwrite_gbps", 1.5, {**params, "block_size": 1 << 20}, unit="GB/s")]


def test_one_storage_target_is_not_pinned_so_the_profile_judges_another_checkouts_target(tmp_path):
    # Issue 16: calibrated in /work/checkout-a, run from checkout-b (or with --storage-target): the
    # expectations must meet the figures, not leave every storage test NOT MEASURED.
    profile = Profile(ClusterInfo("lab"), Settings(), ())
    path = tmp_path / "baseline.toml"
    write_calibrated_profile(path, profile, storage_figures("/work/checkout-a"), run_id="RUN1", date="2026-01-02",
                             fingerprint="abc", margin=0.1)
    loaded = resolve_cluster(str(path), tmp_path)
    elsewhere = storage_figures("/mnt/other-machine/scratch")
    assert all("target" not in e.params for e in loaded.expectations) and len(loaded.expectations) == 2
    for expectation in loaded.expectations:
        [judged] = judged_measurements(expectation, elsewhere)
        assert judge_measurement(expectation, judged).verdict is Verdict.PASS
    assert "/work/checkout-a" in loaded.expectations[0].source  # where it was measured is still said


def test_several_storage_targets_keep_their_paths_to_tell_them_apart():
    figures = storage_figures("/scratch") + storage_figures("/home")
    calibrated = calibrated_figures(figures, 0.1, "RUN1", "2026-01-02", storage_targets=2)
    assert sorted(f.params["target"] for f in calibrated) == ["/home", "/home", "/scratch", "/scratch"]


def test_the_runs_storage_target_option_becomes_the_profiles_targets(tmp_path):
    profile = Profile(ClusterInfo("lab"), Settings(), (), storage=StorageSettings(targets=("/a", "/b"), shared=("/b",)))
    path = tmp_path / "baseline.toml"
    write_calibrated_profile(path, profile, storage_figures("/fast"), run_id="RUN1", date="2026-01-02",
                             fingerprint="abc", margin=0.1, storage_targets=("/fast",))
    loaded = resolve_cluster(str(path), tmp_path)
    assert loaded.storage.targets == ("/fast",) and loaded.storage.shared == ()
    assert all("target" not in e.params for e in loaded.expectations)


def test_a_calibrated_profile_keeps_the_clusters_host_list(tmp_path):
    profile = Profile(ClusterInfo("lab", nodes=2, hosts="gpu[01-02]"), Settings(), ())
    path = tmp_path / "lab-baseline.toml"
    write_calibrated_profile(path, profile, figures_of_a_run(), run_id="RUN1", date="2026-01-02", fingerprint="abc",
                             margin=0.1)
    loaded = resolve_cluster(str(path), tmp_path)
    assert loaded.cluster.host_names() == ["gpu01", "gpu02"] and loaded.cluster.nodes == 2
