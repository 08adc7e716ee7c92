"""Draw the documentation's figures from the embedded model and images (offline, ~30 s on CPU).

    python scripts/make_doc_figures.py [--out docs/figures]

Writes, with :mod:`attnexplain.viz` only:

- ``head_grid.png``: raw CLS attention of the last layer, per head, for two test images;
- ``dino_masks.png``: DINO's 60 %-mass masks of every head, and of the head mean;
- ``rollout_vs_raw.png``: the ground-truth mask next to raw attention, rollout and (when the
  gradient methods are installed) Grad-CAM and gradient-weighted rollout, for three images;
- ``mean_attention_distance.png``: the mean attention distance of every layer and head;
- ``layer_maps.png``: every layer's own map (the founding per-block figure) and the rollout up
  to that layer, for two images;
- ``legrad_flow.png``: the mask next to rollout, attention flow and LeGrad, for three images;
- ``scenes.png``: twelve multi-object test scenes with their captions and visible masks;
- ``multilabel_class_maps.png``: on three two-object scenes, the multi-label model's maps *for
  each of the two classes*, by raw CLS attention, rollout, Grad-CAM and gradient-weighted
  rollout (the attention maps are the same for both classes);
- ``relevance_methods.png``: the mask next to Transformer Attribution, partial LRP, LRP and
  AttnLRP, for the same three images;
- ``clip_prompts.png``: gradient-weighted rollout and Grad-CAM of the embedded image–text model
  for one prompt per object of two scenes, next to the pooling query's attention (which reads no
  prompt).

Every PNG is re-encoded with a 256-colour palette and checked against a size budget, so the
repository stays small.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch
from matplotlib.figure import Figure
from PIL import Image

from attnexplain import (
    LRP,
    AttentionFlow,
    AttentionRollout,
    AttnLRP,
    LeGrad,
    MeanAttentionDistance,
    PartialLRP,
    RawCLSAttention,
    TransformerAttribution,
)
from attnexplain.data.objects import class_masks
from attnexplain.data.scenes import CLASS_NAMES, SyntheticScenes
from attnexplain.methods import GradCAM, GradientWeightedRollout
from attnexplain.viz import (
    compare_overlays,
    head_grid,
    layer_grid,
    mad_plot,
    mass_threshold_overlay,
    save_figure,
)
from attnexplain.zoo import default_samples, load_default

#: Upper bound on each PNG, in bytes.
MAX_BYTES = 300_000
DPI = 100
#: Test images shown: one per class among the first samples, chosen for a readable variety.
SHOWN = (0, 1, 2)


def _shrink(path: Path) -> None:
    """Re-encode a PNG with a 256-colour palette: ~3x smaller (smooth backgrounds band a little)."""
    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    palette.save(path, optimize=True)


def _optional_method(module: str, name: str) -> type | None:
    """A method class that another part of the project may not have added yet."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _head_grid(model, samples, inputs) -> Figure:
    heads = RawCLSAttention(model, head_fusion=None).attribute(inputs)  # (B, heads, H, W)
    figure = Figure(figsize=(2.1 * (heads.shape[1] + 1), 2.4 * 2), layout="constrained")
    rows = figure.subfigures(2, 1)
    for row, index in zip(rows, SHOWN[:2]):
        head_grid(samples[index].image, heads[index], axes=row.subplots(1, heads.shape[1] + 1))
    figure.suptitle("Raw CLS attention of the last layer, one panel per head")
    return figure


def _dino_masks(model, samples, inputs) -> Figure:
    # DINO thresholds on the patch grid, so the masks are unions of whole patches.
    heads = RawCLSAttention(model, head_fusion=None).attribute(inputs, upsample=False)
    index = SHOWN[0]
    count = heads.shape[1]
    figure = Figure(figsize=(2.1 * (count + 2), 2.6), layout="constrained")
    panels = figure.subplots(1, count + 2)
    mass_threshold_overlay(samples[index].image, heads[index], 0.6, axes=panels[: count + 1])
    # The fused mask's own image panel goes to a throwaway figure: the row already shows it.
    scratch = Figure().add_subplot()
    mass_threshold_overlay(
        samples[index].image, heads[index], 0.6, fuse="mean", axes=[scratch, panels[count + 1]]
    )
    figure.suptitle("DINO masks: the top patches holding 60 % of each head's attention mass")
    return figure


