"""The package list, derived from the tree: pyproject.toml declares everything else about the build.

The design card fixes probes/, reports/ and benchmarks/ at the top of the tree; they install as
clusterbench.probes, clusterbench.reports and clusterbench.benchmarks so that no generic top-level
name is claimed, and clusters/ installs as clusterbench.profiles (package data). pyproject.toml cannot
name packages under a prefix that their folder lacks, so the list is computed here: every folder with an
__init__.py below a mapped folder is a subpackage of it, and a new one ships without anyone listing it.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
PACKAGE_DIRS = {
    "clusterbench": "clusterbench",
    "clusterbench.probes": "probes",
    "clusterbench.reports": "reports",
    "clusterbench.benchmarks": "benchmarks",
    "clusterbench.profiles": "clusters",
}


def packages_in_tree() -> list[str]:
    """Each mapped package and every subpackage of its folder, named under that package."""
    packages = []
    for package, folder in PACKAGE_DIRS.items():
        packages.append(package)
        packages.extend(f"{package}.{sub}" for sub in find_packages(where=str(HERE / folder)))
    return packages


# setuptools runs this file as __main__; tools/typecheck.py reads PACKAGE_DIRS from it without building.
if __name__ == "__main__":
    setup(package_dir=PACKAGE_DIRS, packages=packages_in_tree())
