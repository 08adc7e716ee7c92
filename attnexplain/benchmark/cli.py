"""The ``attnexplain benchmark`` subcommand: parse arguments, run, write the report.

Wired into the main command by :func:`add_parser`; also runnable on its own, which is how
``torchrun`` starts it::

    attnexplain benchmark --model default --dataset synthetic --methods raw,rollout --out runs/q
    torchrun --nproc_per_node=2 -m attnexplain.benchmark.cli --dataset synthetic --out runs/q

Bad arguments (unknown method, dataset spec, model, device, unwritable ``--out``, a corrupt run
folder) exit with status 2 and one line on stderr, never a traceback. Methods and metrics left
out because the model has no classification head are named on stderr, in ``run.json``
(``dropped``) and in the report.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from attnexplain.cli.common import add_run_arguments
from attnexplain.cli.errors import Parser, positive_int, run_command
from attnexplain.cli.listing import add_listing, method_table

PROG = "attnexplain benchmark"
DEFAULT_METHODS = (
    "raw", "raw_heads", "rollout", "gradcam", "grad_rollout", "legrad",
    "transformer_attribution", "lrp", "partial_lrp", "attnlrp",
)  # fmt: skip
DESCRIPTION = "Score methods x metrics on a dataset; resumable; shards under torchrun."
NO_HEAD = "the model has no classification head"


def _names() -> str:
    """What ``--list`` prints: every method, metric, dataset form and recipe."""
    from attnexplain.benchmark.recipes import RECIPES
    from attnexplain.benchmark.registry import DATASET_FORMS, METHODS, METRIC_GROUPS

    groups = [f"  {group}: {', '.join(names)}" for group, names in METRIC_GROUPS.items()]
    recipes = [f"  {name}: {recipe.title}" for name, recipe in RECIPES.items()]
    return "\n".join(
        [
            "methods (--methods):",
            method_table(METHODS),
            "",
            "metrics (--metrics, names or groups):",
            *groups,
            "",
            "datasets (--dataset): " + ", ".join(DATASET_FORMS),
            "",
            "recipes (--recipe):",
            *recipes,
        ]
    )


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    # Names come from the registry, which imports torch: they are validated when the command
    # runs and listed by --list, so that building the parser (and --help) stays fast.
    add = parser.add_argument
    add_run_arguments(
        parser,
        out=None,
        out_help="run folder: results, report and figures go here",
        batch_size=16,
        images=False,
    )
    add(
        "--dataset",
        default="synthetic",
        help="synthetic[:N], voc:ROOT[:SPLIT], imagenet-seg:MAT, coco:ROOT:ANN, ... (--list)",
    )
    add(
        "--methods",
        default=None,
        help=f"comma-separated method names (--list); default: {','.join(DEFAULT_METHODS)}, "
        "without the gradient methods for models without a classification head (said on "
        "stderr and in the report); random and centre are always added",
    )
    add(
        "--metrics",
        default=None,
        help="comma-separated metrics or groups (localisation, faithfulness, all); default: all "
        "that apply",
    )
    add("--recipe", default=None, help="settings of a published table (see --list)")
    add("--limit", type=positive_int, default=None, help="score only the first N images")
    add(
        "--target",
        choices=("label", "predicted"),
        default=None,
        help="class to explain (default: label for synthetic data, else the prediction)",
    )
    add(
        "--steps",
        type=positive_int,
        default=16,
        help="the most deletion / insertion steps (capped at the patch count)",
    )
    add("--examples", type=int, default=4, help="images shown in the example figure")
    add(
        "--save-maps",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="store every image's maps under maps/ (8 bits per pixel) for the explorer page",
    )
    add(
        "--html",
        action="store_true",
        help="write explorer.html, the interactive page of the run's maps, scores and curves "
        "(needs the stored maps for the maps; with --no-save-maps it shows scores only)",
    )
    add_listing(
        parser, "--list", _names, "list the methods, metrics, datasets and recipes, and exit"
    )
    parser.set_defaults(handler=run)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``benchmark`` subcommand on ``subparsers`` (from ``add_subparsers``).

    The subcommand's ``handler`` default is :func:`run`.

    Returns:
        The subcommand's parser.
    """
    parser = subparsers.add_parser(
        "benchmark",
        help="score explanation methods on a dataset and write a report",
        description=DESCRIPTION,
    )
    _add_arguments(parser)
    return parser


