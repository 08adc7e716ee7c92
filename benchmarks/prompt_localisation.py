"""Prompt localisation on the embedded scenes: does a text query's map point at what it names?

For every held-out scene of :mod:`attnexplain.data.scenes` with two or three objects, and every
object in it, the query ``"the {colour} {class}"`` is explained on the embedded image–text model
(``load_default("clip")``) by each method. A map *points at* an object when its maximum lies in
that object's mask. Per method the suite reports the share of queries whose map points at the
queried object, at another object of the scene, or elsewhere, and the share of the map's
(non-negative) mass over the scene's objects that lies on the queried object. Chance for the
latter is the queried object's share of the objects' area; the attention methods, which do not
read the prompt, measure what a map that ignores the query achieves.

It also reports the model's retrieval on the same scenes (which queries it says are true).

    python benchmarks/prompt_localisation.py --scenes 300 --out prompt-localisation.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from attnexplain import AttentionRollout, GradCAM, GradientWeightedRollout, RawCLSAttention
from attnexplain.data.scenes import SyntheticScenes
from attnexplain.zoo import load_default
from attnexplain.zoo.train_clip import COLOUR_NAMES, retrieval_scores

#: name -> (method class, whether it reads the prompt)
METHODS = {
    "Grad-CAM": (GradCAM, True),
    "gradient rollout": (GradientWeightedRollout, True),
    "pooling attention": (RawCLSAttention, False),
    "attention rollout": (AttentionRollout, False),
}


def scene_queries(
    scenes: SyntheticScenes, count: int
) -> list[tuple[torch.Tensor, str, torch.Tensor, int]]:
    """``(image, prompt, object masks (K, H, W), queried index)`` for every object of the first
    ``count`` scenes of ``scenes`` with at least two objects."""
    items, used = [], 0
    for index in range(len(scenes)):
        if used == count:
            break
        scene = scenes.scene(index)
        if len(scene.objects) < 2:
            continue
        masks = torch.stack([obj.mask for obj in scene.objects])
        for k, obj in enumerate(scene.objects):
            items.append((scene.image, f"the {obj.phrase}", masks, k))
        used += 1
    return items


def pointing(maps: torch.Tensor, masks: Sequence[torch.Tensor], queried: Sequence[int]):
    """Per query: ``"queried"``, ``"other"`` or ``"elsewhere"`` (also for an all-zero map), and
    the share of the map's mass over the objects that lies on the queried one."""
    places, shares = [], []
    for heatmap, object_masks, k in zip(maps[:, 0].clamp_min(0), masks, queried):
        if heatmap.max() <= 0:
            places.append("elsewhere")
            shares.append(0.0)
            continue
        peak = torch.zeros_like(heatmap, dtype=torch.bool).view(-1)
        peak[heatmap.argmax()] = True
        hit = [bool((mask.view(-1) & peak).any()) for mask in object_masks]
        places.append("queried" if hit[k] else "other" if any(hit) else "elsewhere")
        on_objects = (heatmap * object_masks.any(dim=0)).sum()
        shares.append(float((heatmap * object_masks[k]).sum() / on_objects.clamp_min(1e-12)))
    return places, shares


def evaluate(
    model: torch.nn.Module,
    preprocess: Any,
    items: Sequence[tuple[torch.Tensor, str, torch.Tensor, int]],
    methods: Sequence[str] = tuple(METHODS),
    batch_size: int = 16,
) -> dict[str, dict[str, float]]:
    """Pointing and mass shares of each method over ``items`` (see :func:`scene_queries`)."""
    results: dict[str, dict[str, float]] = {}
    for name in methods:
        method_type, _ = METHODS[name]
        method = method_type(model)
        places, shares, seconds = [], [], 0.0
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            x = preprocess(torch.stack([image for image, *_ in batch]))
            begin = time.perf_counter()
            maps = method.attribute(x, target=[prompt for _, prompt, _, _ in batch])
            seconds += time.perf_counter() - begin
            batch_places, batch_shares = pointing(maps, [m for *_, m, _ in batch],
                                                  [k for *_, k in batch])  # fmt: skip
            places += batch_places
            shares += batch_shares
        results[name] = {
            place: places.count(place) / len(places) for place in ("queried", "other", "elsewhere")
        }
        results[name]["mass share"] = sum(shares) / len(shares)
        results[name]["seconds per query"] = seconds / len(items)
    areas = [float(masks[k].sum() / masks.any(dim=0).sum()) for _, _, masks, k in items]
    results["chance"] = {"mass share": sum(areas) / len(areas)}
    return results


def retrieval(
    model: torch.nn.Module, preprocess: Any, scenes: SyntheticScenes, count: int
) -> dict[str, float]:
    """:func:`~attnexplain.zoo.train_clip.retrieval_scores` on the first ``count`` scenes."""
    images, objects = [], []
    for index in range(count):
        scene = scenes.scene(index)
        images.append((scene.image * 255).round().to(torch.uint8))
        objects.append([(obj.label, COLOUR_NAMES.index(obj.colour_name)) for obj in scene.objects])
    return retrieval_scores(model, torch.stack(images), objects, preprocess)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=300, help="scenes with 2-3 objects")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite and print a Markdown table; see ``--help``."""
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    model, preprocess = load_default("clip")
    scenes = SyntheticScenes("test", size=10 * args.scenes, image_size=preprocess.image_size)
    items = scene_queries(scenes, args.scenes)
    results = evaluate(model, preprocess, items, batch_size=args.batch_size)
    results["retrieval"] = retrieval(model, preprocess, scenes, args.scenes)
    print(f"{len(items)} queries on {args.scenes} test scenes with 2-3 objects\n")
    print("| method | reads the prompt | points at the queried object | at another object "
          "| elsewhere | mass share on the queried object |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|")
    for name, (_, reads) in METHODS.items():
        row = results[name]
        print(f"| {name} | {'yes' if reads else 'no'} | {row['queried']:.1%} | {row['other']:.1%}"
              f" | {row['elsewhere']:.1%} | {row['mass share']:.1%} |")  # fmt: skip
    print(f"| chance | | | | | {results['chance']['mass share']:.1%} |")
    print("\nretrieval on the first scenes: " + ", ".join(
        f"{key} {value:.1%}" for key, value in results["retrieval"].items()
    ))  # fmt: skip
    if args.out is not None:
        args.out.write_text(json.dumps({"queries": len(items), **results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
