"""The Python examples of ``docs/class-specific.md`` run as written, in order, on one namespace."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "class-specific.md"


def test_class_specific_page_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    assert len(blocks) == 3
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(compile(block, str(PAGE), "exec"), namespace)
    lines = printed.getvalue().splitlines()
    # The outputs the page shows in its comments.
    assert lines[:4] == [
        "['pink triangle', 'red square', 'yellow cross']",
        "a pink triangle, a red square and a yellow cross",
        "[1, 2, 4] 0",
        "torch.Size([3, 1, 96, 96])",
    ]
    assert lines[-1] == "tensor([0., 0., 0.], dtype=torch.float64)"
