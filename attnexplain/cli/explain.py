"""``attnexplain explain``: the main job, maps, figures and raw values for images.

Every method of the benchmark registry (:data:`attnexplain.benchmark.registry.METHODS`, the
baselines aside) can be chosen, so a method added there appears here without CLI edits; ``mad``
adds the mean-attention-distance plot over all images. Method options (``--layer``,
``--head-fusion``, ``--discard-ratio``, ``--start-layer``) reach the methods whose constructor
takes them (:mod:`attnexplain.cli.options`). Images are explained in batches with a progress
bar; what is written per image is in :mod:`attnexplain.cli.outputs`.

Building this parser imports nothing heavy: the registry, torch and the model are imported by
:func:`run_explain`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnexplain.cli.common import add_run_arguments
from attnexplain.cli.errors import UsageError, one_line
from attnexplain.cli.images import ImageSource, batches, collect_sources, display_images
from attnexplain.cli.listing import add_listing, method_table
from attnexplain.cli.targets import Query

#: The mean-attention-distance plot, chosen like a method (it is not a map method).
DISTANCE = "mad"
#: Kinds of registry methods ``explain`` leaves out: scoring references, not explanations.
EXCLUDED_KINDS = ("baseline", "oracle")
#: Kinds left out of the default selection (available by name and in ``all``).
NOT_DEFAULT_KINDS = ("captum",)
#: Methods left out of the default selection for their cost (a max-flow per patch and layer:
#: seconds per image at ViT-S/16 224 on a CPU); available by name and in ``all``.
NOT_DEFAULT_METHODS = ("attention_flow",)
#: Constructor keyword -> the flag that sets it.
METHOD_FLAGS = {
    "layer": "--layer",
    "head_fusion": "--head-fusion",
    "discard_ratio": "--discard-ratio",
    "start_layer": "--start-layer",
}


def _explainable() -> list[str]:
    from attnexplain.benchmark.registry import METHODS

    return [name for name, spec in METHODS.items() if spec.kind not in EXCLUDED_KINDS]


def _list_methods() -> str:
    return "\n".join(
        [
            method_table(_explainable()),
            f"{DISTANCE:<22} {'attention':<10} mean attention distance per layer and head "
            "(one plot over all images)",
        ]
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``explain`` subcommand on ``subparsers`` (from ``add_subparsers``)."""
    explain = subparsers.add_parser(
        "explain",
        help="maps, figures and raw values for images (embedded model and images by default)",
        description="Per image: a figure with every chosen method's map (a head grid for "
        "per-head methods), the raw maps (.safetensors) and their settings (.json); with mad, "
        "the mean-attention-distance plot over all images.",
    )
    add = explain.add_argument
    add_run_arguments(explain, out="attnexplain-out")
    add(
        "--methods",
        "--method",
        default=None,
        help="comma-separated method names, or 'all' (see --list-methods); default: every "
        "attention and gradient method that applies to the model, and mad",
    )
    add(
        "--target",
        default=None,
        help="class the gradient methods explain: an index, or a label name of the model "
        "(config.id2label); default: each image's predicted class",
    )
    add(
        "--prompt",
        action="append",
        default=None,
        metavar="TEXT",
        help="image-text models (--model clip): the gradient methods explain this text's "
        "image-text score; repeatable, each image is explained once per prompt, written as "
        "STEM_prompt-1, STEM_prompt-2, ...",
    )
    add(
        "--reference",
        default=None,
        metavar="IMAGE",
        help="the gradient methods explain the cosine similarity of each image's embedding "
        "with this image's, written as STEM_reference",
    )
    option_help = "passed to every chosen method whose constructor takes {}= (see --list-methods)"
    add("--layer", help=option_help.format("layer"))
    add("--head-fusion", help=option_help.format("head_fusion") + "; mean, max, min or none")
    add("--discard-ratio", help=option_help.format("discard_ratio"))
    add("--start-layer", help=option_help.format("start_layer"))
    add(
        "--per-layer",
        action="store_true",
        help="also write STEM_layers.png: the raw CLS attention of every layer and the rollout "
        "ending at every layer (saved in STEM.safetensors as layers/raw and layers/rollout)",
    )
    add(
        "--html",
        action="store_true",
        help="also write explorer.html, an interactive page of every image's maps (every layer "
        "and head for raw, raw_heads and rollout), self-contained",
    )
    add("--format", choices=("png", "jpg"), default="png", help="figure format")
    add_listing(explain, "--list-methods", _list_methods, "list the methods and their options")
    explain.set_defaults(handler=run_explain)
    return explain


# -- methods and targets ------------------------------------------------------------------------


