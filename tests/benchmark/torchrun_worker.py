"""The runs ``test_torchrun`` shards: a tiny model on 8 synthetic images, then on 8 scenes.

Started once per rank by ``python -m torch.distributed.run ... -m tests.benchmark.torchrun_worker
OUT [MULTI_OUT]``; the test also calls :func:`benchmark` in-process for the single-process
reference. With ``MULTI_OUT`` the same processes then score the multi-object scenes with the
class-specific metrics (:func:`benchmark_multi`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from attnexplain.benchmark import BenchmarkConfig, BenchmarkRun, open_dataset, run_benchmark
from attnexplain.benchmark.report import write_report
from tests.benchmark.helpers import IMAGE, tiny_model, tiny_preprocess

IMAGES = 8
# Batches of 3 split the ranks' 4 images 3 + 1 but one process's 8 images 3 + 3 + 2, so the
# comparison also shows that a row does not depend on which images share its batch.
CONFIG = BenchmarkConfig(
    methods=("raw", "raw_heads", "rollout", "saliency"),
    metrics=(
        "mass_jaccard",
        "best_head_jaccard",
        "auroc",
        "deletion_blur",
        "perturbation_positive",
    ),
    batch_size=3,
    faithfulness_steps=4,
    examples=2,
    progress=False,
)


MULTI_CONFIG = BenchmarkConfig(
    methods=("raw", "gradcam"),
    metrics=("mass_jaccard", "class_specific"),
    batch_size=3,
    examples=2,
    progress=False,
)


def benchmark(
    out_dir: Path, dataset: str = "synthetic", config: BenchmarkConfig = CONFIG
) -> BenchmarkRun:
    """Run the benchmark into ``out_dir``; rank 0 (or the only process) writes the report."""
    torch.set_num_threads(1)
    data = open_dataset(f"{dataset}:{IMAGES}", IMAGE)
    run = run_benchmark(tiny_model(), tiny_preprocess(), data, out_dir, config)
    if run.is_main:
        write_report(out_dir, run.rows, run.meta)
    return run


def benchmark_multi(out_dir: Path) -> BenchmarkRun:
    """The class-specific run on the multi-object scenes."""
    return benchmark(out_dir, "synthetic-multi", MULTI_CONFIG)


if __name__ == "__main__":
    if len(sys.argv) > 2:
        # One group for both runs, as benchmarks/quality.py does: joining a second group after
        # the first run destroyed its own races between the ranks on a loaded machine.
        torch.distributed.init_process_group("gloo")
    try:
        benchmark(Path(sys.argv[1]))
        if len(sys.argv) > 2:
            benchmark_multi(Path(sys.argv[2]))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
