"""The wheel, as a new user gets it: built from this tree, installed into a fresh venv outside the
checkout, then README's command run in an empty directory (space-form options) with a site test file.

Also checks that the wheel holds exactly the modules and data files of the folders setup.py maps, and
that a subpackage added to the tree later ships without anyone listing it (setup.py finds packages by
their __init__.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The folders of the tree and where they install (setup.py's PACKAGE_DIRS, restated as the expectation).
PACKAGE_DIRS = {"clusterbench": "clusterbench", "probes": "clusterbench/probes", "reports": "clusterbench/reports",
                "benchmarks": "clusterbench/benchmarks", "clusters": "clusterbench/profiles"}
SHIPPED_SUFFIXES = (".py", ".toml", ".j2")
SITE_TEST = Path(__file__).parent / "data" / "site" / "site_copy_check.py"


def build_wheel(source: Path, out: Path) -> Path:
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(source)], capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    (path,) = out.glob("clusterbench-*.whl")
    return path


def packaging_copy(destination: Path) -> Path:
    """What the build reads, copied: building in the checkout would reuse its build/ folder, which keeps
    modules since moved or deleted and would ship them."""
    destination.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, destination / name)
    for folder in PACKAGE_DIRS:
        shutil.copytree(REPO / folder, destination / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return packaging_copy(tmp_path_factory.mktemp("source") / "clusterbench")


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    return build_wheel(source, tmp_path_factory.mktemp("wheel"))


def _tree_files(root: Path) -> set[str]:
    files = set()
    for folder, package in PACKAGE_DIRS.items():
        for path in (root / folder).rglob("*"):
            if path.is_file() and path.suffix in SHIPPED_SUFFIXES and "__pycache__" not in path.parts:
                files.add(f"{package}/{path.relative_to(root / folder).as_posix()}")
    return files


def _shipped_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if name.endswith(SHIPPED_SUFFIXES) and ".dist-info/" not in name}


def test_wheel_holds_exactly_the_modules_and_data_files_of_the_tree(source, wheel):
    shipped = _shipped_files(wheel)
    tree = _tree_files(source)
    missing = sorted(tree - shipped)
    assert not missing, f"in the tree but not in the wheel (a folder without __init__.py is no package): {missing}"
    assert not sorted(shipped - tree), "in the wheel but not in the tree's mapped folders"
    with zipfile.ZipFile(wheel) as archive:
        entry_points = next(archive.read(n).decode() for n in archive.namelist() if n.endswith("entry_points.txt"))
    assert "[pytest11]" in entry_points and "clusterbench.options" in entry_points


def test_a_subpackage_added_later_ships_without_being_listed(tmp_path):
    source = packaging_copy(tmp_path / "source")
    added = ("probes/added_later", "reports/added_later", "reports/added_later/deeper", "clusterbench/added_later")
    for package in added:
        (source / package).mkdir()
        (source / package / "__init__.py").write_text("")
        (source / package / "module.py").write_text("VALUE = 1\n")
    shipped = _shipped_files(build_wheel(source, tmp_path / "wheel"))
    for installed in ("clusterbench/probes/added_later", "clusterbench/reports/added_later",
                      "clusterbench/reports/added_later/deeper", "clusterbench/added_later"):
        assert {f"{installed}/__init__.py", f"{installed}/module.py"} <= shipped


def test_installed_wheel_runs_readme_command_in_an_empty_directory(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                             capture_output=True, text=True, timeout=300, env=env, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    work = tmp_path / "empty"
    work.mkdir()
    where = subprocess.run([str(python), "-c", "import clusterbench; print(clusterbench.__file__)"], cwd=work,
                           capture_output=True, text=True, timeout=60, env=env, check=False)
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr  # the wheel, not the checkout
    shutil.copy(SITE_TEST, work / "test_site_copy.py")
    (work / "out").mkdir()  # an existing directory, given in space form
    def pytest(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), "-m", "pytest", "-p", "no:cacheprovider", *args],
                              cwd=work, capture_output=True, text=True, timeout=300, env=env, check=False)

    # README's first command, narrowed to the compute family to keep this test short
    run = pytest("--cluster=local", "--quick", "--report-dir", "out", "-m", "compute")
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((work / "out" / "results.json").read_text())
    assert any("test_gemm_throughput[fp32]" in t["nodeid"] for t in results["tests"])
    assert all((work / "out" / name).is_file() for name in ("report.html", "summary.md", "metrics.prom"))
    # The site's own file joins the packaged suite (here alone, by -k; not `-k site`: every path under
    # site-packages matches that).
    run = pytest("--cluster", "local", "--report-dir", "out", "-k", "test_site_copy")
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((work / "out" / "results.json").read_text())
    assert "test_site_copy.py::test_site_copy" in {t["nodeid"] for t in results["tests"]}
    version = subprocess.run([str(venv / "bin" / "clusterbench"), "--version"], capture_output=True, text=True,
                             timeout=60, env=env, check=False)
    assert version.stdout.startswith("clusterbench ")
