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

from attnexplain.cli.errors import UsageError, positive_int
from attnexplain.cli.images import ImageSource, batches, collect_sources, display_images
from attnexplain.cli.listing import add_listing, method_table

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
    add("images", nargs="*", help="image files or folders (default: embedded samples)")
    add(
        "--model",
        default="default",
        help="'default' (embedded), a Hugging Face id or folder, a timm folder, or timm:NAME",
    )
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
    option_help = "passed to every chosen method whose constructor takes {}= (see --list-methods)"
    add("--layer", help=option_help.format("layer"))
    add("--head-fusion", help=option_help.format("head_fusion") + "; mean, max, min or none")
    add("--discard-ratio", help=option_help.format("discard_ratio"))
    add("--start-layer", help=option_help.format("start_layer"))
    add("--out", default="attnexplain-out", help="output folder (created)")
    add("--format", choices=("png", "jpg"), default="png", help="figure format")
    add("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1, mps")
    add("--batch-size", type=positive_int, default=8, help="images per model call")
    add("--no-progress", action="store_true", help="no progress bar")
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


def _label_names(model: Any) -> dict[int, str]:
    """Class index -> name from the model's config (Hugging Face) or pretrained config (timm)."""
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    if id2label:
        return {int(k): str(v) for k, v in id2label.items()}
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    return dict(enumerate(names)) if names else {}


def _resolve_target(text: str | None, labels: dict[int, str], classes: int) -> int | None:
    """``--target`` as a class index (checked against the model's ``classes``)."""
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < classes:
            raise UsageError(
                f"--target {index}: the model has {classes} classes (0 to {classes - 1})"
            )
        return index
    by_name = {name.lower(): index for index, name in labels.items()}
    if text.lower() in by_name:
        return by_name[text.lower()]
    if not labels:
        raise UsageError(f"--target {text!r}: this model has no label names; pass a class index")
    import difflib

    close = difflib.get_close_matches(text, list(labels.values()), n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    raise UsageError(
        f"--target {text!r} is not a label of this model{hint}; pass an index or a name"
    )


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
    explainers: dict[str, Any]  # registry name -> explain(inputs, target, ids)
    distance: Any  # MeanAttentionDistance, or None
    settings: dict[str, Any]  # recorded next to every output


def _drop_headless(methods: list[str], args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Methods left for a model without a classification head, and notes on the others."""
    from attnexplain.benchmark.registry import METHODS

    needs_head = [m for m in methods if METHODS[m].needs_head]
    if args.methods is not None and needs_head:
        raise UsageError(
            f"method(s) {', '.join(needs_head)} differentiate a class logit, but the model has "
            "no classification head; choose attention methods (--list-methods)"
        )
    if args.target is not None:
        raise UsageError("--target: the model has no classification head to explain")
    notes = [f"{m} not run: the model has no classification head" for m in needs_head]
    return [m for m in methods if m not in needs_head], notes


def _prepare(args: argparse.Namespace) -> _Job:
    """Check every argument (cheap checks first), load the model and build the methods."""
    from attnexplain import __version__
    from attnexplain.benchmark.registry import METHODS, MethodContext
    from attnexplain.benchmark.runner import has_classification_head
    from attnexplain.capture import resolve_adapter
    from attnexplain.cli.checks import prepare_output_dir, resolve_device
    from attnexplain.cli.options import route_options
    from attnexplain.cli.outputs import DISTANCE_STEM, output_names
    from attnexplain.zoo.hub import load_model

    device = resolve_device(args.device)
    sources = collect_sources(args.images)
    methods, with_distance = _select_methods(args.methods)
    given = {k: (flag, getattr(args, k)) for k, flag in METHOD_FLAGS.items() if getattr(args, k)}
    options, notes = route_options(given, methods)
    out = prepare_output_dir(args.out)
    model, preprocess = load_model(args.model, str(device))
    adapter = resolve_adapter(model)
    has_head = has_classification_head(model, preprocess.image_size)
    if not has_head:
        methods, dropped = _drop_headless(methods, args)
        notes += dropped
    for note in notes:
        print(f"attnexplain explain: note: {note}", file=sys.stderr)
    if not methods and not with_distance:
        raise UsageError("no method left to run on this model (--list-methods)")
    context = MethodContext(model, preprocess, adapter.logits_forward, args.batch_size)
    distance = None
    if with_distance:
        from attnexplain.methods import MeanAttentionDistance

        distance = MeanAttentionDistance(model)
    settings = {
        "attnexplain": __version__,
        "model": args.model,
        "preprocess": repr(preprocess),
        "input_size": [preprocess.image_size, preprocess.image_size],
        "methods": {
            name: {
                "kind": METHODS[name].kind,
                "options": {
                    **{k: p.default for k, p in METHODS[name].options().items()},
                    **options[name],
                },
            }
            for name in methods
        },
    }
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
        labels=_label_names(model),
        explainers={name: METHODS[name].build(context, **options[name]) for name in methods},
        distance=distance,
        settings=settings,
    )


def _explained(job: _Job, batch_size: int, bar: Any) -> Iterator[tuple[int, Any, Any]]:
    """``(source index, Explained, distances or None)`` per image, computed batch by batch."""
    import torch

    from attnexplain.cli.outputs import Explained

    for indices, inputs in batches(job.sources, job.preprocess, batch_size):
        inputs = inputs.to(job.device)
        targets = predicted = None
        if job.has_head:
            with torch.no_grad():
                logits = job.adapter.logits_forward(inputs)
            predicted = logits.argmax(dim=1)
            target = _resolve_target(job.target, job.labels, logits.shape[1])
            targets = predicted if target is None else torch.full_like(predicted, target)
        ids = [job.sources[i].label for i in indices]
        maps = {}
        for name, explain in job.explainers.items():
            bar.set_postfix_str(name)
            maps[name] = explain(inputs, targets, ids).detach().cpu()
        distances = None
        if job.distance is not None:
            bar.set_postfix_str(DISTANCE)
            distances = job.distance.attribute(inputs).detach().cpu()
        display = display_images(inputs, job.preprocess)
        for j, index in enumerate(indices):
            item = Explained(
                name=job.names[index],
                source=job.sources[index].label,
                image=display[j],
                maps={name: m[j] for name, m in maps.items()},
                target=None if targets is None else int(targets[j]),
                predicted=None if predicted is None else int(predicted[j]),
                labels=job.labels,
            )
            yield index, item, None if distances is None else distances[j]
        bar.update(len(indices))


def _write_image_outputs(job: _Job, item: Any) -> list[Path]:
    """Everything written per image; a new kind of output is one more call here."""
    from attnexplain.cli import outputs

    if not item.maps:  # only the distance plot was asked for
        return []
    return [
        outputs.write_figure(job.out, item, job.suffix),
        *outputs.write_maps(job.out, item, job.settings),
    ]


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
    bar = tqdm(total=len(job.sources), desc="explain", unit="img", file=sys.stderr,
               disable=args.no_progress)  # fmt: skip
    with bar, _clear_on_error(bar):
        for index, item, distance in _explained(job, args.batch_size, bar):
            written += _write_image_outputs(job, item)
            if distance is not None:
                distances[index] = distance
    if job.distance is not None:
        written += outputs.write_distances(
            job.out,
            torch.stack([distances[i] for i in range(len(job.sources))]),
            [s.label for s in job.sources],
            job.adapter.patch_size[0],
            job.settings,
            job.suffix,
        )
    for path in written:
        print(path)
    return 0