def _comparison(model, samples, inputs) -> Figure:
    methods = {
        "raw CLS (head mean)": RawCLSAttention(model),
        "rollout": AttentionRollout(model),
    }
    for label, module, name in (
        ("Grad-CAM", "attnexplain.methods.gradcam", "GradCAM"),
        ("grad. rollout", "attnexplain.methods.gradient_rollout", "GradientWeightedRollout"),
    ):
        method = _optional_method(module, name)
        if method is not None:
            methods[label] = method(model)
    return _side_by_side(methods, samples, inputs, "gradient methods explain the true class")


def _relevance(model, samples, inputs) -> Figure:
    methods = {
        "Transformer Attribution": TransformerAttribution(model),
        "partial LRP": PartialLRP(model),
        "LRP (pixels)": LRP(model),
        "AttnLRP (pixels)": AttnLRP(model),
    }
    return _side_by_side(methods, samples, inputs, "relevance of the true class")


def _side_by_side(methods, samples, inputs, note: str) -> Figure:
    labels = torch.tensor([samples[i].label for i in SHOWN])
    shown = inputs[list(SHOWN)]
    maps = {label: method.attribute(shown, target=labels) for label, method in methods.items()}
    columns = len(maps) + 2
    figure = Figure(figsize=(2.1 * columns, 2.3 * len(SHOWN)), layout="constrained")
    for row, (subfigure, index) in enumerate(zip(figure.subfigures(len(SHOWN), 1), SHOWN)):
        overlays = {"object mask": samples[index].mask.float()}
        overlays |= {label: value[row] for label, value in maps.items()}
        compare_overlays(samples[index].image, overlays, axes=subfigure.subplots(1, columns))
    figure.suptitle(f"Methods side by side ({note})")
    return figure


def _layer_maps(model, samples, inputs) -> Figure:
    shown = list(SHOWN[:2])
    maps = AttentionRollout(model).layer_maps(inputs[shown])
    images = torch.stack([samples[i].image for i in shown])
    figure = Figure(figsize=(1.5 * (len(maps.layers) + 1), 1.6 * 4), layout="constrained")
    top, bottom = figure.subfigures(2, 1)
    layer_grid(images, maps.per_block, axes=top.subplots(2, len(maps.layers) + 1))
    top.suptitle("Each layer's own (Ā + I) CLS row (the founding per-block figure)")
    layer_grid(images, maps.cumulative, axes=bottom.subplots(2, len(maps.layers) + 1))
    bottom.suptitle("Rollout up to each layer (joint_attentions[i])")
    return figure


def _legrad_flow(model, samples, inputs) -> Figure:
    labels = torch.tensor([samples[i].label for i in SHOWN])
    shown = inputs[list(SHOWN)]
    maps = {
        "rollout": AttentionRollout(model).attribute(shown),
        "attention flow": AttentionFlow(model).attribute(shown),
        "LeGrad": LeGrad(model).attribute(shown, target=labels),
    }
    figure = Figure(figsize=(2.1 * (len(maps) + 2), 2.3 * len(SHOWN)), layout="constrained")
    for row, (subfigure, index) in enumerate(zip(figure.subfigures(len(SHOWN), 1), SHOWN)):
        overlays = {"object mask": samples[index].mask.float()}
        overlays |= {label: value[row] for label, value in maps.items()}
        compare_overlays(samples[index].image, overlays, axes=subfigure.subplots(1, len(maps) + 2))
    figure.suptitle("Rollout, attention flow and LeGrad (LeGrad explains the true class)")
    return figure


def _mad(model, preprocess) -> Figure:
    samples = default_samples(16)
    inputs = torch.cat([preprocess(sample.image) for sample in samples])
    method = MeanAttentionDistance(model)
    distances = method.attribute(inputs)  # (16, layers, heads)
    figure = mad_plot(distances, patch_size=method.adapter.patch_size[0])
    figure.axes[0].set_title("Mean attention distance, 16 test images", fontsize="medium")
    return figure


def _scenes(scenes: SyntheticScenes) -> Figure:
    figure = Figure(figsize=(12, 6.6), layout="constrained")
    for ax, index in zip(figure.subplots(2, 6).ravel(), range(12)):
        scene = scenes.scene(index)
        ax.imshow(scene.image.permute(1, 2, 0).numpy())
        for obj in scene.objects:
            ax.contour(obj.mask.float().numpy(), levels=[0.5], colors=["lime"], linewidths=0.8)
        words = scene.caption.replace(", a", ",\na").replace(" and", "\nand")
        ax.set_title(words, fontsize="x-small")
        ax.set_axis_off()
    figure.suptitle("Multi-object scenes (test split) with their captions and visible masks")
    return figure


