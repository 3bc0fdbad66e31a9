"""The public test-writing API, as a site uses it: a conftest.py that registers the site's metrics and
a test file outside benchmarks/ that measures through `acceptance.measure`, run by pytester in a
directory of its own, on one rank and on two (torchrun's environment contract, real Gloo).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from test_multirank import start_ranks, wait_for_ranks

pytest_plugins = ("pytester",)

SITE_CONFTEST = '''
import clusterbench

clusterbench.register_metric("site.dataloader_gbps", unit="GB/s", better="higher", per="node",
                             description="shard read rate of the site's dataloader")
clusterbench.register_metric("site.licence_failures", unit="count", better="lower", must_be_zero=True,
                             description="licence checkouts that failed")
clusterbench.register_metric("site.fabric_ms", unit="ms", better="lower", per="world",
                             description="a barrier across the job, as the site times it")
'''

SITE_TESTS = '''
import time

import torch.distributed as dist
from clusterbench import NotMeasured


def read_shards():
    return [1.5, 1.6, 1.4]  # GB/s of three reads: the median is the figure, the samples are kept


def test_dataloader(acceptance):
    acceptance.measure("site.dataloader_gbps", read_shards)


def test_licences(acceptance):
    acceptance.measure("site.licence_failures", lambda: 0)


def test_fabric(acceptance):
    def barrier_ms():
        if not dist.is_initialized():
            raise NotMeasured("a world of one process has no fabric to time")
        start = time.perf_counter()
        dist.barrier()
        return (time.perf_counter() - start) * 1e3

    acceptance.measure("site.fabric_ms", barrier_ms)


def test_typo(acceptance):
    acceptance.measure("site.dataloadr_gbps", read_shards)
'''

PROFILE = '''
[cluster]
name = "site"

[settings]
collective_timeout_s = 60

[[expect]]
metric = "site.dataloader_gbps"
target = {target}
unit = "GB/s"
provenance = "contract"
source = "the site's dataloader contract"
'''


@pytest.fixture
def site(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(SITE_CONFTEST)
    pytester.makepyfile(test_site=SITE_TESTS)
    return pytester


def _arguments(site: pytest.Pytester, target: float) -> list[str]:
    profile = site.path / "site.toml"
    profile.write_text(PROFILE.format(target=target))
    return [f"--cluster={profile}", f"--report-dir={site.path / 'out'}", "test_site.py"]


def _results(site: pytest.Pytester) -> dict:
    return json.loads((site.path / "out" / "results.json").read_text())


def _outcomes(results: dict) -> dict[str, dict]:
    return {t["nodeid"].split("::")[-1]: t for t in results["tests"]}


def test_a_site_test_on_one_rank_is_judged_like_a_builtin(site):
    run = site.runpytest_subprocess("-p", "no:cacheprovider", *_arguments(site, target=1.2))
    output = run.stdout.str() + run.stderr.str()
    assert run.ret == 1, output  # the typo, and only the typo
    assert "Traceback" not in output
    results = _results(site)
    outcomes = _outcomes(results)
    (figure,) = [m for m in results["measurements"] if m["metric"] == "site.dataloader_gbps"]
    assert figure["value"] == 1.5 and figure["samples"] == [1.5, 1.6, 1.4] and figure["unit"] == "GB/s"
    assert figure["device"] == "node"
    (judged,) = [c for c in results["checks"] if c["metric"] == "site.dataloader_gbps"]
    assert judged["verdict"] == "PASS" and judged["provenance"] == "contract"
    licence = [c for c in results["checks"] if c["metric"] == "site.licence_failures"]
    # zero, whatever the profile says
    assert [c["verdict"] for c in licence] == ["PASS"] and licence[0]["provenance"] == "rule"
    assert outcomes["test_fabric"]["outcome"] == "skipped"
    assert "a world of one process has no fabric" in outcomes["test_fabric"]["message"]
    typo = outcomes["test_typo"]
    assert typo["outcome"] == "failed"
    assert "unknown metric 'site.dataloadr_gbps'; did you mean 'site.dataloader_gbps'?" in typo["message"]


def test_a_site_expectation_below_its_target_fails_the_run(site):
    run = site.runpytest_subprocess("-p", "no:cacheprovider", *_arguments(site, target=3.0), "-k", "dataloader")
    assert run.ret == 1
    (judged,) = [c for c in _results(site)["checks"] if c["metric"] == "site.dataloader_gbps"]
    assert judged["verdict"] == "FAIL" and "the site's dataloader contract" in judged["message"]


def test_a_site_test_on_two_ranks_measures_where_each_metric_says(site):
    procs = start_ranks(site.path, _arguments(site, target=1.2) + ["-k", "not typo"], cwd=site.path)
    out0 = wait_for_ranks(procs, timeout=180)
    assert procs[0].returncode == 0, out0
    results = _results(site)
    by_metric: dict[str, list[dict]] = {}
    for m in results["measurements"]:
        by_metric.setdefault(m["metric"], []).append(m)
    # per node: one figure for the one host (its first local rank); per rank: both; per world: rank 0's.
    assert [m["rank"] for m in by_metric["site.dataloader_gbps"]] == [0]
    assert sorted(m["rank"] for m in by_metric["site.licence_failures"]) == [0, 1]
    (fabric,) = by_metric["site.fabric_ms"]
    assert fabric["rank"] == 0 and fabric["device"] == "2 ranks" and fabric["value"] > 0
    assert results["run"]["world_size"] == 2 and results["verdict"] == "PASS"


def test_a_metric_in_an_unknown_unit_is_refused_where_it_is_registered(tmp_path):
    conftest = tmp_path / "conftest.py"
    conftest.write_text(
        "import clusterbench\n"
        "clusterbench.register_metric('site.x_gbps', unit='GiB/s', better='higher', description='x')\n"
    )
    (tmp_path / "test_x.py").write_text("def test_x(acceptance):\n    pass\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--cluster=local",
                          f"--report-dir={tmp_path / 'out'}", "test_x.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "unit 'GiB/s' is not one of" in output and "did you mean 'GB/s'?" in output


def test_a_judge_that_crashes_fails_its_test_with_one_line_and_the_run_goes_on(pytester):
    pytester.makeconftest(SITE_CONFTEST)
    pytester.makepyfile(test_judges='''
def test_judge_raises(acceptance):
    acceptance.also_judge(lambda figures: [1 / 0])
    acceptance.measure("site.licence_failures", lambda: 0)


def test_nothing_found(acceptance):
    acceptance.measure("site.licence_failures", lambda: [])


def test_after(acceptance):
    acceptance.measure("site.licence_failures", lambda: 0)
''')
    profile = pytester.path / "site.toml"
    profile.write_text(PROFILE.format(target=1.0))
    run = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--cluster={profile}",
                                        f"--report-dir={pytester.path / 'out'}", "test_judges.py")
    output = run.stdout.str() + run.stderr.str()
    assert run.ret == 1 and "INTERNALERROR" not in output, output
    outcomes = _outcomes(json.loads((pytester.path / "out" / "results.json").read_text()))
    crashed = outcomes["test_judge_raises"]
    assert crashed["outcome"] == "failed" and "the figures' judge crashed: ZeroDivisionError" in crashed["message"]
    assert outcomes["test_nothing_found"]["outcome"] == "skipped"
    assert "nothing to measure" in outcomes["test_nothing_found"]["message"]
    assert outcomes["test_after"]["outcome"] == "passed"
