"""``attnexplain diagnose``: find high-norm artifact tokens, write figures and a JSON summary."""

from __future__ import annotations

import argparse
import json
import sys

from attnexplain.cli.common import add_run_arguments
from attnexplain.cli.images import batches, collect_sources, display_images

SUMMARY_FILE = "summary.json"
#: The default of ``--min-gap``; equal to :data:`attnexplain.diagnostics.DEFAULT_MIN_GAP`
#: (tested), repeated so that building the parser imports no torch.
DEFAULT_MIN_GAP = 3.0


def _threshold(text: str) -> float | str:
    if text == "gap":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'gap' or a norm, got {text!r}") from None


def run_diagnose(args: argparse.Namespace) -> int:
    """Diagnose the images: norm histograms, one overlay per image, scores and the summary.

    Returns:
        0 on success (the paths written are printed, one per line).

    Raises:
        UsageError, ModelLoadError, UnsupportedModelError: for bad arguments, images or models
            (printed as one line by the caller).
    """
    import torch
    from tqdm.auto import tqdm

    from attnexplain.cli.checks import prepare_output_dir, resolve_device
    from attnexplain.cli.outputs import output_names
    from attnexplain.diagnostics import ArtifactDiagnostics, ArtifactReport
    from attnexplain.methods import RawCLSAttention
    from attnexplain.viz import artifact_overlay, artifact_scores_plot, norm_histograms, save_figure
    from attnexplain.zoo.hub import load_model

    device = resolve_device(args.device)
    sources = collect_sources(args.images)
    out = prepare_output_dir(args.out)
    model, preprocess = load_model(args.model, str(device))
    diagnostics = ArtifactDiagnostics(
        model, threshold=args.threshold, layer=args.layer, min_gap=args.min_gap
    )
    cleaned = None
    if diagnostics.query is not None:
        cleaned = RawCLSAttention(model, exclude_tokens=diagnostics.high_norm_tokens)
    names = output_names(
        [s.path if s.path is not None else s.label for s in sources],
        reserved=["norm_histograms", "artifact_scores", "summary"],
    )
    reports, shown, cleaned_maps, order = [], [], [], []
    bar = tqdm(total=len(sources), desc="diagnose", unit="img", file=sys.stderr,
               disable=args.no_progress)  # fmt: skip
    with bar:
        for indices, inputs in batches(sources, preprocess, args.batch_size):
            inputs = inputs.to(device)
            reports.append(diagnostics.diagnose(inputs))
            shown.append(display_images(inputs, preprocess))
            if cleaned is not None:
                cleaned_maps.append(cleaned.attribute(inputs, upsample=False).cpu())
            order += indices
            bar.update(len(indices))
    report = ArtifactReport.concatenate(reports)
    images = torch.cat(shown)
    maps = torch.cat(cleaned_maps) if cleaned_maps else None
    ordered = [names[i] for i in order]  # batches group images by input size

    written = [save_figure(norm_histograms(report), out / "norm_histograms.png")]
    for position, name in enumerate(ordered):
        figure = artifact_overlay(
            images[position : position + 1],
            report,
            position,
            cleaned=None if maps is None else maps[position],
        )
        written.append(save_figure(figure, out / f"{name}_artifacts.png"))
    if report.query_rows is not None:
        written.append(save_figure(artifact_scores_plot(report), out / "artifact_scores.png"))
    summary = {"model": args.model, "min_gap": args.min_gap, **report.summary(ordered)}
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
    add_run_arguments(diagnose, out="attnexplain-diagnose")
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
    diagnose.set_defaults(handler=run_diagnose)
    return diagnose
