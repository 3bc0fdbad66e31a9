"""clusterbench's command-line options.

Give values with '=' (--report-dir=out): pytest looks for its rootdir among the arguments before
any plugin has declared its options, so `--report-dir out` with an existing `out` is mistaken for
a test path.
"""

from __future__ import annotations

import pytest

DEFAULT_REPORT_DIR = "clusterbench-report"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("clusterbench", "cluster acceptance")
    group.addoption(
        "--cluster",
        default="local",
        metavar="NAME|PATH",
        help="cluster profile: a name in the profiles folder, a path to a .toml file, or 'local' "
        "(built in: derived from this machine). Default: local.",
    )
    group.addoption(
        "--profiles-dir",
        default=None,
        metavar="DIR",
        help="folder of cluster profiles (default: clusters/ under the rootdir)",
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
        help="write a profile whose expectations are this run's figures less a margin (a known-good cluster's baseline)",
    )
    group.addoption(
        "--calibrate-margin",
        default=None,
        type=float,
        metavar="FRACTION",
        help="how far below (above, for latencies) the measured figure the calibrated threshold lies (default: 0.10)",
    )
