"""The clusterbench command: --version, list, init, run, a pipe closed early, a file of the wrong kind."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from clusterbench import __version__
from clusterbench.catalog import resolve_cluster
from clusterbench.cli import main, starter_profile_text
from clusterbench.local_profile import build_local_profile
from clusterbench.metrics import FAMILIES, METRICS
from clusterbench.model import Provenance
from clusterbench.probes.devices import LocalDevice


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"clusterbench {__version__}"


def test_list_names_profiles_metrics_with_units_and_families(tmp_path, capsys):
    (tmp_path / "mine.toml").write_text('[cluster]\nname = "mine"\n')
    assert main(["list", "--profiles-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mine" in out and "h200-node" in out and "local" in out  # the user's folder and the packaged profiles
    for name, spec in METRICS.items():
        assert any(name in line and spec.unit in line and spec.family in line for line in out.splitlines()), name
    assert all(family in out for family in FAMILIES)


def test_init_writes_a_profile_that_loads(tmp_path, capsys):
    path = tmp_path / "clusters" / "node.toml"
    assert main(["init", str(path)]) == 0
    assert resolve_cluster(str(path), path.parent).cluster.name == "node"
    assert main(["init", str(path)]) == 2 and "exists" in capsys.readouterr().err  # never overwritten silently


def test_starter_profile_of_a_gpu_node_carries_the_hardware_table_expectations(tmp_path):
    """A fake H200 node (a test double of what torch would list): the starter profile holds the local
    profile's expectations, each with its provenance and source, and loads back unchanged."""
    devices = [LocalDevice(f"cuda:{i}", "cuda", i, "NVIDIA H200", 141 * 10**9, (9, 0), 132) for i in range(8)]
    local = build_local_profile(devices)
    assert local.expectations, "the hardware table knows the H200"
    path = tmp_path / "h200.toml"
    path.write_text(starter_profile_text(local, "h200-box"))
    loaded = resolve_cluster(str(path), tmp_path)
    assert loaded.cluster.accelerators_per_node == 8

    def pairs(p):
        return sorted((e.metric, tuple(sorted(e.params.items())), e.target, e.provenance, e.source)
                      for e in p.expectations)

    # Every expectation of the local profile, unchanged (loading adds gpu.count from accelerators_per_node).
    assert set(pairs(local)) <= set(pairs(loaded)) and pairs(local)
    assert all(e.provenance in tuple(Provenance) for e in loaded.expectations)


def test_run_is_pytest_with_a_cluster(tmp_path):
    (tmp_path / "test_one.py").write_text("def test_one(request):\n    assert "
                                          "request.config.getoption('cluster') == 'local'\n")
    run = subprocess.run([sys.executable, "-m", "clusterbench.cli", "run", "-q", "-p", "no:cacheprovider",
                          "test_one.py",
                          "--report-dir", str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr


def test_a_pipe_closed_early_ends_quietly():
    command = f"{sys.executable} -m clusterbench.cli list | head -1"
    run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False)
    assert run.stdout.startswith("profiles") and "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr


@pytest.mark.parametrize("kind", ["sqlite", "binary"])
def test_report_of_a_file_of_the_wrong_kind_is_one_line(tmp_path, capsys, kind):
    path = tmp_path / "some.file"
    if kind == "sqlite":
        with sqlite3.connect(path) as db:
            db.execute("create table t (a)")
    else:
        path.write_bytes(bytes(range(256)) * 8)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "codec" not in err
    assert ("SQLite" in err) if kind == "sqlite" else ("not a text file" in err)
