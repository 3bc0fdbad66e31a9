"""clusterbench's command-line options, and the pytest11 entry point that makes them work anywhere.

This module is what the `pytest11` entry point loads in every pytest run of the environment, so it
stays inert: it declares the options and, only when `--cluster` is on the command line, loads the
plugin (clusterbench.plugin) and the packaged acceptance suite. Other pytest runs see nothing but
a group of options in `--help`.

Why the early hook: pytest decides its rootdir and ini file from the free arguments BEFORE it loads
entry points (Config.parse in pytest 9), so in `--storage-target /mnt/scratch` it takes the
existing path `/mnt/scratch` for a test path and settles on rootdir /mnt. Once our options are
declared, `_redetermine_rootdir` works the rootdir and ini file out again from the arguments as
they really are, so `--opt value` and `--opt=value` mean the same for every option.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

DEFAULT_REPORT_DIR = "clusterbench-report"
PLUGIN_MODULE = "clusterbench.plugin"
# Set on the config when the packaged suite was added to the arguments (the user named no test paths).
PACKAGED_SUITE_KEY = pytest.StashKey[tuple[str, ...]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("clusterbench", "cluster acceptance")
    group.addoption(
        "--cluster",
        default="local",
        metavar="NAME|PATH",
        help="cluster profile: a name in the profiles folders, a path to a .toml file, or 'local' "
        "(built in: derived from this machine). Runs the acceptance suite. Default: local.",
    )
    group.addoption(
        "--profiles-dir",
        default=None,
        metavar="DIR",
        help="folder of cluster profiles, searched first (then $CLUSTERBENCH_PROFILES, ./clusters, "
        "the profiles shipped with clusterbench)",
    )
    group.addoption(
        "--report-dir",
        default=DEFAULT_REPORT_DIR,
        metavar="DIR",
        help=f"where results.json and the reports are written (default: {DEFAULT_REPORT_DIR}/)",
    )
    group.addoption("--quick", action="store_true", default=False, help="shorten every sweep")
    group.addoption(
        "--storage-target",
        action="append",
        default=None,
        metavar="PATH",
        help="a directory the storage probes test (repeatable); replaces the profile's [storage] targets",
    )
    group.addoption(
        "--history",
        default=None,
        metavar="PATH",
        help="SQLite run history: store this run in it (created if absent) and plot key figures over past runs",
    )
    group.addoption(
        "--compare",
        default=None,
        metavar="last|RUN_ID|window:N",
        help="check this run for regressions against stored runs of the same cluster and hardware (needs --history)",
    )
    group.addoption(
        "--calibrate",
        default=None,
        metavar="OUT.toml",
        help="write a profile whose expectations are this run's figures less a margin "
        "(a known-good cluster's baseline)",
    )
    group.addoption(
        "--calibrate-margin",
        default=None,
        type=float,
        metavar="FRACTION",
        help="how far below (above, for latencies) the measured figure the calibrated threshold lies (default: 0.10)",
    )


def cluster_requested(args: list[str]) -> bool:
    """True when the command line names --cluster (either form): the one thing that wakes the plugin."""
    return any(arg == "--cluster" or arg.startswith("--cluster=") for arg in args)


def packaged_suite_dir() -> Path:
    """The acceptance suite as installed (clusterbench.benchmarks; benchmarks/ in a checkout)."""
    import clusterbench.benchmarks

    return Path(clusterbench.benchmarks.__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, args: list[str], parser: pytest.Parser) -> None:
    """Before any conftest loads: fix the rootdir our options' values confused, then, when
    --cluster is given, load the plugin and (with no test path given) the packaged suite."""
    if not cluster_requested(args) and not _has_value_option_in_space_form(parser, args):
        return
    _redetermine_rootdir(early_config, args, parser)
    if not cluster_requested(args):
        return
    early_config.pluginmanager.import_plugin(PLUGIN_MODULE)
    _add_packaged_suite(early_config, args, parser)


def _value_options(parser: pytest.Parser) -> set[str]:
    """Our options that take a value (the ones whose value pytest can mistake for a path)."""
    group = parser.getgroup("clusterbench")
    names: set[str] = set()
    for option in group.options:
        if option.attrs().get("action") not in ("store_true", "store_false"):
            names.update(n for n in option.names() if n.startswith("--"))
    return names


def _has_value_option_in_space_form(parser: pytest.Parser, args: list[str]) -> bool:
    return bool(_value_options(parser) & set(args))


@dataclass(frozen=True)
class _Setup:
    rootpath: Path
    inipath: Path | None
    inicfg: object
    ignored_config_files: object


def _redetermine_rootdir(config: pytest.Config, args: list[str], parser: pytest.Parser) -> None:
    """Work out rootdir and ini file again from the free arguments, now that our options are known.

    Uses pytest 9's Config internals (_rootpath, _inipath, _inicfg, _inicache): pyproject asks for
    pytest>=9 because these and determine_setup's signature differ in pytest 8.
    """
    from _pytest.config.findpaths import determine_setup

    namespace = parser.parse_known_args(args, namespace=copy.copy(config.option))
    rootpath, inipath, inicfg, ignored = determine_setup(
        inifile=namespace.inifilename,
        override_ini=namespace.override_ini,
        args=namespace.file_or_dir,
        rootdir_cmd_arg=namespace.rootdir or None,
        invocation_dir=config.invocation_params.dir,
    )
    if rootpath == config.rootpath and inipath == config.inipath:
        return
    if not all(hasattr(config, name) for name in ("_rootpath", "_inipath", "_inicfg", "_inicache")):
        # A pytest whose internals moved: say so in one line rather than fail with a traceback.
        raise pytest.UsageError(f"clusterbench cannot re-read the rootdir on pytest {pytest.__version__}: "
                                "give option values with '=' (--storage-target=PATH)")
    old_addopts = list(config.getini("addopts"))
    config._rootpath = rootpath
    config._inipath = inipath
    config._inicfg = inicfg
    config._ignored_config_files = ignored
    config._inicache.clear()
    parser.extra_info["rootdir"] = str(rootpath)
    parser.extra_info["inifile"] = str(inipath)
    # The addopts of the wrong ini file were put in front of the arguments; the right one's go there instead.
    if old_addopts and args[: len(old_addopts)] == old_addopts:
        del args[: len(old_addopts)]
    new_addopts = list(config.getini("addopts"))
    args[:0] = new_addopts
    if namespace.confcutdir is None:  # pytest defaulted it from the wrong ini file's folder
        config.known_args_namespace.confcutdir = str(inipath.parent if inipath is not None else rootpath)
    config.known_args_namespace = parser.parse_known_args(args, namespace=config.known_args_namespace)


def _add_packaged_suite(config: pytest.Config, args: list[str], parser: pytest.Parser) -> None:
    """With no test path on the command line and no `testpaths` in the ini file (i.e. not the repo
    checkout), run the packaged suite plus the site's own test files in the current directory."""
    namespace = parser.parse_known_args(args, namespace=copy.copy(config.option))
    if namespace.file_or_dir or config.getini("testpaths"):
        return
    added = (str(packaged_suite_dir()), str(config.invocation_params.dir))
    args.extend(added)
    config.stash[PACKAGED_SUITE_KEY] = added


def profiles_env_dir() -> Path | None:
    """The profiles folder named by $CLUSTERBENCH_PROFILES, if any."""
    value = os.environ.get("CLUSTERBENCH_PROFILES")
    return Path(value) if value else None
