"""``--list``-style flags: print what the registry offers and exit, like ``--version``.

The registry imports torch and every method, so it is read only when such a flag is given;
building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Iterable
from typing import Any, NoReturn


class _ListAction(argparse.Action):
    """Print ``describe()`` and exit with status 0 when the flag is seen."""

    def __init__(self, option_strings: list[str], dest: str, describe: Callable[[], str], **kw):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)
        self.describe = describe

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        print(self.describe().rstrip())  # on stdout, like --help
        parser.exit()


def add_listing(
    parser: argparse.ArgumentParser, flag: str, describe: Callable[[], str], help: str
) -> None:
    """Add ``flag`` to ``parser``: it prints ``describe()`` and exits."""
    parser.add_argument(flag, action=_ListAction, describe=describe, help=help)


def method_table(names: Iterable[str]) -> str:
    """One line per registry method: name, kind, description and its options with defaults.

    Args:
        names: registry names (``attnexplain.benchmark.registry.METHODS``) to list.

    Returns:
        The text, one method per line (plus an indented line of options where it has some).
    """
    from attnexplain.benchmark.registry import METHODS

    lines = []
    for name in names:
        spec = METHODS[name]
        head = " (needs a classification head)" if spec.needs_head else ""
        lines.append(f"{name:<22} {spec.kind:<10} {spec.description}{head}")
        options = spec.options()
        if options:
            described = ", ".join(f"{key}={_default(p)}" for key, p in options.items())
            lines.append(f"{'':<33}options: {described}")
    return "\n".join(lines)


def _default(parameter: inspect.Parameter) -> str:
    return "required" if parameter.default is parameter.empty else repr(parameter.default)
