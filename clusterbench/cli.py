"""The `clusterbench` command: work on what runs left behind, outside pytest.

Measuring is pytest's job (`pytest --cluster=...`); this command re-renders reports from a
results.json and manages the run history. Each subcommand lives in the module that owns its
subject and registers itself through `add_parser(subparsers)`, setting `run` to its handler.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from clusterbench.errors import ClusterbenchError

SUBCOMMAND_MODULES = ("clusterbench.reports.command", "clusterbench.history.command")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clusterbench", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ClusterbenchError as exc:
        print(f"clusterbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"clusterbench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
