"""Draw the figures of docs/diagnostics.md (offline, ~20 s on CPU).

    python scripts/make_diagnostics_figures.py [--out docs/figures]

Writes, with :mod:`attnexplain.diagnostics` and :mod:`attnexplain.viz` only:

- ``diagnostics_planted_histograms.png`` / ``diagnostics_planted_overlay.png`` /
  ``diagnostics_planted_scores.png``: the embedded model with one planted artifact per image
  (below): its norm histograms per layer; for two images the norm map, the raw CLS attention
  with the detected token outlined and the cleaned map; the artifact score per layer and head;
- ``diagnostics_coco_histograms.png`` / ``diagnostics_coco_overlay.png``: the same diagnostics,
  unplanted, on real COCO photos (``shared/data/coco2017-ccby-sample``; skipped when absent).

The planted artifact mimics the paper's: after block 1 of 4, a low-information background patch
(the smallest pixel variance outside the object) gets a vector 10x its own norm added, pointing
where the last layer's CLS query looks (its key projection of the query, divided by the layer
norm's gain), so that token is both high-norm and a sink of the CLS attention. Prints the
numbers the docs quote.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image

from attnexplain import RawCLSAttention
from attnexplain.capture import resolve_adapter
from attnexplain.diagnostics import ArtifactDiagnostics
from attnexplain.viz import artifact_overlay, artifact_scores_plot, norm_histograms, save_figure
from attnexplain.zoo import default_samples, load_default

ROOT = Path(__file__).resolve().parents[1]
#: shared/ sits beside the main checkout, two levels up from a worktree under wt/.
COCO = next(
    (path for base in (ROOT.parent, ROOT.parents[1])
     if (path := base / "shared" / "data" / "coco2017-ccby-sample" / "val2017").is_dir()),
    ROOT.parent / "shared" / "data" / "coco2017-ccby-sample" / "val2017",
)  # fmt: skip
MAX_BYTES = 300_000
PLANT_AFTER_BLOCK = 1
PLANT_RATIO = 10.0
SHOWN = 2


def _shrink(path: Path) -> Path:
    """Re-encode with a 256-colour palette and check the size budget."""
    with Image.open(path) as image:
        image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
            path, optimize=True
        )
    size = path.stat().st_size
    if size > MAX_BYTES:
        sys.exit(f"{path} is {size} bytes, over the {MAX_BYTES} budget")
    return path


def _background_patches(samples, patch: int) -> list[int]:
    """Per image, the patch (row-major index) with the least pixel variance outside the object."""
    chosen = []
    for sample in samples:
        image, mask = sample.image, sample.mask.float()
        cells = image.unfold(1, patch, patch).unfold(2, patch, patch)  # (3, h, w, p, p)
        variance = cells.flatten(-2).var(dim=-1).mean(dim=0)  # (h, w)
        inside = mask.unfold(0, patch, patch).unfold(1, patch, patch).flatten(-2).amax(-1)
        variance[inside > 0] = float("inf")
        chosen.append(int(variance.flatten().argmin()))
    return chosen


@contextmanager
def _planted_artifacts(model, inputs: torch.Tensor, patches: list[int]):
    """Add the sink direction to each image's chosen patch after block ``PLANT_AFTER_BLOCK``."""
    adapter = resolve_adapter(model)
    last = model.vit.layers[-1]
    queries = []
    handle = last.attention.q_proj.register_forward_hook(lambda _m, _a, out: queries.append(out))
    with torch.no_grad():
        model(pixel_values=inputs)
    handle.remove()
    cls_query = queries[0][:, 0]  # (B, D)
    direction = cls_query @ last.attention.k_proj.weight / last.layernorm_before.weight  # (B, D)
    direction = direction - direction.mean(dim=-1, keepdim=True)
    direction = direction / direction.norm(dim=-1, keepdim=True)

    def plant(_module, _args, output):
        output = output.clone()
        for b, patch in enumerate(patches):
            token = 1 + patch
            output[b, token] += PLANT_RATIO * output[b, token].norm() * direction[b]
        return output

    handle = adapter.blocks[PLANT_AFTER_BLOCK].register_forward_hook(plant, prepend=True)
    try:
        yield
    finally:
        handle.remove()


