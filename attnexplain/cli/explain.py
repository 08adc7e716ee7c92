"""``attnexplain explain``: the main job, maps and figures for a few images."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from attnexplain.cli.errors import UsageError
from attnexplain.methods import AttentionRollout, MeanAttentionDistance, RawCLSAttention
from attnexplain.zoo import Preprocess, default_samples
from attnexplain.zoo.hub import DEFAULT_MODEL, ModelLoadError, load_model

METHOD_CHOICES = ("raw", "rollout", "mad", "all")


def _load_images(paths: Sequence[str]) -> list[tuple[str, Image.Image | torch.Tensor]]:
    if not paths:
        return [(sample.image_id, sample.image) for sample in default_samples(4)]
    images = []
    for raw_path in paths:
        path = Path(raw_path)
        if not path.is_file():
            raise UsageError(f"image not found: {path}")
        try:
            with Image.open(path) as opened:
                images.append((path.stem, opened.convert("RGB")))
        except (UnidentifiedImageError, OSError) as error:
            raise UsageError(f"cannot read image {path}: {error}") from error
    return images


def _display_image(inputs: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """Undo the normalisation: ``(1, 3, S, S)`` model input → ``(3, S, S)`` in [0, 1]."""
    mean = torch.tensor(preprocess.mean).view(3, 1, 1)
    std = torch.tensor(preprocess.std).view(3, 1, 1)
    return (inputs[0].cpu() * std + mean).clamp(0, 1)


def _explain_figure(
    image: torch.Tensor, head_maps: torch.Tensor | None, rollout_map: torch.Tensor | None
) -> Figure:
    from attnexplain.viz import compare_overlays, head_grid

    rows = [m for m in (head_maps, rollout_map) if m is not None]
    figure = Figure(figsize=(2.2 * (max(len(head_maps), 2) + 1 if head_maps is not None else 3),
                             2.6 * len(rows)), layout="constrained")  # fmt: skip
    subfigures = figure.subfigures(len(rows), 1, squeeze=False)[:, 0]
    row = 0
    if head_maps is not None:
        subfigures[row].suptitle("raw CLS attention of the last layer, per head")
        head_grid(image, head_maps, axes=subfigures[row].subplots(1, len(head_maps) + 1))
        row += 1
    if rollout_map is not None:
        overlays = {"attention rollout": rollout_map}
        if head_maps is not None:
            overlays = {"raw CLS (head mean)": head_maps.mean(0, keepdim=True), **overlays}
        subfigures[row].suptitle("overlays")
        compare_overlays(image, overlays, axes=subfigures[row].subplots(1, len(overlays) + 1))
    return figure


def run_explain(args: argparse.Namespace) -> int:
    """The main job: explain a few images with the chosen methods and write figures."""
    from attnexplain.viz import mad_plot, save_figure

    methods = set(METHOD_CHOICES[:3]) if args.method == "all" else {args.method}
    images = _load_images(args.images)
    try:
        model, preprocess = load_model(args.model, args.device)
    except ModelLoadError as error:
        raise UsageError(str(error)) from error
    raw = RawCLSAttention(model, head_fusion=None) if "raw" in methods else None
    rollout = AttentionRollout(model) if "rollout" in methods else None
    distance = MeanAttentionDistance(model) if "mad" in methods else None
    out = Path(args.out)
    written: list[Path] = []
    distances = []
    for name, image in images:
        inputs = preprocess(image).to(args.device)
        if raw is not None or rollout is not None:
            head_maps = raw.attribute(inputs)[0].cpu() if raw is not None else None
            rollout_map = rollout.attribute(inputs)[0].cpu() if rollout is not None else None
            figure = _explain_figure(_display_image(inputs, preprocess), head_maps, rollout_map)
            written.append(save_figure(figure, out / f"{name}.png"))
        if distance is not None:
            distances.append(distance.attribute(inputs).cpu())
    if distances:
        figure = mad_plot(torch.cat(distances), patch_size=distance.adapter.patch_size[0])
        written.append(save_figure(figure, out / "mean_attention_distance.png"))
    for path in written:
        print(path)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``explain`` subcommand on ``subparsers`` (from ``add_subparsers``)."""
    explain = subparsers.add_parser(
        "explain",
        help="draw attention maps for images (embedded model and images by default)",
        description="Per image: the per-head raw CLS attention grid and the rollout overlay; "
        "plus the mean-attention-distance plot over all images.",
    )
    explain.add_argument("images", nargs="*", help="image files (default: embedded samples)")
    explain.add_argument(
        "--model", default=DEFAULT_MODEL,
        help="'default' (embedded), a Hugging Face id or local folder, or timm:NAME",
    )  # fmt: skip
    explain.add_argument("--method", choices=METHOD_CHOICES, default="all")
    explain.add_argument("--out", default="attnexplain-out", help="output folder")
    explain.add_argument("--device", default="cpu")
    explain.set_defaults(handler=run_explain)
    return explain
