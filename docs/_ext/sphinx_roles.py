"""Griffe extension for the docs build: render the package's Sphinx roles with mkdocstrings.

The package's docstrings are Google style with Sphinx roles (``:class:`~x.Y```, ``:func:``,
``:math:`...```, ``.. math::``), which Markdown would print literally. Before mkdocstrings renders
a docstring this extension rewrites

- ``:class:`~pkg.mod.Name``` (and ``func``, ``meth``, ``attr``, ``data``, ``mod``, ``exc``,
  ``obj``) into an *optional* autorefs cross-reference: a link when the target is rendered
  somewhere in the docs, plain code otherwise (so strict mode never fails on a target the API
  pages do not show, such as an external ``torch`` class);
- ``:math:`x``` into arithmatex inline math ``$x$`` and a ``.. math::`` directive into a
  ``$$ ... $$`` block.

Short names (``:func:`resolve_adapter```) are resolved in the scope of the documented object,
like Sphinx does, with Griffe's own name resolution.
"""

from __future__ import annotations

import html
import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|exc|obj|const):`(~?)([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")


def _identifier(obj: griffe.Object, name: str) -> str:
    """The full path ``name`` refers to from ``obj``'s scope, ``name`` itself if unknown."""
    if name.startswith("attnexplain."):
        return name
    head, _, tail = name.partition(".")
    try:
        resolved = obj.resolve(head)
    except Exception:  # NameResolutionError, or an alias that cannot be followed
        return name
    return f"{resolved}.{tail}" if tail else resolved


def _roles(obj: griffe.Object, text: str) -> str:
    def cross_reference(match: re.Match[str]) -> str:
        short, target = match.group(1) == "~", match.group(2).strip()
        bare = target.removesuffix("()")
        title = bare.rsplit(".", 1)[-1] if short else bare
        if target.endswith("()"):
            title += "()"
        identifier = html.escape(_identifier(obj, bare), quote=True)
        code = f"<code>{html.escape(title)}</code>"
        return f'<autoref identifier="{identifier}" optional>{code}</autoref>'

    return _ROLE.sub(cross_reference, text)


def _math(text: str) -> str:
    text = _MATH_ROLE.sub(lambda match: f"${match.group(1).strip()}$", text)
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        match = _MATH_DIRECTIVE.match(lines[index])
        if match is None:
            out.append(lines[index])
            index += 1
            continue
        indent = match.group("indent")
        body = [match.group("first")] if match.group("first").strip() else []
        index += 1
        # The directive's content: every following line indented deeper than the directive.
        block: list[str] = []
        while index < len(lines) and (
            not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > len(indent)
        ):
            block.append(lines[index])
            index += 1
        while block and not block[-1].strip():
            block.pop()
        body += textwrap.dedent("\n".join(block)).splitlines() if block else []
        out += ["", f"{indent}$$", *(f"{indent}{line.strip()}" for line in body), f"{indent}$$", ""]
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles and math in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Griffe 2's hook: the package and all its modules are loaded."""
        self._visit(pkg)

    def on_package_loaded(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """The same hook under its Griffe 1 name (a second pass would change nothing)."""
        self._visit(pkg)

    def _visit(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _roles(obj, _math(obj.docstring.value))
        for member in obj.members.values():
            if not member.is_alias:
                self._visit(member)
