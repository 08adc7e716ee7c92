"""``attnexplain diagnose`` through the installed console script, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

SCRIPT = Path(sys.executable).parent / "attnexplain"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLANTED_PATCH = (1, 2)  # (row, col) on the 4 x 4 grid of the saved model


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def _save_processor(folder: Path) -> None:
    from transformers import ViTImageProcessor

    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                      image_std=[0.25] * 3).save_pretrained(folder)  # fmt: skip


@pytest.fixture(scope="module")
def planted_model_dir(tmp_path_factory) -> Path:
    """A tiny HF ViT whose position embedding makes one patch token high-norm (a weight edit)."""
    import transformers as tf

    torch.manual_seed(0)
    config = tf.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3,
                          num_attention_heads=4, intermediate_size=64, num_labels=3)  # fmt: skip
    model = tf.ViTForImageClassification(config).eval()
    row, col = PLANTED_PATCH
    with torch.no_grad():
        model.vit.embeddings.position_embeddings[0, 1 + row * 4 + col] *= 2000.0
    folder = tmp_path_factory.mktemp("planted-vit")
    model.save_pretrained(folder)
    _save_processor(folder)
    return folder


@pytest.fixture(scope="module")
def swin_dir(tmp_path_factory) -> Path:
    """A model whose attention is windowed: no global token outputs to read."""
    import transformers as tf

    config = tf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                           num_heads=[2, 2], window_size=2)  # fmt: skip
    folder = tmp_path_factory.mktemp("swin")
    tf.SwinForImageClassification(config).save_pretrained(folder)
    _save_processor(folder)
    return folder


def _photo(folder: Path, name: str = "photo.png") -> Path:
    path = folder / name
    generator = torch.Generator().manual_seed(4)
    pixels = (torch.rand(40, 56, 3, generator=generator) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)
    return path


def test_diagnose_finds_the_planted_token_and_writes_figures_and_summary(
    tmp_path, planted_model_dir
):
    photo = _photo(tmp_path)
    result = run_script("diagnose", str(photo), "--model", str(planted_model_dir), "--out", "o",
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = result.stdout.split()
    out = Path("o")
    assert printed == [str(out / "norm_histograms.png"), str(out / "photo_artifacts.png"),
                       str(out / "artifact_scores.png"), str(out / "summary.json")]  # fmt: skip
    for name in printed[:-1]:
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["model"] == str(planted_model_dir) and summary["threshold_rule"] == "gap"
    image = summary["images"][0]
    assert image["name"] == "photo" and image["grid"] == [4, 4]
    assert [(t["row"], t["col"]) for t in image["high_norm_tokens"]] == [PLANTED_PATCH]
    assert image["high_norm_tokens"][0]["norm"] > 10 * image["patch_norm_median"]


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The error line; transformers' "Loading weights" progress bar may precede it on stderr."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("attnexplain:")]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]), result.stderr
    return errors[0]


def test_threshold_flagging_every_token_exits_2(tmp_path, planted_model_dir):
    result = run_script("diagnose", str(_photo(tmp_path)), "--model", str(planted_model_dir),
                        "--threshold", "1e-6", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "threshold 1e-06 flags every patch token of image 0" in _one_error_line(result)


def test_model_without_readable_token_outputs_exits_2(tmp_path, swin_dir):
    result = run_script("diagnose", str(_photo(tmp_path)), "--model", str(swin_dir), cwd=tmp_path)
    assert result.returncode == 2
    # Refused when the attention runs ("windowed or pooled attention") or, where the adapter
    # recognises Swin blocks, at construction ("shifted-window attention").
    assert "window" in _one_error_line(result) and "Swin" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "otsu"], "expected 'gap' or a norm, got 'otsu'"),
        (["--layer", "9"], "layer=9 is out of range for a model with 4 attention layers"),
        (["--batch-size", "0"], "argument --batch-size: expected a positive integer, got 0"),
        (["missing.png"], "image not found: missing.png"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_in_process(
    tmp_path, monkeypatch, capsys, args, message
):
    from attnexplain.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["diagnose", *args, "--out", "o"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("attnexplain: error: ") and "\n" not in error
    assert message in error


def test_the_parsers_min_gap_default_is_the_libraries() -> None:
    from attnexplain.cli import diagnose
    from attnexplain.diagnostics import DEFAULT_MIN_GAP

    assert diagnose.DEFAULT_MIN_GAP == DEFAULT_MIN_GAP
