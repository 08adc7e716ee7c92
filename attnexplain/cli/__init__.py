"""Command line: ``attnexplain explain`` (the main job), ``diagnose`` and ``benchmark``.

This package only parses arguments and calls the library; errors a user can fix are reported as
one line on stderr with exit status 2, never as a traceback. Each subcommand is one module with
``add_parser(subparsers)``, which registers its arguments and its ``handler``.

Building the parser imports neither torch nor the model libraries: ``attnexplain --help``, every
subcommand's ``--help`` and argument errors answer at once; a handler imports what it runs.
"""

from __future__ import annotations

from collections.abc import Sequence

from attnexplain import __version__
from attnexplain.cli.errors import Parser, UsageError, run_command

PROG = "attnexplain"
DESCRIPTION = (
    "Explain Vision Transformers: `explain` writes maps and figures for images, `benchmark` "
    "scores methods against masks and by perturbation, `diagnose` checks a model's attention "
    "for artefacts."
)


def build_parser() -> Parser:
    """The ``attnexplain`` argument parser with its subcommands."""
    from attnexplain.benchmark.cli import add_parser as add_benchmark
    from attnexplain.cli import diagnose, explain

    parser = Parser(prog=PROG, description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", required=True, parser_class=Parser, metavar="COMMAND"
    )
    explain.add_parser(subparsers)
    diagnose.add_parser(subparsers)
    add_benchmark(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attnexplain`` console script; returns the exit status."""
    return run_command(PROG, build_parser, argv)


__all__ = ["PROG", "UsageError", "build_parser", "main"]