def _select_methods(text: str | None) -> tuple[list[str], bool]:
    """``(registry methods, with the distance plot)`` from ``--methods``."""
    from attnexplain.benchmark.registry import METHODS

    names = _explainable()
    if text is None:
        chosen = [
            n
            for n in names
            if METHODS[n].kind not in NOT_DEFAULT_KINDS and n not in NOT_DEFAULT_METHODS
        ]
        return chosen, True
    asked = [n.strip() for n in text.split(",") if n.strip()]
    if asked == ["all"]:
        return names, True
    unknown = [n for n in asked if n not in (*names, DISTANCE)]
    if unknown or not asked:
        raise UsageError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(names)}, {DISTANCE} or all (--list-methods)"
        )
    return [n for n in dict.fromkeys(asked) if n != DISTANCE], DISTANCE in asked


# -- the command ----------------------------------------------------------------------------------


@dataclass
class _Job:
    """A run, checked and built before its first image."""

    sources: list[ImageSource]
    names: list[str]  # output stem per source
    out: Path
    suffix: str  # figure format
    model: Any
    preprocess: Any
    adapter: Any
    device: Any
    target: str | None  # --target as given
    has_head: bool
    labels: dict[int, str]
    queries: list[Query]  # one pass of the query-dependent methods each
    explainers: dict[str, Any]  # registry name -> explain(inputs, target, ids)
    optional: set[str]  # methods dropped with a note if the model refuses them (not named)
    distance: Any  # MeanAttentionDistance, or None
    per_layer: tuple[Any, Any] | None  # (RawCLSAttention(layer="all"), AttentionRollout)
    views: dict[str, Any] | None  # --html: registry name -> its explorer views (ViewSource)
    settings: dict[str, Any]  # recorded next to every output
    started: bool = False  # a batch has been explained (a refusal after that is an error)


def _drop_inapplicable(
    methods: list[str], args: argparse.Namespace, has_head: bool, scored: bool
) -> tuple[list[str], list[str]]:
    """Methods that can explain this model's target, and notes on the others.

    Args:
        methods: the chosen registry methods.
        args: the parsed arguments (whether ``--methods`` named them, ``--target``).
        has_head: whether the model returns class logits.
        scored: whether the queries are prompts or a reference image (not classes).

    Raises:
        UsageError: when a method the user named cannot run, or ``--target`` is given for a
            model without classes.
    """
    from attnexplain.benchmark.registry import METHODS

    if args.target is not None and not has_head:
        raise UsageError("--target: the model has no classification head to explain")
    no_head = (
        "differentiate a class logit, but the model has no classification head; choose "
        "attention methods (--list-methods), or give the gradient methods a target with "
        "--prompt / --reference"
    )
    no_class = "explain a class index, not a prompt or reference; choose other methods"
    reasons = {}
    for name in methods:
        if METHODS[name].kind == "captum" and scored:
            reasons[name] = no_class
        elif METHODS[name].needs_head and not has_head and not scored:
            reasons[name] = no_head
    if args.methods is not None and reasons:
        reason = next(iter(reasons.values()))
        refused = [name for name, why in reasons.items() if why == reason]
        raise UsageError(f"method(s) {', '.join(refused)} {reason}")
    notes = {
        no_head: "the model has no classification head (--prompt or --reference give the "
        "gradient methods a target)",
        no_class: "Captum's methods explain a class index, not a prompt or reference",
    }
    return [m for m in methods if m not in reasons], [
        f"{name} not run: {notes[reason]}" for name, reason in reasons.items()
    ]


def _build_methods(
    methods: list[str], context: Any, options: dict[str, dict[str, Any]], named: bool
) -> tuple[dict[str, Any], list[str]]:
    """``(registry name -> explain, notes)``: the methods built for this model. One that the
    model refuses (no CLS token, an operation without relevance rule) is left out with a note,
    unless the user named it (then the refusal is the error)."""
    from attnexplain.benchmark.registry import METHODS
    from attnexplain.capture import UnsupportedModelError

    explainers, notes = {}, []
    for name in methods:
        try:
            explainers[name] = METHODS[name].build(context, **options[name])
        except UnsupportedModelError as error:
            if named:
                raise
            notes.append(f"{name} not run: {one_line(error)}")
    return explainers, notes


def _per_layer_methods(model: Any, adapter: Any) -> tuple[Any, Any]:
    """``--per-layer``: the raw CLS attention of every layer and the rollout per end layer."""
    from attnexplain.methods import AttentionRollout, RawCLSAttention

    if adapter.cls_index() is None:
        raise UsageError(
            f"--per-layer reads the CLS token's row at every layer, but {type(model).__name__} "
            "has no CLS token (its pooling head reads the last layer only); leave --per-layer "
            "out: raw and rollout explain the last layer"
        )
    return RawCLSAttention(model, layer="all"), AttentionRollout(model)