def _class_maps(scenes: SyntheticScenes) -> Figure:
    model, preprocess = load_default("multilabel")
    methods = {
        "raw CLS": RawCLSAttention(model),
        "rollout": AttentionRollout(model),
        "Grad-CAM": GradCAM(model),
        "grad. rollout": GradientWeightedRollout(model),
    }
    shown = []
    for index in range(len(scenes)):
        sample = scenes[index]
        grouped = class_masks(sample.object_labels, sample.object_masks)
        if len(grouped.labels) == 2:
            shown.append((sample, grouped))
        if len(shown) == 3:
            break
    rows = 2 * len(shown)
    figure = Figure(figsize=(2.0 * (len(methods) + 1), 2.1 * rows), layout="constrained")
    axes = figure.subplots(rows, len(methods) + 1)
    for number, (sample, grouped) in enumerate(shown):
        inputs = preprocess(sample.image).expand(2, -1, -1, -1)
        maps = {name: m.attribute(inputs, grouped.labels) for name, m in methods.items()}
        for k, label in enumerate(grouped.labels.tolist()):
            row = axes[2 * number + k]
            compare_overlays(sample.image, {name: value[k] for name, value in maps.items()},
                             axes=row)  # fmt: skip
            row[0].contour(grouped.masks[k].float().numpy(), levels=[0.5], colors=["lime"])
            row[0].set_title(f"map for: {CLASS_NAMES[label]}", fontsize="small")
            if number or k:
                for ax in row[1:]:
                    ax.set_title("")
    figure.suptitle("The multi-label model asked about each of two objects")
    return figure


def _clip_prompts() -> Figure:
    from attnexplain.data.scenes import SyntheticScenes
    from attnexplain.methods import GradCAM, GradientWeightedRollout

    model, preprocess = load_default("clip")
    scenes = SyntheticScenes("test", size=8)
    rows = ((1, GradientWeightedRollout, "grad. rollout"), (1, GradCAM, "Grad-CAM"),
            (3, GradientWeightedRollout, "grad. rollout"))  # fmt: skip
    figure = Figure(figsize=(2.1 * 5, 2.4 * len(rows)), layout="constrained")
    for subfigure, (index, method, label) in zip(figure.subfigures(len(rows), 1), rows):
        prompts = [f"the {obj.phrase}" for obj in scenes.objects(index)[:3]]
        x = preprocess(scenes[index].image).expand(len(prompts), -1, -1, -1)
        maps = {"pooling attention": RawCLSAttention(model).attribute(x[:1])[0]}
        maps |= {f"{label}: {p}": m for p, m in zip(prompts, method(model).attribute(x, prompts))}
        compare_overlays(scenes[index].image, maps, axes=subfigure.subplots(1, len(maps) + 1))
    figure.suptitle('load_default("clip"): one prompt per object; the pooling attention reads none')
    return figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    torch.set_num_threads(1)  # the model is tiny; more threads only contend on a shared CPU
    model, preprocess = load_default()
    samples = default_samples(max(SHOWN) + 1)
    inputs = torch.cat([preprocess(sample.image) for sample in samples])
    figures = {
        "head_grid.png": _head_grid(model, samples, inputs),
        "dino_masks.png": _dino_masks(model, samples, inputs),
        "rollout_vs_raw.png": _comparison(model, samples, inputs),
        "relevance_methods.png": _relevance(model, samples, inputs),
        "mean_attention_distance.png": _mad(model, preprocess),
        "layer_maps.png": _layer_maps(model, samples, inputs),
        "legrad_flow.png": _legrad_flow(model, samples, inputs),
        "scenes.png": _scenes(SyntheticScenes("test", size=40)),
        "multilabel_class_maps.png": _class_maps(SyntheticScenes("test", size=40)),
        "clip_prompts.png": _clip_prompts(),
    }
    too_big = []
    for name, figure in figures.items():
        path = save_figure(figure, args.out / name, dpi=DPI)
        _shrink(path)
        size = path.stat().st_size
        print(f"{path}  {size / 1000:.0f} kB")
        if size > MAX_BYTES:
            too_big.append(f"{path} is {size} bytes (budget {MAX_BYTES})")
    if too_big:
        print("\n".join(too_big), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
