"""Route command-line method options to the methods whose constructor takes them.

A flag such as ``--layer 2`` names a constructor keyword (``layer``). It is passed to every
chosen method whose constructor has that keyword (read from the signature of its registry
entry's ``attribution`` class), converted to the type that constructor's annotation accepts: a
number goes to a numeric parameter, ``none`` to an optional one, a word to a ``Literal`` or a
``str`` one. A method whose parameter cannot take the value keeps its default and a note says
so; a flag that no chosen method can take is an error.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from attnexplain.cli.errors import UsageError


def _alternatives(hint: Any) -> list[Any]:
    """The members of a union / ``Optional`` / ``Literal`` hint, flattened."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return [a for arg in typing.get_args(hint) for a in _alternatives(arg)]
    if origin is typing.Literal:
        return [("literal", value) for value in typing.get_args(hint)]
    return [hint]


def _number(text: str) -> int | float | None:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None


def describe_hint(hint: Any) -> str:
    """What a parameter annotated ``hint`` takes on the command line, in words."""
    words = []
    for alternative in _alternatives(hint):
        if isinstance(alternative, tuple):
            words.append(repr(alternative[1]))
        elif alternative is type(None):
            words.append("none")
        elif alternative in (int, float, str):
            words.append({int: "an integer", float: "a number", str: "a name"}[alternative])
    return " or ".join(words) or "no value the command line can give"


def convert(text: str, hint: Any) -> Any:
    """``text`` as a value of the parameter type ``hint``.

    Raises:
        ValueError: if ``hint`` takes no value spelled ``text`` (a number is never turned into
            a name, so ``--layer 2`` does not reach a parameter that wants a module name).
    """
    alternatives = _alternatives(hint)
    if text.lower() == "none" and type(None) in alternatives:
        return None
    literals = [value for kind, value in (a for a in alternatives if isinstance(a, tuple))]
    if text in literals:
        return text
    number = _number(text)
    if isinstance(number, int) and int in alternatives:
        return number
    if number is not None and float in alternatives:
        return float(number)
    if number is None and str in alternatives:
        return text
    raise ValueError(f"takes {describe_hint(hint)}")


def _hints(attribution: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(attribution.__init__)
    except (NameError, TypeError):  # an annotation that cannot be resolved: take every value
        return {}


def route_options(
    values: Mapping[str, tuple[str, str]], methods: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Keyword arguments per method from the options the user gave.

    Args:
        values: constructor keyword -> ``(flag, text)`` for the flags given, e.g.
            ``{"layer": ("--layer", "2")}``.
        methods: registry names of the chosen methods.

    Returns:
        ``(options, notes)``: the keyword arguments of each method, and one line per method that
        has the keyword but cannot take the value (it keeps its default).

    Raises:
        UsageError: for a flag no chosen method has, or whose value none of them can take.
    """
    from attnexplain.benchmark.registry import METHODS

    options: dict[str, dict[str, Any]] = {name: {} for name in methods}
    notes: list[str] = []
    for keyword, (flag, text) in values.items():
        takers = [name for name in methods if keyword in METHODS[name].options()]
        if not takers:
            elsewhere = [name for name, spec in METHODS.items() if keyword in spec.options()]
            raise UsageError(
                f"{flag}: none of the chosen methods ({', '.join(methods)}) takes {keyword}; "
                f"methods that do: {', '.join(elsewhere) or 'none'}"
            )
        refusals = []
        for name in takers:
            spec = METHODS[name]
            hint = _hints(spec.attribution).get(keyword, str)  # type: ignore[arg-type]
            try:
                options[name][keyword] = convert(text, hint)
            except ValueError as error:
                refusals.append(f"{name}'s {keyword} {error}")
        if len(refusals) == len(takers):
            raise UsageError(f"{flag} {text!r}: {'; '.join(refusals)}")
        notes += [f"{flag} {text} is not passed on: {refusal}" for refusal in refusals]
    return options, notes
