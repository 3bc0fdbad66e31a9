"""The `clusterbench` command: list what clusterbench knows, start a profile, run the suite, and
work on what runs left behind.

Measuring is pytest's job (`pytest --cluster=...`; `clusterbench run` is the same, for people who
do not think in pytest). `list` shows profiles, metrics and families; `init` writes a starter
profile for this machine; `report` and `history` live in the modules that own their subject and
register themselves through `add_parser(subparsers)`, setting `run` to their handler.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from clusterbench import __version__
from clusterbench.errors import ClusterbenchError

SUBCOMMAND_MODULES = ("clusterbench.reports.command", "clusterbench.history.command")


# --- list -------------------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    from clusterbench.catalog import find_profile, profile_search_path
    from clusterbench.metrics import FAMILIES, METRICS

    folders = profile_search_path(args.profiles_dir, invocation_dir=Path.cwd())
    print("profiles (--cluster=NAME; searched in this order):")
    print("  local  (built in: derived from this machine)")
    seen: set[str] = set()
    for folder in folders:
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            if path.stem not in seen and find_profile(path.stem, folders) == path:
                seen.add(path.stem)
                print(f"  {path.stem}  ({path})")
    print("metrics (name, unit, family: select with -m FAMILY):")
    width = max(len(name) for name in METRICS)
    for name, spec in sorted(METRICS.items()):
        print(f"  {name:<{width}}  {spec.unit:<12}  {spec.family}")
    print(f"families: {', '.join(FAMILIES)}")
    return 0


# --- init -------------------------------------------------------------------------------------


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def starter_profile_text(profile, name: str) -> str:
    """A profile for this machine: the cluster as detected, and the local profile's expectations
    (from the hardware table, each with its provenance and source), ready to edit."""
    cluster = profile.cluster
    lines = [
        "# Written by `clusterbench init` from this machine; edit it, then run pytest --cluster=THIS_FILE.",
        *(f"# {note}" for note in profile.notes),
        "",
        "[cluster]",
        f"name = {_toml_value(name)}",
        f"nodes = {cluster.nodes}",
        f"accelerators_per_node = {cluster.accelerators_per_node}",
        f"accelerator = {_toml_value(cluster.accelerator)}",
    ]
    if not profile.expectations:
        lines += ["", "# No expectation: the hardware table knows no figure for this machine. Add [[expect]]",
                  "# entries (see README: Profiles), or calibrate one from a known-good run (--calibrate)."]
    for e in profile.expectations:
        lines += ["", "[[expect]]", f"metric = {_toml_value(e.metric)}"]
        if e.params:
            lines.append(f"params = {_toml_value(dict(e.params))}")
        lines += [
            f"target = {_toml_value(e.target)}",
            f"unit = {_toml_value(e.unit)}",
            f"better = {_toml_value(e.better.value)}",
            f"tolerance = {_toml_value(e.tolerance)}",
            f"warn = {_toml_value(e.warn)}",
            f"provenance = {_toml_value(e.provenance.value)}",
            f"source = {_toml_value(e.source)}",
            f"required = {_toml_value(e.required)}",
        ]
    return "\n".join(lines) + "\n"


def run_init(args: argparse.Namespace) -> int:
    from clusterbench.catalog import resolve_cluster
    from clusterbench.local_profile import build_local_profile

    path = Path(args.output)
    if path.exists() and not args.force:
        raise ClusterbenchError(f"{path} exists; give another path or --force to replace it")
    name = args.name or path.stem
    text = starter_profile_text(build_local_profile(), name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ClusterbenchError(f"cannot write {path}: {exc.strerror or exc}") from None
    loaded = resolve_cluster(str(path), path.parent)  # what we wrote must load: a ProfileError is one line
    print(f"clusterbench: wrote {path} ({len(loaded.expectations)} expectations); run: pytest --cluster={path}")
    return 0


# --- run --------------------------------------------------------------------------------------


def run_pytest(args: argparse.Namespace) -> int:
    """`clusterbench run [--cluster=NAME] [PYTEST ARGS...]` is `python -m pytest` with --cluster (default local)."""
    import pytest

    pytest_args = list(args.pytest_args)
    if not any(a == "--cluster" or a.startswith("--cluster=") for a in pytest_args):
        pytest_args.insert(0, "--cluster=local")
    return int(pytest.main(pytest_args))


# --- the command ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clusterbench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"clusterbench {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = subparsers.add_parser("list", help="profiles, metrics (with units) and families")
    listing.add_argument("--profiles-dir", metavar="DIR", help="a profiles folder to search first")
    listing.set_defaults(run=run_list)
    init = subparsers.add_parser("init", help="write a starter profile for this machine")
    init.add_argument("output", nargs="?", default="clusters/local-node.toml", metavar="OUT.toml",
                      help="where to write it (default: clusters/local-node.toml)")
    init.add_argument("--name", help="the cluster's name (default: the file's name)")
    init.add_argument("--force", action="store_true", help="replace an existing file")
    init.set_defaults(run=run_init)
    run = subparsers.add_parser("run", help="run the acceptance suite: pytest --cluster=... (arguments pass to pytest)",
                                prefix_chars="\0")  # every argument, options included, goes to pytest
    run.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="PYTEST_ARGS")
    run.set_defaults(run=run_pytest)
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def _quiet_broken_pipe() -> int:
    """`clusterbench ... | head`: the reader left. Point stdout at /dev/null so that the interpreter's
    final flush does not raise again, and end as a process killed by SIGPIPE would report."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = int(args.run(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that left surfaces here as BrokenPipeError
        return status
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except ClusterbenchError as exc:
        print(f"clusterbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:  # a binary file where text was expected (e.g. a .sqlite given to `report`)
        print(f"clusterbench {args.command}: error: not a text file of the kind expected "
              f"({exc.reason} at byte {exc.start})",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"clusterbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
