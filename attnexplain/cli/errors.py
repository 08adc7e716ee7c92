"""The CLI's error type and an argument parser that reports errors as one line."""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """A problem with the command line or its files, reported as one line."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")
