"""Command line: ``attnexplain explain`` (the main job) and ``attnexplain benchmark``.

This package only parses arguments and calls the library; errors a user can fix are reported as
one line on stderr with exit status 2, never as a traceback. Each subcommand is one module with
``add_parser(subparsers)``, which registers its arguments and its handler.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from attnexplain.cli.errors import Parser, UsageError


def build_parser() -> Parser:
    """The ``attnexplain`` argument parser with its subcommands."""
    from attnexplain.cli import diagnose, explain

    parser = Parser(prog="attnexplain", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    explain.add_parser(subparsers)
    diagnose.add_parser(subparsers)
    try:
        from attnexplain.benchmark.cli import add_parser
    except ImportError:
        pass
    else:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attnexplain`` console script; returns the exit status."""
    from attnexplain.capture import UnsupportedModelError

    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except (UsageError, UnsupportedModelError, ValueError, FileNotFoundError) as error:
        print(f"attnexplain: error: {error}", file=sys.stderr)
        return 2


__all__ = ["UsageError", "build_parser", "main"]
