"""The documentation builds in strict mode, and its figures and extension behave.

``mkdocs build --strict`` fails on any warning: a broken link, a nav entry without a page, a
docstring Griffe cannot parse, a cross-reference mkdocs-autorefs cannot resolve.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Size budget of one committed figure.
MAX_FIGURE_BYTES = 300_000


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is in the 'docs' extra")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    site = tmp_path / "site"
    for page in ("index.html", "methods/attention-rollout/index.html", "api/methods/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api/methods/index.html").read_text()
    # The Sphinx roles and math of the docstrings were rendered, not printed literally.
    assert ":class:`" not in api and ":math:`" not in api
    assert 'class="arithmatex"' in api


def test_figures_exist_are_small_and_used():
    figures = sorted((DOCS / "figures").glob("*.png"))
    assert figures, "run scripts/make_doc_figures.py"
    pages = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    for figure in figures:
        assert figure.stat().st_size <= MAX_FIGURE_BYTES, figure.name
        assert f"figures/{figure.name}" in pages, f"{figure.name} is not shown on any page"
    for page in DOCS.rglob("*.md"):  # every figure a page shows exists, next to the page
        for reference in re.findall(r"([\w./-]*figures/[\w.-]+\.png)", page.read_text()):
            assert (page.parent / reference).is_file(), (page.name, reference)


def _extension():
    pytest.importorskip("griffe", reason="griffe comes with mkdocstrings-python ('docs' extra)")
    spec = importlib.util.spec_from_file_location("sphinx_roles", DOCS / "_ext/sphinx_roles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_extension_rewrites_math():
    ext = _extension()
    text = "Inline :math:`A_{h,q}` here.\n\n.. math:: x = 1\n          + 2\n\nafter\n"
    out = ext._math(text)
    assert "$A_{h,q}$" in out
    assert "$$\nx = 1\n+ 2\n$$" in out
    assert out.rstrip().endswith("after")


def test_extension_rewrites_roles_as_optional_references():
    ext = _extension()
    import griffe

    module = griffe.Module("pkg")
    module.set_member("thing", griffe.Function("thing", parent=module))
    out = ext._roles(module, "see :func:`thing` and :class:`~torch.nn.Module`")
    assert '<autoref identifier="pkg.thing" optional><code>thing</code></autoref>' in out
    assert '<autoref identifier="torch.nn.Module" optional><code>Module</code></autoref>' in out
