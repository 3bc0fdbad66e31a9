"""The pytest11 entry point: inert in other pytest runs; with --cluster, the packaged suite and the
site's own files from any directory; option values in space form even when they are existing paths;
and only rank 0 writes the files other programs read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SITE_TEST = Path(__file__).parent / "data" / "site" / "site_copy_check.py"
PROFILE = """
[cluster]
name = "site-test"
accelerator = "cpu"

[[expect]]
metric = "memory.copy_gbps"
target = 1e-6
unit = "GB/s"
provenance = "baseline"
source = "test fixture"
"""


def _pytest(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    environment.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=240, check=False)


def test_other_pytest_runs_are_untouched(tmp_path):
    (tmp_path / "test_plain.py").write_text(
        "def test_plain(request):\n"
        "    manager = request.config.pluginmanager\n"
        "    assert not manager.has_plugin('clusterbench.plugin')\n"
        "    assert 'acceptance' not in request.fixturenames\n"
    )
    run = _pytest(tmp_path, "-q")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout and not (tmp_path / "clusterbench-report").exists()


def test_space_form_values_that_are_existing_paths(tmp_path):
    """--storage-target, --history, --report-dir and --profiles-dir, each an existing path given with a
    space: the rootdir stays the current directory, the site file joins the packaged suite, and each
    value reaches clusterbench (the profile is found by name, the report and history are written there)."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(SITE_TEST, site / "test_site_copy.py")
    profiles, scratch, out = tmp_path / "profiles", tmp_path / "scratch", tmp_path / "out"
    for folder in (profiles, scratch, out):
        folder.mkdir()
    (profiles / "site-test.toml").write_text(PROFILE)
    history = tmp_path / "history.sqlite"
    history.touch()  # the second night: the file exists
    junit = out / "junit.xml"
    run = _pytest(site, "--cluster", "site-test", "--profiles-dir", str(profiles), "--storage-target", str(scratch),
                  "--history", str(history), "--report-dir", str(out), "--junitxml", str(junit), "-k",
                  "test_site_copy or fp32")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"rootdir: {site}" in run.stdout
    results = json.loads((out / "results.json").read_text())
    nodeids = [t["nodeid"] for t in results["tests"]]
    assert "test_site_copy.py::test_site_copy" in nodeids  # the site's own file
    assert any("test_compute.py::test_gemm_throughput" in n for n in nodeids)  # the packaged suite
    assert results["run"]["cluster"] == "site-test"
    assert history.stat().st_size > 0 and junit.is_file() and (out / "metrics.prom").is_file()
    # A run given no path ran the whole suite (less -k): it is not reported as narrowed by its paths.
    assert "clusterbench: wrote" in run.stdout


def test_only_rank_0_writes_junit_and_benchmark_json(tmp_path):
    """Under a launcher every rank gets the same --junitxml and --benchmark-json; rank 1 writes neither."""
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    pass\n")
    junit, bench = tmp_path / "junit.xml", tmp_path / "bench.json"
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999", "TORCHELASTIC_RUN_ID": "test"}
    run = _pytest(tmp_path, "--cluster=local", "--report-dir", str(tmp_path / "out"), f"--junitxml={junit}",
                  f"--benchmark-json={bench}", "test_plain.py", env=env)
    assert run.returncode == 0, run.stdout + run.stderr + (tmp_path / "out/logs/rank-1.log").read_text()
    assert not junit.exists()
    assert not bench.exists() or bench.stat().st_size == 0  # argparse opens it on every rank; rank 1 writes nothing


@pytest.mark.parametrize("family", ["xunit2", "xunit1"])
def test_junit_file_valid_for_its_family(tmp_path, family):
    """xunit2 (pytest's default) must validate against the Jenkins xUnit junit-10.xsd: figures go on
    <testsuite> as NODEID::NAME properties. xunit1 keeps them on <testcase>, where it allows them."""
    import xml.etree.ElementTree as ET

    xmlschema = pytest.importorskip("xmlschema")
    shutil.copy(SITE_TEST, tmp_path / "test_site_copy.py")
    (tmp_path / "site.toml").write_text(PROFILE)
    junit = tmp_path / "junit.xml"
    run = _pytest(tmp_path, "--cluster=site.toml", "-o", f"junit_family={family}", "--report-dir",
                  str(tmp_path / "out"),
                  "--junitxml", str(junit), "test_site_copy.py")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PytestWarning" not in run.stdout + run.stderr
    root = ET.parse(junit).getroot()
    suite = {p.get("name"): p.get("value") for p in root.find("testsuite").find("properties")}
    assert suite["clusterbench.verdict"] == "PASS"
    testcase = next(root.iter("testcase"))
    if family == "xunit2":
        xmlschema.XMLSchema(Path(__file__).parent / "data" / "junit-10.xsd").validate(junit)
        assert testcase.find("properties") is None
        assert suite["test_site_copy.py::test_site_copy::check.0.verdict"] == "PASS"
        assert float(suite["test_site_copy.py::test_site_copy::measurement.0.value"]) > 0
    else:
        properties = {p.get("name"): p.get("value") for p in testcase.iter("property")}
        assert properties["check.0.verdict"] == "PASS" and properties["check.0.unit"] == "GB/s"


def test_nccl_tests_tables_print_as_each_sweep_ends(tmp_path):
    """Each sweep's table shows when its test ends, before the next test's progress, not all at the end."""
    run = _pytest(tmp_path, "--cluster=local", "--quick", "-m", "network", "--report-dir", str(tmp_path / "out"),
                  "-k", "bus_bandwidth and (all_reduce or all_gather)")
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    first, second, summary = out.index("# all_reduce:"), out.index("# all_gather:"), out.index("clusterbench summary")
    assert first < out.index("test_network.py", first) < second < summary  # the next test's progress comes between


def test_under_a_launcher_rank_0_prints_one_line_per_finished_sweep_step(tmp_path):
    """torchrun, 2 ranks, no TTY: rank 0 prints each finished size of the sweep while it runs, then the
    table and the summary; rank 1's output goes to its rank log."""
    out = tmp_path / "out"
    environment = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          "-m", "pytest", "-p", "no:cacheprovider", "--cluster=local", "--quick", "-m", "network",
                          "-k", "bus_bandwidth and all_reduce", "--report-dir", str(out)],
                         cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=240, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    steps = [line for line in run.stdout.splitlines() if line.startswith("clusterbench: all_reduce in-place ")]
    sizes = 9  # the quick CPU sweep: 8 B to 256 KiB in x8 steps, then 1, 4 and 16 MiB
    assert [line.split()[3] for line in steps] == [f"{i}/{sizes}:" for i in range(1, sizes + 1)]
    assert all("busbw" in line for line in steps)
    assert run.stdout.index(steps[-1]) < run.stdout.index("# all_reduce:") < run.stdout.index("clusterbench summary")
    assert (out / "logs" / "rank-1.log").is_file() and not (out / "logs" / "rank-0.log").exists()
