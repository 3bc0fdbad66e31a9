#!/usr/bin/env python
"""Run mypy on the installed package layout and on tools/, and print the paths of the files in this tree.

    python tools/typecheck.py                 # clusterbench (with probes/, reports/, benchmarks/) and tools/*.py
    python tools/typecheck.py -- --strict     # anything after -- goes to mypy as it is

setup.py installs the folders probes/, reports/, benchmarks/ and clusters/ as subpackages of
clusterbench. mypy resolves modules from folders alone: it follows neither setup.py's mapping nor the
import hook of an editable install, so in this tree it cannot find clusterbench.probes. This stages
the installed layout as links (.mypy_cache/tree/clusterbench/, each entry a link into the tree, the
mapped folders linked in under their package names), runs mypy there with pyproject.toml's [tool.mypy],
and rewrites each reported path to the file in the tree. The stage sits in mypy's cache directory,
which mypy keeps out of git, and stays put between runs so that its incremental cache stays valid.
Exit status: mypy's (0: no finding).
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".mypy_cache"
STAGE = CACHE_DIR / "tree"
TOP_PACKAGE = "clusterbench"
# mypy's report lines start with the file's path: "path/to/file.py:12: error: ..." (also notes).
REPORTED_PATH = re.compile(r"^(?P<path>[^:\s]+\.pyi?)(?=:)")


def package_dirs() -> dict[str, str]:
    """setup.py's package -> folder mapping (clusterbench.probes -> probes, ...)."""
    return runpy.run_path(str(REPO_ROOT / "setup.py"), run_name="setup_for_typecheck")["PACKAGE_DIRS"]


def stage_tree() -> None:
    """Lay out the installed package under STAGE as links into the tree."""
    if STAGE.exists():
        shutil.rmtree(STAGE)
    package_root = STAGE / TOP_PACKAGE
    package_root.mkdir(parents=True)
    mapped = package_dirs()
    for entry in (REPO_ROOT / mapped[TOP_PACKAGE]).iterdir():
        if entry.name != "__pycache__":
            (package_root / entry.name).symlink_to(entry)
    for package, folder in mapped.items():
        if package != TOP_PACKAGE:
            parent, _, name = package.rpartition(".")
            STAGE.joinpath(*parent.split("."), name).symlink_to(REPO_ROOT / folder, target_is_directory=True)


def in_tree(line: str) -> str:
    """The report line with a staged path replaced by the tree's path, relative to the repo root."""
    match = REPORTED_PATH.match(line)
    if not match:
        return line
    real = Path(os.path.realpath(STAGE / match["path"]))
    shown = real.relative_to(REPO_ROOT).as_posix() if real.is_relative_to(REPO_ROOT) else str(real)
    return shown + line[match.end():]


def main(argv: list[str]) -> int:
    stage_tree()
    # The staged package by its relative path, so that mypy names its modules from the stage; the
    # tools are scripts that import the package, checked where they are.
    tools = sorted(str(path) for path in (REPO_ROOT / "tools").glob("*.py"))
    command = [sys.executable, "-m", "mypy", "--config-file", str(REPO_ROOT / "pyproject.toml"),
               "--cache-dir", str(CACHE_DIR), *argv, TOP_PACKAGE, *tools]
    mypy = subprocess.run(command, cwd=STAGE, capture_output=True, text=True, check=False)
    for line in mypy.stdout.splitlines():
        print(in_tree(line))
    print(mypy.stderr, end="", file=sys.stderr)
    return mypy.returncode


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(main(args[1:] if args[:1] == ["--"] else args))