def _dropped(
    args: argparse.Namespace, methods: Sequence[str], has_head: bool, recipe: Any
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The methods to run and what is left out of the defaults, with the reason."""
    from attnexplain.benchmark.registry import FAITHFULNESS_METRICS, METHODS

    dropped: dict[str, str] = {}
    if args.methods is None and recipe is None and not has_head:
        for name in methods:
            if METHODS[name].needs_head:
                dropped[name] = f"{NO_HEAD} (it differentiates a class logit)"
        methods = tuple(m for m in methods if m not in dropped)
    if args.metrics is None and recipe is None and not has_head:
        for name in FAITHFULNESS_METRICS:
            dropped[name] = f"{NO_HEAD} (faithfulness reads class probabilities)"
    return tuple(methods), dropped


def _dropped_notes(dropped: dict[str, str]) -> str:
    """The report's Markdown note on what was left out (empty when nothing was)."""
    if not dropped:
        return ""
    lines = [f"- `{name}`: {reason}" for name, reason in dropped.items()]
    return "**Not run** (left out of the defaults):\n\n" + "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by ``args`` and write its report (on rank 0).

    Returns:
        0 on success.

    Raises:
        UsageError, ValueError, OSError, ModelLoadError, UnsupportedModelError: for bad
            arguments or files (the caller prints them as one line and exits with status 2).
    """
    from attnexplain.benchmark.recipes import get_recipe
    from attnexplain.benchmark.registry import open_dataset, parse_methods
    from attnexplain.benchmark.report import load_examples, write_report
    from attnexplain.benchmark.runner import (
        BenchmarkConfig,
        has_classification_head,
        run_benchmark,
    )
    from attnexplain.cli.checks import prepare_output_dir, resolve_device
    from attnexplain.zoo.hub import load_model

    device = resolve_device(args.device)
    recipe = get_recipe(args.recipe) if args.recipe else None
    if args.methods is not None:
        parse_methods(args.methods)  # unknown names fail before the model is loaded
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    elif recipe is not None:
        methods = recipe.methods
    else:
        methods = DEFAULT_METHODS
    out = prepare_output_dir(args.out)
    model, preprocess = load_model(args.model, str(device))
    dataset = open_dataset(args.dataset, preprocess.image_size)
    has_head = has_classification_head(model, preprocess.image_size)
    methods, dropped = _dropped(args, methods, has_head, recipe)
    for name, reason in dropped.items():
        print(f"{PROG}: note: {name} not run: {reason}", file=sys.stderr)
    settings: dict[str, Any] = {
        "methods": methods,
        "batch_size": args.batch_size,
        "limit": args.limit,
        "faithfulness_steps": args.steps,
        "examples": args.examples,
        "progress": not args.no_progress,
        "model_name": args.model,
        "dropped": dropped,
        "save_maps": args.save_maps,
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
        config = BenchmarkConfig(**settings)
    result = run_benchmark(model, preprocess, dataset, out, config)
    if result.is_main:
        title = f"{recipe.title}: {args.model}" if recipe else None
        report = write_report(
            out,
            result.rows,
            result.meta,
            examples=load_examples(out),
            title=title,
            notes=_dropped_notes(result.meta.get("dropped", {})),
        )
        print(report)
        if args.html:
            from attnexplain.viz.explorer import write_run_explorer

            for page in write_run_explorer(out):
                print(page)
    return 0


def build_parser() -> Parser:
    """The parser of ``python -m attnexplain.benchmark.cli`` (the same arguments)."""
    parser = Parser(prog=PROG, description=DESCRIPTION)
    _add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m attnexplain.benchmark.cli`` (and of torchrun)."""
    return run_command(PROG, build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
