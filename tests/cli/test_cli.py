"""The console entry point, run as a user would: in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "attnexplain.cli", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )  # fmt: skip


def assert_valid_pngs(paths: list[Path]) -> None:
    assert paths
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as image:
            image.verify()


def test_explain_without_arguments_writes_figures(tmp_path):
    result = run_cli("explain", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = [Path(line) for line in result.stdout.split()]
    assert len(printed) == 5  # 4 embedded images + the MAD plot
    assert printed[-1].name == "mean_attention_distance.png"
    assert_valid_pngs(printed)


def test_explain_user_image_with_one_method(tmp_path):
    image = tmp_path / "photo.jpg"
    Image.new("RGB", (120, 80), (200, 30, 30)).save(image)
    result = run_cli("explain", str(image), "--method", "rollout", "--out", "o", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(Path("o") / "photo.png")]
    assert_valid_pngs([tmp_path / "o" / "photo.png"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["explain", "missing.png"], "image not found: missing.png"),
        (["explain", "--method", "gradient-magic"], "invalid choice: 'gradient-magic'"),
        (["explain", "broken.png"], "cannot read image broken.png"),
        (["explain", "--model", "no/such-model-offline"], "could not load Hugging Face model"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_exit_non_zero_with_one_line(tmp_path, args, message):
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in lines[0]
