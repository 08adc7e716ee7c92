"""Fixtures of the explorer's tests: a real benchmark run of the embedded model, and the
issue's size-budget page."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnexplain.benchmark import BenchmarkConfig, open_dataset, run_benchmark
from attnexplain.viz.explorer import write_explorer
from attnexplain.zoo import load_default
from benchmarks.explorer import budget_images, budget_photos

#: The benchmark command's default methods (the baselines random and centre are added).
EMBEDDED_METHODS = ("raw", "raw_heads", "rollout", "gradcam", "grad_rollout")
EMBEDDED_IMAGES = 6


@pytest.fixture(scope="session")
def embedded_run(tmp_path_factory: pytest.TempPathFactory):
    """The embedded model on 6 synthetic test images, every default method, a few metrics."""
    model, preprocess = load_default()
    data = open_dataset(f"synthetic:{EMBEDDED_IMAGES}", preprocess.image_size)
    config = BenchmarkConfig(
        methods=EMBEDDED_METHODS,
        metrics=("mass_jaccard", "best_head_jaccard", "deletion_black", "insertion_black"),
        batch_size=EMBEDDED_IMAGES,
        faithfulness_steps=8,
        examples=2,
        progress=False,
        model_name="default",
    )
    return run_benchmark(model, preprocess, data, tmp_path_factory.mktemp("embedded"), config)


@pytest.fixture(scope="session")
def budget_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page of 50 images x 7 methods x 4 layers x 8 heads on a 14 x 14 grid (224 px)."""
    out = tmp_path_factory.mktemp("budget") / "explorer.html"
    (page,) = write_explorer(out, budget_images(budget_photos()))
    return page
