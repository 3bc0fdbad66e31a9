"""The vendor tools' parsers on real outputs (tests/data/vendor, sources in its README) and their checks."""

from pathlib import Path

import pytest

from clusterbench.judge.second_opinion import compare_busbw, dcgm_result_checks, second_opinion_checks
from clusterbench.model import Location, Measurement, ProbeFailed, Verdict
from clusterbench.probes.vendor import dcgm_diag, nccl_tests, perftest

DATA = Path(__file__).parent / "data" / "vendor"
HERE = Location("node-a", 0, "node")


def test_ib_write_bw_gbits_row_is_read_as_perftest_prints_it():
    (row,) = perftest.parse_write_bw((DATA / "perftest/ib_write_bw_report_gbits_perftest273.txt").read_text())
    assert row == perftest.WriteBwRow(8, 224958464, 0.0, 0.48, 7.498617)


def test_ib_write_bw_without_report_gbits_is_refused_not_misread():
    with pytest.raises(ProbeFailed, match="MB/sec, not Gb/sec: run it with --report_gbits"):
        perftest.parse_write_bw((DATA / "perftest/ib_write_bw_mb_per_sec_perftest234_head.txt").read_text())


def test_nccl_tests_table_current_layout():
    rows = nccl_tests.parse_table((DATA / "nccl_tests/all_reduce_perf_g4_tinygrad-open-gpu-kernel-modules36.txt")
                                  .read_text())
    assert [r.size_bytes for r in rows] == [268435456, 536870912, 1073741824]
    assert rows[0].out_of_place == nccl_tests.ModeFigures(15654.0, 17.15, 25.72, 0)
    assert rows[2].in_place == nccl_tests.ModeFigures(62057.0, 17.30, 25.95, 0)


def test_nccl_tests_na_wrong_old_layout_and_mpirun_prefix():
    (alltoall,) = nccl_tests.parse_table((DATA / "nccl_tests/alltoall_perf_nccl-tests287.txt").read_text())
    assert alltoall.out_of_place.wrong == 0 and alltoall.in_place.wrong is None
    (old,) = nccl_tests.parse_table((DATA / "nccl_tests/broadcast_perf_old_format_nccl-tests82.txt").read_text())
    assert old.out_of_place == nccl_tests.ModeFigures(45.82, 0.0, 0.0, None)
    prefixed = nccl_tests.parse_table(
        (DATA / "nccl_tests/all_reduce_perf_mpirun_prefixed_aws-k8s-tester503.txt").read_text())
    assert [r.size_bytes for r in prefixed] == [8, 16, 32] and prefixed[2].in_place.time_us == 13.34


def test_nccl_tests_without_a_table_is_a_failure():
    with pytest.raises(ProbeFailed, match="no result table"):
        nccl_tests.parse_table("all_reduce_perf: error while loading shared libraries: libnccl.so.2\n")


def test_nccl_tests_measurements_sum_wrong_and_keep_units():
    rows = nccl_tests.parse_table((DATA / "nccl_tests/alltoall_perf_nccl-tests287.txt").read_text())
    figures = nccl_tests.measurements("all_to_all", rows, ngpus=1, location=HERE)
    assert {(m.metric, m.unit) for m in figures} == {("nccltests.busbw_gbps", "GB/s"), ("nccltests.time_us", "us"),
                                                       ("nccltests.wrong", "count")}
    (wrong,) = [m for m in figures if m.metric == "nccltests.wrong"]
    assert wrong.value == 0  # the N/A in-place column is not counted as 0 wrong, nor as wrong


def ours(size, inplace, value):
    return Measurement("allreduce.busbw_gbps", value, "GB/s", {"size_bytes": size, "inplace": inplace}, HERE)


def test_a_gap_beyond_tolerance_warns_naming_both_figures():
    rows = nccl_tests.parse_table((DATA / "nccl_tests/all_reduce_perf_g4_tinygrad-open-gpu-kernel-modules36.txt")
                                  .read_text())
    theirs = [m for m in nccl_tests.measurements("all_reduce", rows, ngpus=4, location=HERE)
              if m.metric == "nccltests.busbw_gbps"]
    comparisons = compare_busbw(theirs, [ours(268435456, True, 20.0), ours(536870912, True, 25.5)])
    checks = second_opinion_checks(comparisons, 0.10, HERE)
    (warn,) = checks
    assert warn.verdict is Verdict.WARN and warn.params["size_bytes"] == 268435456
    assert "ours 20 GB/s" in warn.message and "nccl-tests 25.72 GB/s" in warn.message
    agree = second_opinion_checks(compare_busbw(theirs, [ours(536870912, True, 25.5)]), 0.10, HERE)
    assert [c.verdict for c in agree] == [Verdict.PASS]
    assert second_opinion_checks(compare_busbw(theirs, []), 0.10, HERE) == []


def test_dcgm_3x_and_4x_results_become_checks_skips_never_pass():
    v3 = dcgm_diag.parse_diag_json((DATA / "dcgm/diag_v3_fail_gcm.json").read_text(), 1)
    checks = dcgm_result_checks("node-a", v3.to_json())
    assert sorted(c.verdict.value for c in checks) == ["FAIL", "PASS", "WARN"]
    assert dcgm_diag.failures(v3, HERE).value == 1
    v4 = dcgm_diag.parse_diag_json((DATA / "dcgm/diag_v4_fail_gcm.json").read_text(), 2)
    (fail,) = dcgm_result_checks("node-a", v4.to_json())
    assert fail.verdict is Verdict.FAIL and fail.location.device == "gpu0" and "software" in fail.message
    assert [c.verdict for c in dcgm_result_checks("node-a", dcgm_diag.parse_diag_json(
        (DATA / "dcgm/diag_v4_pass_gcm.json").read_text(), 1).to_json())] == [Verdict.PASS]


def test_dcgm_warning_carries_its_error_code_and_dcgm_recovery_action():
    report = dcgm_diag.parse_diag_json((DATA / "dcgm/synthetic_diag_v4_warnings_from_schema.json").read_text(), 2)
    checks = {(c.verdict, c.location.device): c for c in dcgm_result_checks("node-a", report.to_json())}
    failed = checks[(Verdict.FAIL, "gpu1")]
    assert "DCGM error 4, hardware memory" in failed.message and "drain and reset the GPU" in failed.message
    assert {(Verdict.NOT_MEASURED, "gpu0"), (Verdict.NOT_MEASURED, "gpu1")} <= set(checks)
    assert report.version == "4.2.3"


def test_dcgm_output_that_is_not_its_document_is_a_failure():
    with pytest.raises(ProbeFailed):
        dcgm_diag.parse_diag_json('{"error": "nope"}', 1)
