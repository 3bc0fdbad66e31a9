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
