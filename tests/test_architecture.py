"""The shape of the code, checked: the data flow the design card fixes, held by tests rather than by
hope. Read from the source (ast), so that these run in a second and name the offending line.

- no import cycle among the package's modules, counting the imports made for type checking (under
  TYPE_CHECKING) too: two modules that need each other's types are one job split in two. Imports
  inside functions (torch, matplotlib on first use) are not counted;
- every Check is made in clusterbench/judge/;
- probes know nothing of pytest, profiles, the judge or the run;
- no module over MAX_LINES lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Folder -> the package it installs as (setup.py's PACKAGE_DIRS).
PACKAGE_FOLDERS = {
    "clusterbench": "clusterbench",
    "probes": "clusterbench.probes",
    "reports": "clusterbench.reports",
    "benchmarks": "clusterbench.benchmarks",
}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    modules = {}
    for folder, package in PACKAGE_FOLDERS.items():
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            modules[name.removesuffix(".__init__")] = path
    return modules


MODULES = _modules()


def _module_level_imports(name: str, path: Path) -> set[str]:
    """The package's modules `name` imports when it is imported."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)

    visit(tree.body)
    imported = {m for m in found if m in MODULES and m != name}
    # Importing a.b.c imports a and a.b first.
    return imported | {parent for m in imported for parent in _parents(m) if parent in MODULES and parent != name}


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_no_import_cycle_in_the_package():
    # A package's __init__ importing its own submodules is no cycle of concern (Python loads the
    # package first); what is checked is module <-> module across the tree.
    graph = {name: {m for m in _module_level_imports(name, path) if not name.startswith(m + ".")}
             for name, path in MODULES.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _calls_of(path: Path, callee: str) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == callee]


def test_every_check_is_made_in_the_judge_package():
    judge = REPO_ROOT / "clusterbench" / "judge"
    elsewhere = [f"{path.relative_to(REPO_ROOT)}:{line}" for path in MODULES.values()
                 if judge not in path.parents for line in _calls_of(path, "Check")]
    assert not elsewhere, elsewhere


@pytest.mark.parametrize("forbidden", ["pytest", "clusterbench.profile", "clusterbench.judge", "clusterbench.session",
                                       "clusterbench.plugin", "clusterbench.reports"])
def test_probes_know_nothing_of_pytest_profiles_verdicts_or_the_run(forbidden):
    offenders = []
    for name, path in MODULES.items():
        if not name.startswith("clusterbench.probes"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == forbidden or n.startswith(forbidden + ".") for n in names):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_no_module_is_over_the_line_limit():
    long = {str(path.relative_to(REPO_ROOT)): n for path in MODULES.values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


@pytest.mark.parametrize("folder, module", [("probes", "probes.stats"), ("reports", "reports.atomic")])
def test_a_mapped_folder_is_refused_under_its_top_level_name(folder, module):
    """From the checkout root `import probes.stats` would load a second copy of clusterbench.probes.stats
    (its own classes and registrations): refused with what to import instead."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode != 0 and f"import clusterbench.{folder}" in run.stderr, run.stderr
