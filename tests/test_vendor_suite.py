"""The packaged vendor tests on this machine (no perftest, nccl-tests or DCGM; one node): every one
NOT MEASURED with its reason, none passed."""

from test_acceptance_run import run_suite


def test_vendor_suite_without_the_tools_says_why_each_is_not_measured(tmp_path):
    run = run_suite(tmp_path, "--cluster=local", "-m", "network or health", "-k", "vendor",
                    "benchmarks/test_vendor_tools.py")
    assert run.returncode == 0, run.stdout + run.stderr
    tests = {t["nodeid"].split("::")[1]: t for t in run.results["tests"] if "test_vendor_tools" in t["nodeid"]}
    assert len(tests) == 20 and {t["verdict"] for t in tests.values()} == {"NOT MEASURED"}
    assert "between two nodes" in tests["test_vendor_perftest_write_bw"]["message"]
    assert "all_reduce_perf is not installed" in tests["test_vendor_nccl_tests_bus_bandwidth[all_reduce]"]["message"]
    assert "dcgmi is not installed" in tests["test_vendor_dcgm_diag"]["message"]
    assert not run.checks("PASS") and not run.checks("FAIL")
