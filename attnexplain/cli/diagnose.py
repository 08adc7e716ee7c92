"""``attnexplain diagnose``: find high-norm artifact tokens, write figures and a JSON summary."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from attnexplain.cli.errors import UsageError

# Image loading and display are explain's; to move to a module shared by the subcommands.
from attnexplain.cli.explain import _display_image, _load_images
from attnexplain.diagnostics import DEFAULT_MIN_GAP, ArtifactDiagnostics, ArtifactReport
from attnexplain.zoo.hub import DEFAULT_MODEL, ModelLoadError, load_model

SUMMARY_FILE = "summary.json"


def _threshold(text: str) -> float | str:
    if text == "gap":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'gap' or a norm, got {text!r}") from None


def run_diagnose(args: argparse.Namespace) -> int:
    """Diagnose the images: norm histograms, one overlay per image, scores and the summary."""
    from attnexplain.methods import RawCLSAttention
    from attnexplain.viz import artifact_overlay, artifact_scores_plot, norm_histograms, save_figure

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    images = _load_images(args.images)
    try:
        model, preprocess = load_model(args.model, args.device)
    except ModelLoadError as error:
        raise UsageError(str(error)) from error
    diagnostics = ArtifactDiagnostics(
        model, threshold=args.threshold, layer=args.layer, min_gap=args.min_gap
    )
    cleaned = None
    if diagnostics.query is not None:
        cleaned = RawCLSAttention(model, exclude_tokens=diagnostics.high_norm_tokens)
    names = [name for name, _ in images]
    inputs = torch.cat([preprocess(image) for _, image in images]).to(args.device)
    reports, cleaned_maps = [], []
    for start in range(0, len(images), args.batch_size):
        chunk = inputs[start : start + args.batch_size]
        reports.append(diagnostics.diagnose(chunk))
        if cleaned is not None:
            cleaned_maps.append(cleaned.attribute(chunk, upsample=False).cpu())
    report = ArtifactReport.concatenate(reports)

    out = Path(args.out)
    written = [save_figure(norm_histograms(report), out / "norm_histograms.png")]
    maps = torch.cat(cleaned_maps) if cleaned_maps else None
    for index, name in enumerate(names):
        shown = _display_image(inputs[index : index + 1], preprocess)
        figure = artifact_overlay(
            shown, report, index, cleaned=None if maps is None else maps[index]
        )
        written.append(save_figure(figure, out / f"{name}_artifacts.png"))
    if report.query_rows is not None:
        written.append(save_figure(artifact_scores_plot(report), out / "artifact_scores.png"))
    summary = {"model": args.model, "min_gap": args.min_gap, **report.summary(names)}
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    written.append(out / SUMMARY_FILE)
    for path in written:
        print(path)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``diagnose`` subcommand on ``subparsers`` (from ``add_subparsers``)."""
    diagnose = subparsers.add_parser(
        "diagnose",
        help="find high-norm artifact tokens (Darcet et al. 2024) before trusting attention maps",
        description="Per layer, the norm of every output token; per image, the high-norm patch "
        "tokens and the share of the CLS attention they and the registers take. Writes "
        "norm_histograms.png, IMAGE_artifacts.png, artifact_scores.png and summary.json.",
    )
    diagnose.add_argument("images", nargs="*", help="image files (default: embedded samples)")
    diagnose.add_argument(
        "--model", default=DEFAULT_MODEL,
        help="'default' (embedded), a Hugging Face id or local folder, or timm:NAME",
    )  # fmt: skip
    diagnose.add_argument(
        "--threshold", type=_threshold, default="gap",
        help="'gap' (data-driven split per image, the default) or a fixed norm, e.g. 150 as the "
        "paper for DINOv2 ViT-g/14",
    )  # fmt: skip
    diagnose.add_argument(
        "--min-gap", type=float, default=DEFAULT_MIN_GAP,
        help="smallest gap of the 'gap' rule, in robust standard deviations of the log norms",
    )  # fmt: skip
    diagnose.add_argument("--layer", type=int, default=-1, help="detection layer (default last)")
    diagnose.add_argument("--batch-size", type=int, default=8, help="images per forward")
    diagnose.add_argument("--out", default="attnexplain-diagnose", help="output folder")
    diagnose.add_argument("--device", default="cpu")
    diagnose.set_defaults(handler=run_diagnose)
    return diagnose
