"""The ``attnexplain benchmark`` subcommand: parse arguments, run, write the report.

Wired into the main command by :func:`add_parser`; also runnable on its own, which is how
``torchrun`` starts it::

    attnexplain benchmark --model default --dataset synthetic --methods raw,rollout --out runs/q
    torchrun --nproc_per_node=2 -m attnexplain.benchmark.cli --dataset synthetic --out runs/q

Bad arguments (unknown method, dataset spec, model, missing path) exit with status 2 and one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

DEFAULT_METHODS = (
    "raw", "raw_heads", "rollout", "gradcam", "grad_rollout", "legrad",
    "transformer_attribution", "lrp", "partial_lrp", "attnlrp",
)  # fmt: skip


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from attnexplain.benchmark.recipes import RECIPES
    from attnexplain.benchmark.registry import DATASET_FORMS, METHODS, METRIC_GROUPS

    add = parser.add_argument
    add(
        "--model",
        default="default",
        help="'default' (embedded model), a Hugging Face id or folder, or timm:NAME",
    )
    add("--dataset", default="synthetic", help="one of: " + ", ".join(DATASET_FORMS))
    add(
        "--methods",
        default=None,
        help=f"comma-separated, from: {', '.join(METHODS)} (default: "
        f"{','.join(DEFAULT_METHODS)}, gradient methods dropped for headless models; "
        "random and centre are always added)",
    )
    add(
        "--metrics",
        default=None,
        help=f"comma-separated metrics or groups ({', '.join(METRIC_GROUPS)}); default: all "
        "that apply",
    )
    add(
        "--recipe",
        choices=sorted(RECIPES),
        default=None,
        help="settings of a published table (see benchmarks/recipes.md)",
    )
    add("--out", required=True, help="run folder: results, report and figures go here")
    add("--limit", type=_positive_int, default=None, help="score only the first N images")
    add("--batch-size", type=_positive_int, default=16, help="images per model call")
    add("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    add(
        "--target",
        choices=("label", "predicted"),
        default=None,
        help="class to explain (default: label for synthetic data, else the prediction)",
    )
    add(
        "--steps",
        type=_positive_int,
        default=16,
        help="the most deletion / insertion steps (capped at the patch count)",
    )
    add("--examples", type=int, default=4, help="images shown in the example figure")
    add("--no-progress", action="store_true", help="no progress bar")


def _one_line_error(prog: str):
    def error(message: str) -> NoReturn:
        sys.stderr.write(f"{prog}: error: {message}\n")
        sys.exit(2)

    return error


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``benchmark`` subcommand on ``subparsers`` (from ``add_subparsers``).

    The subcommand's ``func`` default is :func:`run`.

    Returns:
        The subcommand's parser.
    """
    parser = subparsers.add_parser(
        "benchmark",
        help="score explanation methods on a dataset and write a report",
        description="Score methods x metrics on a dataset; resumable; shards under torchrun.",
    )
    _add_arguments(parser)
    # argparse prints the whole usage before its error; one line is easier to read in logs.
    parser.error = _one_line_error(parser.prog)  # type: ignore[method-assign]
    parser.set_defaults(func=run)
    return parser


def _fail(message: str) -> int:
    text = " ".join(str(message).split())
    sys.stderr.write(f"attnexplain benchmark: error: {text}\n")
    return 2


def _device(name: str) -> Any:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a torch device ({error})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine")
        if device.index is None and "LOCAL_RANK" in os.environ:
            # Under torchrun each process takes its own GPU.
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by ``args`` and write its report (on rank 0).

    Returns:
        0 on success, 2 for bad arguments (message on stderr).
    """
    from attnexplain.benchmark.recipes import get_recipe
    from attnexplain.benchmark.registry import METHODS, open_dataset
    from attnexplain.benchmark.report import load_examples, write_report
    from attnexplain.benchmark.runner import has_classification_head, run_benchmark
    from attnexplain.capture import UnsupportedModelError
    from attnexplain.zoo.hub import ModelLoadError, load_model

    try:
        device = _device(args.device)
        recipe = get_recipe(args.recipe) if args.recipe else None
        model, preprocess = load_model(args.model, str(device))
        dataset = open_dataset(args.dataset, preprocess.image_size)
        if args.methods is not None:
            methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        elif recipe is not None:
            methods = recipe.methods
        else:
            head = has_classification_head(model, preprocess.image_size)
            methods = tuple(m for m in DEFAULT_METHODS if head or not METHODS[m].needs_head)
        settings: dict[str, Any] = {
            "methods": methods,
            "batch_size": args.batch_size,
            "limit": args.limit,
            "faithfulness_steps": args.steps,
            "examples": args.examples,
            "progress": not args.no_progress,
            "model_name": args.model,
        }
        if args.metrics is not None:
            settings["metrics"] = tuple(args.metrics.split(","))
        if args.target is not None:
            settings["target"] = args.target
        if recipe is not None:
            # A recipe's options apply only to the methods actually run.
            options = {k: v for k, v in recipe.method_options.items() if k in methods}
            config = recipe.config(**{**settings, "method_options": options})
        else:
            from attnexplain.benchmark.runner import BenchmarkConfig

            config = BenchmarkConfig(**settings)
        result = run_benchmark(model, preprocess, dataset, args.out, config)
    except (ValueError, FileNotFoundError, ImportError, ModelLoadError, UnsupportedModelError) as e:
        return _fail(str(e))
    if result.is_main:
        title = f"{recipe.title}: {args.model}" if recipe else None
        report = write_report(
            args.out, result.rows, result.meta, examples=load_examples(args.out), title=title
        )
        print(report)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m attnexplain.benchmark.cli`` (and of torchrun)."""
    parser = argparse.ArgumentParser(
        prog="attnexplain benchmark",
        description="Score methods x metrics on a dataset; resumable; shards under torchrun.",
    )
    _add_arguments(parser)
    parser.error = _one_line_error(parser.prog)  # type: ignore[method-assign]
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