def _method_settings(methods: list[str], options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from attnexplain.benchmark.registry import METHODS

    return {
        name: {
            "kind": METHODS[name].kind,
            "options": {
                **{k: p.default for k, p in METHODS[name].options().items()},
                **options[name],
            },
        }
        for name in methods
    }


def _prepare(args: argparse.Namespace) -> _Job:
    """Check every argument (cheap checks first), load the model and build the methods."""
    from attnexplain import __version__
    from attnexplain.benchmark.maps import view_source
    from attnexplain.benchmark.registry import MethodContext
    from attnexplain.benchmark.runner import has_classification_head
    from attnexplain.capture import resolve_adapter
    from attnexplain.cli.checks import prepare_output_dir, resolve_device
    from attnexplain.cli.options import route_options
    from attnexplain.cli.outputs import DISTANCE_STEM, output_names
    from attnexplain.cli.targets import build_queries, check_query_flags, label_names
    from attnexplain.zoo.hub import load_model

    device = resolve_device(args.device)
    check_query_flags(args)
    sources = collect_sources(args.images)
    methods, with_distance = _select_methods(args.methods)
    given = {k: (flag, getattr(args, k)) for k, flag in METHOD_FLAGS.items() if getattr(args, k)}
    options, notes = route_options(given, methods)
    out = prepare_output_dir(args.out)
    model, preprocess = load_model(args.model, str(device))
    adapter = resolve_adapter(model)
    has_head = has_classification_head(model, preprocess.image_size)
    queries = build_queries(args, adapter, preprocess, device)
    methods, dropped = _drop_inapplicable(
        methods, args, has_head, scored=queries[0].target is not None
    )
    per_layer = _per_layer_methods(model, adapter) if args.per_layer else None
    context = MethodContext(model, preprocess, adapter.logits_forward, args.batch_size)
    explainers, refused = _build_methods(methods, context, options, args.methods is not None)
    methods = list(explainers)
    for note in notes + dropped + refused:
        print(f"attnexplain explain: note: {note}", file=sys.stderr)
    if not methods and not with_distance:
        raise UsageError("no method left to run on this model (--list-methods)")
    distance = None
    if with_distance:
        from attnexplain.methods import MeanAttentionDistance

        distance = MeanAttentionDistance(model)
    settings = {
        "attnexplain": __version__,
        "model": args.model,
        "preprocess": repr(preprocess),
        "input_size": [preprocess.image_size, preprocess.image_size],
        "methods": _method_settings(methods, options),
    }
    if per_layer is not None:
        settings["per_layer"] = {"raw": {"head_fusion": "mean"}, "rollout": {}}
    return _Job(
        sources=sources,
        names=output_names(
            [s.path if s.path is not None else s.label for s in sources],
            reserved=[DISTANCE_STEM] if distance is not None else (),
        ),
        out=out,
        suffix=f".{args.format}",
        model=model,
        preprocess=preprocess,
        adapter=adapter,
        device=device,
        target=args.target,
        has_head=has_head,
        labels=label_names(model),
        queries=queries,
        explainers=explainers,
        optional=set() if args.methods is not None else set(methods),
        distance=distance,
        per_layer=per_layer,
        views={n: view_source(n, model, options[n]) for n in methods} if args.html else None,
        settings=settings,
    )


def _explain(job: _Job, name: str, inputs: Any, target: Any, ids: list[str]) -> Any:
    """One method's maps of a batch (on the CPU); ``None`` once the model refused a method the
    user did not name (dropped from the run with a note, before any output is written)."""
    from attnexplain.capture import UnsupportedModelError

    try:
        return job.explainers[name](inputs, target, ids).detach().cpu()
    except UnsupportedModelError as error:
        if job.started or name not in job.optional:
            raise
        reason = one_line(error)
    print(f"attnexplain explain: note: {name} not run: {reason}", file=sys.stderr)
    del job.explainers[name]
    del job.settings["methods"][name]
    if job.views is not None:
        del job.views[name]
    return None


def _layer_maps(job: _Job, inputs: Any) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """``--per-layer``'s maps of a batch: name -> ``(B, L, S, S)``, and each one's layers."""
    if job.per_layer is None:
        return {}, {}
    raw, rollout = job.per_layer
    rolled = rollout.layer_maps(inputs)
    maps = {"raw": raw.attribute(inputs)[:, :, 0].cpu(), "rollout": rolled.cumulative.cpu()}
    return maps, {"raw": list(raw.layers), "rollout": list(rolled.layers)}


def _explain_batch(job: _Job, indices: list[int], inputs: Any, bar: Any) -> tuple[list[Any], Any]:
    """Every query's :class:`~attnexplain.cli.outputs.Explained` images of a batch, and the
    batch's mean attention distances (``None`` without ``mad``)."""
    import torch

    from attnexplain.benchmark.registry import METHODS
    from attnexplain.cli.outputs import Explained
    from attnexplain.cli.targets import resolve_class

    classes = predicted = None
    if job.has_head:
        with torch.no_grad():
            logits = job.adapter.logits_forward(inputs)
        predicted = logits.argmax(dim=1)
        target = resolve_class(job.target, job.labels, logits.shape[1])
        classes = predicted if target is None else torch.full_like(predicted, target)
    ids = [job.sources[i].label for i in indices]
    fixed: dict[str, Any] = {}  # maps that do not depend on the query, computed once
    for name in [n for n in job.explainers if METHODS[n].kind == "attention"]:
        bar.set_postfix_str(name)
        fixed[name] = _explain(job, name, inputs, classes, ids)
    grid_views = {
        name: job.views[name](inputs, fixed[name])
        for name in fixed
        if job.views is not None and name in job.views
    }
    layer_maps, layer_indices = _layer_maps(job, inputs)
    display = display_images(inputs, job.preprocess)
    answers = []  # (query, maps, views) per query
    for query in job.queries:
        target = classes if query.target is None else query.target
        maps = dict(fixed)
        for name in [n for n in job.explainers if n not in fixed]:
            bar.set_postfix_str(name)
            maps[name] = _explain(job, name, inputs, target, ids)
        maps = {name: m for name, m in maps.items() if m is not None}
        views = dict(grid_views)
        if job.views is not None:
            views |= {n: job.views[n](inputs, m) for n, m in maps.items() if n not in views}
        answers.append((query, maps, views))
    items = [
        Explained(
            name=job.names[index] + query.suffix,
            source=job.sources[index].label,
            image=display[j],
            maps={name: m[j] for name, m in maps.items()},
            target=None if classes is None or query.target is not None else int(classes[j]),
            predicted=None if predicted is None else int(predicted[j]),
            labels=job.labels,
            query=query,
            layer_maps={key: m[j] for key, m in layer_maps.items()},
            layer_indices=layer_indices,
            views={name: v[j] for name, v in views.items()},
        )
        for j, index in enumerate(indices)
        for query, maps, views in answers
    ]
    job.started = True
    distances = None
    if job.distance is not None:
        bar.set_postfix_str(DISTANCE)
        distances = job.distance.attribute(inputs).detach().cpu()
    return items, distances


def _write_image_outputs(job: _Job, item: Any) -> list[Path]:
    """Everything written per image; a new kind of output is one more call here."""
    from attnexplain.cli import outputs

    if not item.maps and not item.layer_maps:  # only the distance plot was asked for
        return []
    written = [outputs.write_figure(job.out, item, job.suffix)] if item.maps else []
    if item.layer_maps:
        written.append(outputs.write_layer_figure(job.out, item, job.suffix))
    return [*written, *outputs.write_maps(job.out, item, job.settings)]


@contextlib.contextmanager
def _clear_on_error(bar: Any) -> Iterator[None]:
    """Remove the progress bar when the command fails, so the error stays one line."""
    try:
        yield
    except BaseException:
        bar.leave = False
        raise


def run_explain(args: argparse.Namespace) -> int:
    """The main job: explain the images with the chosen methods and write the outputs.

    Returns:
        0 on success (the paths written are printed, one per line).

    Raises:
        UsageError, ValueError, OSError, ModelLoadError, UnsupportedModelError: for bad
            arguments, images or models (printed as one line by the caller).
    """
    import torch
    from tqdm.auto import tqdm

    from attnexplain.cli import outputs

    job = _prepare(args)
    written: list[Path] = []
    distances: dict[int, torch.Tensor] = {}
    explored = []
    bar = tqdm(total=len(job.sources), desc="explain", unit="img", file=sys.stderr,
               disable=args.no_progress)  # fmt: skip
    with bar, _clear_on_error(bar):
        for indices, inputs in batches(job.sources, job.preprocess, args.batch_size):
            items, batch_distances = _explain_batch(job, indices, inputs.to(job.device), bar)
            for item in items:
                written += _write_image_outputs(job, item)
                if job.views is not None:
                    explored.append(outputs.explorer_image(item))
            if batch_distances is not None:
                distances.update(zip(indices, batch_distances))
            bar.update(len(indices))
    if job.distance is not None:
        written += outputs.write_distances(
            job.out,
            torch.stack([distances[i] for i in range(len(job.sources))]),
            [s.label for s in job.sources],
            job.adapter.patch_size[0],
            job.settings,
            job.suffix,
        )
    if job.views is not None and explored:
        written += outputs.write_explorer_page(job.out, explored, list(job.explainers), args.model)
    for path in written:
        print(path)
    return 0
