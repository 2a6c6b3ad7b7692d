"""The ``conductor`` command (daemon and demo)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="conductor", description="Run conductor daemons.")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run a conductor daemon")
    sub.add_parser("demo", help="run the demo")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 2
    print(f"conductor {args.command}: not available yet", file=sys.stderr)
    return 0
