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

from typing import TYPE_CHECKING

from attnexplain._lazy import lazy_exports

#: Public name -> the module that defines it. Imported on first use, so that the command line
#: can register ``attnexplain benchmark`` without importing torch (``--help`` stays fast).
_EXPORTS = {
    "RECIPES": "attnexplain.benchmark.recipes",
    "Recipe": "attnexplain.benchmark.recipes",
    "get_recipe": "attnexplain.benchmark.recipes",
    "METHODS": "attnexplain.benchmark.registry",
    "DatasetChoice": "attnexplain.benchmark.registry",
    "open_dataset": "attnexplain.benchmark.registry",
    "compare_runs": "attnexplain.benchmark.report",
    "load_examples": "attnexplain.benchmark.report",
    "summarise": "attnexplain.benchmark.report",
    "write_report": "attnexplain.benchmark.report",
    "BenchmarkConfig": "attnexplain.benchmark.runner",
    "BenchmarkRun": "attnexplain.benchmark.runner",
    "has_classification_head": "attnexplain.benchmark.runner",
    "run_benchmark": "attnexplain.benchmark.runner",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # static analysers see the names without the lazy table
    from attnexplain.benchmark.recipes import (  # noqa: F401
        RECIPES,
        Recipe,
        get_recipe,
    )
    from attnexplain.benchmark.registry import (  # noqa: F401
        METHODS,
        DatasetChoice,
        open_dataset,
    )
    from attnexplain.benchmark.report import (  # noqa: F401
        compare_runs,
        load_examples,
        summarise,
        write_report,
    )
    from attnexplain.benchmark.runner import (  # noqa: F401
        BenchmarkConfig,
        BenchmarkRun,
        has_classification_head,
        run_benchmark,
    )

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
