"""The README's usage example runs as written (on the embedded tiny HF ViT)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace = {"image": Image.new("RGB", (128, 100), (40, 160, 90))}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["maps"].shape == (1, 1, 96, 96)
    heads = namespace["heads"]
    assert heads.shape[:2] == (1, namespace["model"].config.num_attention_heads)
    assert torch.isfinite(namespace["maps"]).all() and (namespace["maps"] > 0).all()
