"""docs/diagnostics.md: its Python and shell blocks run as written."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import torch

PAGE = Path(__file__).resolve().parents[2] / "docs" / "diagnostics.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), re.S)


def test_python_block_runs_and_finds_nothing_on_the_embedded_model(capsys):
    (code,) = _blocks("python")
    namespace: dict = {}
    exec(compile(code, str(PAGE), "exec"), namespace)
    report = namespace["report"]
    assert report.positions(0) == [] and report.artifact_share.shape == (1, 4, 8)
    assert json.dumps(namespace["summary"])
    assert namespace["norm_map"].shape == (1, 1, 96, 96)
    # Nothing flagged: the cleaned map is the raw map.
    from attnexplain import RawCLSAttention

    torch.testing.assert_close(
        namespace["cleaned"], RawCLSAttention(namespace["model"]).attribute(namespace["x"])
    )
    assert capsys.readouterr().out.splitlines()[:2] == ["[]", "torch.Size([1, 4, 8])"]


def test_shell_block_runs_with_the_console_script(tmp_path):
    (command,) = [line for block in _blocks("bash") for line in block.splitlines() if line]
    args = shlex.split(command)
    assert args[0] == "attnexplain"
    script = Path(sys.executable).parent / "attnexplain"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run([str(script), *args[1:]], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = [Path(line) for line in result.stdout.split()]
    assert [p.name for p in printed] == [
        "norm_histograms.png", *[f"synthetic-test-00000{i}_artifacts.png" for i in range(4)],
        "artifact_scores.png", "summary.json",
    ]  # fmt: skip
    summary = json.loads((tmp_path / printed[-1]).read_text())
    assert summary["threshold_rule"] == "gap" and len(summary["images"]) == 4
