"""The README's first snippet runs as written (nothing injected) and gives the shapes it says.

Every other block of the README runs in ``tests/test_doc_blocks.py``; this one is also checked
for its results.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_first_snippet_runs_as_written():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["maps"].shape == (1, 1, 96, 96)
    heads = namespace["heads"]
    assert heads.shape == (1, namespace["model"].config.num_attention_heads, 8, 8)
    assert torch.isfinite(namespace["maps"]).all() and (namespace["maps"] > 0).all()


def test_readme_keeps_the_two_commands():
    text = README.read_text()
    block = re.search(
        r"## Two commands on a fresh machine\n\n(?:<!--[^\n]*-->\n)?```bash\n(.*?)```", text, re.S
    )
    assert [line.split()[:2] for line in block.group(1).splitlines()] == [
        ["make", "explain"],
        ["make", "test"],
    ]