def _overlay_figure(model, diagnostics, report, inputs, shown, indices):
    from matplotlib.figure import Figure

    cleaned = RawCLSAttention(model, exclude_tokens=diagnostics.high_norm_tokens)
    maps = cleaned.attribute(inputs, upsample=False)  # the whole batch: planting is per image
    figure = Figure(figsize=(2.3 * 4, 2.5 * len(indices)), layout="constrained")
    rows = figure.subfigures(len(indices), 1, squeeze=False)[:, 0]
    for row, index in zip(rows, indices):
        artifact_overlay(shown[index], report, index, cleaned=maps[index], axes=row.subplots(1, 4))
    return figure


def _report_numbers(label: str, report) -> None:
    summary = report.summary()
    for image in summary["images"]:
        tokens = [(t["row"], t["col"], round(t["norm"], 1)) for t in image["high_norm_tokens"]]
        share = report.artifact_share
        print(
            f"{label} {image['name']}: flagged {tokens}, threshold {image['threshold']}, "
            f"gap {image['gap_separation']:.2f} robust sd, median patch norm "
            f"{image['patch_norm_median']:.1f}, max {image['patch_norm_max']:.1f}"
        )
    if share is not None and report.high_norm.any():
        last = share[:, -1]
        print(f"{label}: CLS share on flagged tokens, last layer, head mean per image: "
              f"{[round(v, 3) for v in last.mean(dim=1).tolist()]}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    out = Path(parser.parse_args().out)
    torch.manual_seed(0)
    model, preprocess = load_default()
    diagnostics = ArtifactDiagnostics(model)
    patch = resolve_adapter(model).patch_size[0]

    samples = default_samples(4)
    inputs = torch.cat([preprocess(sample.image) for sample in samples])
    shown = [sample.image for sample in samples]
    patches = _background_patches(samples, patch)
    clean_share = RawCLSAttention(model).attribute(inputs, upsample=False).flatten(1)
    print("unplanted CLS attention (head mean, last layer) on the patches to plant:",
          [round(float(clean_share[b, p]), 4) for b, p in enumerate(patches)])  # fmt: skip
    with _planted_artifacts(model, inputs, patches):
        report = diagnostics.diagnose(inputs)
        _report_numbers("planted", report)
        print("planted at (row, col):", [divmod(p, report.layout.grid[1]) for p in patches])
        histograms = norm_histograms(report)
        histograms.suptitle("Embedded model, one artifact planted after block 1 per image")
        _shrink(save_figure(histograms, out / "diagnostics_planted_histograms.png", dpi=100))
        overlay = _overlay_figure(model, diagnostics, report, inputs, shown, range(SHOWN))
        _shrink(save_figure(overlay, out / "diagnostics_planted_overlay.png", dpi=100))
        scores = artifact_scores_plot(report)
        _shrink(save_figure(scores, out / "diagnostics_planted_scores.png", dpi=100))

    photos = sorted(COCO.glob("*.jpg"))[:8]
    if not photos:
        print(f"no COCO photos under {COCO}; skipping the detection figures")
        return
    pictures = [Image.open(path).convert("RGB") for path in photos]
    inputs = torch.cat([preprocess(picture) for picture in pictures])
    std, mean = (
        torch.tensor(preprocess.std).view(3, 1, 1),
        torch.tensor(preprocess.mean).view(3, 1, 1),
    )
    shown = [(image * std + mean).clamp(0, 1) for image in inputs]
    report = diagnostics.diagnose(inputs)
    _report_numbers("coco", report)
    histograms = norm_histograms(report)
    histograms.suptitle(f"Embedded model on {len(photos)} COCO photos (no planting)")
    _shrink(save_figure(histograms, out / "diagnostics_coco_histograms.png", dpi=100))
    overlay = _overlay_figure(model, diagnostics, report, inputs, shown, range(SHOWN))
    _shrink(save_figure(overlay, out / "diagnostics_coco_overlay.png", dpi=100))


if __name__ == "__main__":
    main()
