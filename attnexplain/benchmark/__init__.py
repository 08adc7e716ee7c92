"""Benchmark: datasets x methods x metrics, resumable rows, torchrun sharding, reports.

- :mod:`~attnexplain.benchmark.registry`: the names of methods, metrics and datasets.
- :mod:`~attnexplain.benchmark.runner`: :func:`run_benchmark` (rows, resume, sharding).
- :mod:`~attnexplain.benchmark.store`: the durable JSONL rows.
- :mod:`~attnexplain.benchmark.report`: statistics, tables and figures from rows.
- :mod:`~attnexplain.benchmark.recipes`: settings of published tables.
- :mod:`~attnexplain.benchmark.cli`: the ``attnexplain benchmark`` subcommand.

Examples:
    >>> from attnexplain.benchmark import BenchmarkConfig, open_dataset, run_benchmark
    >>> from attnexplain.zoo import load_default
    >>> model, preprocess = load_default()  # doctest: +SKIP
    >>> data = open_dataset("synthetic:16", preprocess.image_size)  # doctest: +SKIP
    >>> run = run_benchmark(model, preprocess, data, "runs/demo",
    ...                     BenchmarkConfig(methods=("raw", "rollout")))  # doctest: +SKIP
    >>> write_report("runs/demo", run.rows, run.meta)  # doctest: +SKIP
"""

from __future__ import annotations

from attnexplain.benchmark.recipes import RECIPES, Recipe, get_recipe
from attnexplain.benchmark.registry import METHODS, DatasetChoice, open_dataset
from attnexplain.benchmark.report import compare_runs, load_examples, summarise, write_report
from attnexplain.benchmark.runner import (
    BenchmarkConfig,
    BenchmarkRun,
    has_classification_head,
    run_benchmark,
)

__all__ = [
    "METHODS",
    "RECIPES",
    "BenchmarkConfig",
    "BenchmarkRun",
    "DatasetChoice",
    "Recipe",
    "compare_runs",
    "get_recipe",
    "has_classification_head",
    "load_examples",
    "open_dataset",
    "run_benchmark",
    "summarise",
    "write_report",
]
