"""The CLI's error type, a parser whose errors are one line, and the one-line error report.

Every error a user can fix (a bad argument, a model that cannot be loaded, an unwritable output
folder, a corrupt run folder) is printed as one line ``PROG: error: MESSAGE`` on stderr and the
command exits with status 2; only bugs show a traceback. Python warnings raised during a command
(for example a method's note about its settings) are printed as one line each, too.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence

#: Exit status of a command that failed on its input (argparse's own convention).
USAGE_EXIT = 2
#: Exit status after Ctrl-C (128 + SIGINT).
INTERRUPTED_EXIT = 130


class UsageError(Exception):
    """A problem with the command line or its files, reported as one line."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def positive_int(text: str) -> int:
    """An argparse ``type``: a positive integer, or argparse's one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def one_line(message: object) -> str:
    """``message`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(message).split())


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "bad input", not "bug" (imported only once one was raised)."""
    from attnexplain.capture.errors import UnsupportedModelError
    from attnexplain.zoo.hub import ModelLoadError

    # ImportError: an optional dependency is missing (the loaders name the extra to install).
    return (UsageError, ValueError, OSError, ImportError, ModelLoadError, UnsupportedModelError)


@contextlib.contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Print warnings as ``PROG: warning: MESSAGE`` (one line each) while inside."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {one_line(message)}", file=file or sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def run_command(
    prog: str,
    build_parser: Callable[[], argparse.ArgumentParser],
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv`` and run the chosen handler (``args.handler(args)``), reporting user errors.

    Args:
        prog: the name errors are prefixed with (``attnexplain``, ``attnexplain benchmark``).
        build_parser: makes the parser; each (sub)command sets its ``handler`` default.
        argv: the arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The handler's exit status; :data:`USAGE_EXIT` after a user error (one line on stderr),
        :data:`INTERRUPTED_EXIT` after Ctrl-C.
    """
    try:
        args = build_parser().parse_args(argv)
        with one_line_warnings(prog):
            return args.handler(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as error:
        if not isinstance(error, UsageError) and not isinstance(error, _user_errors()):
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return USAGE_EXIT
