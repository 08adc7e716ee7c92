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

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from attnexplain.benchmark.recipes import (
        RECIPES as RECIPES,
    )
    from attnexplain.benchmark.recipes import (
        Recipe as Recipe,
    )
    from attnexplain.benchmark.recipes import (
        get_recipe as get_recipe,
    )
    from attnexplain.benchmark.registry import (
        METHODS as METHODS,
    )
    from attnexplain.benchmark.registry import (
        DatasetChoice as DatasetChoice,
    )
    from attnexplain.benchmark.registry import (
        open_dataset as open_dataset,
    )
    from attnexplain.benchmark.report import (
        compare_runs as compare_runs,
    )
    from attnexplain.benchmark.report import (
        load_examples as load_examples,
    )
    from attnexplain.benchmark.report import (
        summarise as summarise,
    )
    from attnexplain.benchmark.report import (
        write_report as write_report,
    )
    from attnexplain.benchmark.runner import (
        BenchmarkConfig as BenchmarkConfig,
    )
    from attnexplain.benchmark.runner import (
        BenchmarkRun as BenchmarkRun,
    )
    from attnexplain.benchmark.runner import (
        has_classification_head as has_classification_head,
    )
    from attnexplain.benchmark.runner import (
        run_benchmark as run_benchmark,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'attnexplain.benchmark' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
