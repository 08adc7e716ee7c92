"""Recipes run end to end on tiny saved models and the fixture datasets; the doc lists them."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from attnexplain.benchmark.cli import main
from attnexplain.benchmark.recipes import RECIPES, get_recipe
from attnexplain.benchmark.report import compare_runs
from tests.benchmark.helpers import save_tiny_model

RECIPES_MD = Path(__file__).resolve().parents[2] / "benchmarks" / "recipes.md"


def run_recipe(name: str, model: Path, dataset: str, out: Path) -> dict:
    code = main([
        "--recipe", name, "--model", str(model), "--dataset", dataset, "--out", str(out),
        "--no-progress",
    ])  # fmt: skip
    assert code == 0
    return json.loads((out / "run.json").read_text())


def test_dino_voc_recipe(voc_fixture, tmp_path: Path) -> None:
    backbone = save_tiny_model(tmp_path / "dino", head=False)  # DINO checkpoints are headless
    out = tmp_path / "dino-run"
    meta = run_recipe("dino-voc", backbone, f"voc:{voc_fixture.root}", out)
    assert meta["methods"] == ["raw_heads", "random", "centre"]
    assert list(meta["metrics"]) == ["best_head_jaccard"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3  # the two val images, three methods
    first = next(r for r in rows if r["image_id"] == "2008_000001" and r["method"] == "raw_heads")
    per_object = first["objects"]["best_head_jaccard"]
    assert len(per_object) == 3  # a best head per annotated instance
    assert first["metrics"]["best_head_jaccard"] == pytest.approx(sum(per_object) / 3)
    table = compare_runs([out], "raw_heads", ["best_head_jaccard"])
    assert table.splitlines()[2].startswith(f"| {backbone} | 2 | ")
    assert "best_head_jaccard" in (out / "report.md").read_text()


def test_chefer_imagenet_seg_recipe(imagenet_seg_fixture, tmp_path: Path) -> None:
    mat_path, _, masks = imagenet_seg_fixture
    classifier = save_tiny_model(tmp_path / "vit")
    out = tmp_path / "chefer-run"
    meta = run_recipe("chefer-imagenet-seg", classifier, f"imagenet-seg:{mat_path}", out)
    assert meta["methods"] == [
        "raw", "rollout", "gradcam", "lrp", "partial_lrp", "transformer_attribution",
        "grad_rollout", "random", "centre",
    ]  # fmt: skip
    assert list(meta["metrics"]) == [
        "average_precision", "mean_iou", "perturbation_negative", "perturbation_positive",
        "pixel_accuracy",
    ]  # fmt: skip
    assert meta["fingerprint"]["method_options"] == {
        "rollout": {"start_layer": 1}, "transformer_attribution": {"start_layer": 1},
    }  # fmt: skip
    assert meta["fingerprint"]["mask_resolution"] == "model"
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len(masks) * 9
    assert all(r["target"] == r["predicted"] for r in rows)  # the .mat has no class labels


def test_recipe_configs() -> None:
    chefer = get_recipe("chefer-imagenet-seg").config(batch_size=4, limit=10)
    assert chefer.batch_size == 4 and chefer.limit == 10
    assert chefer.method_options == {
        "rollout": {"start_layer": 1}, "transformer_attribution": {"start_layer": 1},
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown recipe 'dino'"):
        get_recipe("dino")


def test_recipes_md_documents_every_recipe_with_valid_commands() -> None:
    text = RECIPES_MD.read_text()
    commands = [
        shlex.split(line.strip().rstrip("\\"))
        for line in re.findall(r"^attnexplain benchmark .*$", text, flags=re.MULTILINE)
    ]
    documented = {c[c.index("--recipe") + 1] for c in commands if "--recipe" in c}
    assert documented == set(RECIPES)
    for recipe in RECIPES.values():
        for model in recipe.models:
            assert f"--model {model} " in text, model
    # Every documented command parses (paths are placeholders, so nothing is run).
    import argparse

    from attnexplain.benchmark.cli import _add_arguments

    parser = argparse.ArgumentParser()
    _add_arguments(parser)
    for command in commands:
        parser.parse_args(command[2:])
