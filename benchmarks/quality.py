"""Quality suite: the embedded models on the synthetic test splits -> ``docs/benchmark/``.

Scores the library's methods (raw CLS attention, its per-head maps, rollout, attention flow,
Grad-CAM, gradient-weighted rollout, LeGrad, Transformer Attribution, LRP, partial LRP, AttnLRP;
``--methods`` adds e.g. Captum's ``saliency``) and the random and centre baselines on the first
``--images`` (500) test images, at the model's 96 px, in three timed passes:

1. **localisation**: every localisation metric on every method;
2. **faithfulness**: deletion / insertion (black and blurred baselines, ``--steps`` steps of
   64 / steps patches) and the positive / negative perturbation tests, on every fused map;
3. **class-specific**: the embedded multi-label model (``load_default("multilabel")``) on the
   first ``--multi-images`` (400) multi-object scenes (``synthetic-multi``), every fused method
   asked once per present class and once for an absent class, scored by the class-specific
   metrics; the report gets its section (table, which methods are class-specific in fact, and
   the figure of each method's map for each of two classes).

``--flow-images N`` scores attention flow (one max-flow per patch) on the first ``N`` images
only, in passes of its own; the report says so. A last step scores each layer on its own: the
mass Jaccard of every layer's raw CLS attention and of the rollout ending at that layer, for the
report's per-layer figure (``--layer-images``, default every image).

Faithfulness costs about 56 model calls per image and method where localisation costs one, so
the passes are timed and reported separately (the report states every wall time). Each pass
is resumable: rerunning the script after an interruption finishes the rows that are missing.
Under ``torchrun`` each process scores its shard (one torch thread each) and rank 0 writes the
report, whose numbers equal a single-process run's.

The report ends with the check that every attention method beats both baselines on the
localisation means, and this script exits with status 1 when one does not.

Usage::

    torchrun --standalone --nproc_per_node=2 benchmarks/quality.py   # the checked-in report
    python benchmarks/quality.py --images 50 --out /tmp/quality --run-dir /tmp/quality-runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from attnexplain import AttentionRollout, RawCLSAttention
from attnexplain.benchmark import BenchmarkConfig, open_dataset, run_benchmark
from attnexplain.benchmark.registry import BASELINES, METHODS, REFERENCE_MAPS, parse_methods
from attnexplain.benchmark.report import (
    CLASS_FIGURE_DPI,
    FIGURE_COLOURS,
    FIGURES_DIR,
    baseline_check,
    class_maps_figure,
    class_specific_section,
    combine_rows,
    layer_table,
    load_examples,
    summarise,
    write_csv,
    write_report,
)
from attnexplain.data.synthetic import CLASS_NAMES
from attnexplain.metrics import MassJaccard
from attnexplain.viz import save_figure
from attnexplain.zoo import ZOO_DIR, load_default

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_METHODS = (
    "raw", "raw_heads", "rollout", "attention_flow", "gradcam", "grad_rollout", "legrad",
    "transformer_attribution", "lrp", "partial_lrp", "attnlrp",
)  # fmt: skip
FLOW = "attention_flow"
ATTENTION_METHODS = [name for name, spec in METHODS.items() if spec.kind == "attention"]


def _pass(name: str, data, model, preprocess, run_dir: Path, config: BenchmarkConfig):
    """One resumable pass; returns its run and its wall time summed over every session."""
    print(f"[quality] {name} pass -> {run_dir}", file=sys.stderr)
    run = run_benchmark(model, preprocess, data, run_dir, config)
    return run, sum(s["wall_seconds"] for s in run.meta.get("sessions", []))  # rank 0 has them


def _attention_losses(checks: list[dict]) -> dict[str, list[str]]:
    """Per attention method, the localisation means where it loses to a baseline (maybe none)."""
    losses: dict[str, list[str]] = {}
    for check in checks:
        if check["method"] in ATTENTION_METHODS:
            lost = losses.setdefault(check["method"], [])
            lost += [
                f"{check['metric']} (vs {baseline})"
                for baseline in ("random", "centre")
                if not check[f"beats_{baseline}"]
            ]
    return losses


def _verdict(losses: dict[str, list[str]]) -> str:
    """One paragraph: which attention methods beat both baselines on every localisation mean."""
    winners = [m for m, lost in losses.items() if not lost]
    parts = [
        "**Against the baselines.** Attention methods that beat both the random and the centre "
        f"baseline on every localisation mean: {', '.join(winners) or 'none'}."
    ]
    for method, lost in losses.items():
        if lost:
            parts.append(f"`{method}` does not beat them on: {', '.join(lost)}.")
    parts.append(
        "The mass-threshold Jaccards (`mass_jaccard`, `best_head_jaccard`) keep the top pixels "
        "holding 60 % of the map's mass: a map concentrated on part of the object keeps too few "
        "pixels and one with a broad floor too many, while the rank-based metrics "
        "(`average_precision`, `auroc`, `pointing_game`) only see the order of pixels and "
        "`energy_pointing_game` only the mass inside the mask."
    )
    return " ".join(parts)


def layer_scores(model, preprocess, data, images: int, batch_size: int) -> dict[str, np.ndarray]:
    """Mass Jaccard of each layer on its own, per image: ``(images, layers)`` per method.

    ``raw CLS attention``: layer ``l``'s head-mean CLS attention
    (``RawCLSAttention(layer="all")``); ``rollout``: the rollout of layers ``0 … l``
    (``AttentionRollout.layer_maps``, cumulative). One forward per batch for each.
    """
    raw, rollout = RawCLSAttention(model, layer="all"), AttentionRollout(model)
    metric = MassJaccard()
    scores: dict[str, list[np.ndarray]] = {"raw CLS attention": [], "rollout": []}
    for start in range(0, images, batch_size):
        samples = [data.data[i] for i in range(start, min(images, start + batch_size))]
        inputs = preprocess(torch.stack([sample.image for sample in samples]))
        masks = torch.stack([sample.mask for sample in samples])
        ignore = torch.stack([sample.ignore for sample in samples])
        maps = {
            "raw CLS attention": raw.attribute(inputs)[:, :, 0],
            "rollout": rollout.layer_maps(inputs).cumulative,
        }  # (B, L, S, S) each
        for name, per_layer in maps.items():
            per_layer = F.interpolate(per_layer, size=masks.shape[-2:], mode="bilinear")
            columns = [metric(per_layer[:, k : k + 1], masks, ignore)
                       for k in range(per_layer.shape[1])]  # fmt: skip
            scores[name].append(torch.stack(columns, dim=1).numpy())
    return {name: np.concatenate(parts) for name, parts in scores.items()}


def _notes(images: int, steps: int, walls: dict[str, float], accuracy: float, world: int) -> str:
    total = sum(walls.values())
    command = (
        f"torchrun --standalone --nproc_per_node={world} benchmarks/quality.py"
        if world > 1
        else "python benchmarks/quality.py"
    )
    lines = [
        f"The embedded default model (`attnexplain/zoo`, see `{ZOO_DIR.name}/MODEL_CARD.md`) on "
        f"the first {images} images of the synthetic test split (96 x 96, one object each); "
        f"its top-1 accuracy on them is **{accuracy:.1%}**. Generated by `{command}`; "
        "targets are the true labels.",
        "",
        f"{'Three' if 'class_specific' in walls else 'Two'} passes, timed separately (wall time "
        "of each pass over all its sessions, "
        f"{world} process(es) of one torch thread each, model loading excluded):",
        "",
        f"- localisation, every metric on every method: **{walls['localisation']:.0f} s**;",
        f"- faithfulness (deletion / insertion with {steps} steps, black and blurred baselines; "
        f"positive / negative perturbation): **{walls['faithfulness']:.0f} s**;",
        *(
            [
                f"- class-specific (the multi-label model on multi-object scenes, every present "
                f"class and one absent class per image): **{walls['class_specific']:.0f} s**;"
            ]
            if "class_specific" in walls
            else []
        ),
        f"- total: **{total:.0f} s** ({total / 60:.1f} min).",
        "",
        "`raw_heads` has one map per head, so only the per-head metric `best_head_jaccard` "
        "applies to it (the best head per object, DINO's protocol); for one-map methods that "
        "metric equals `mass_jaccard` on this single-object data.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run both passes and write the report; 1 if an attention method loses to a baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="test images scored")
    parser.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS), help="comma-separated method names"
    )
    parser.add_argument("--batch-size", type=int, default=50, help="images per model call")
    parser.add_argument("--steps", type=int, default=8, help="deletion / insertion steps")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmark")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--skip-faithfulness", action="store_true")
    parser.add_argument(
        "--flow-images", type=int, default=None, help="score attention_flow on the first N only"
    )
    parser.add_argument(
        "--layer-images", type=int, default=None, help="images of the per-layer figure (all)"
    )
    parser.add_argument(
        "--multi-images", type=int, default=400, help="multi-object scenes scored (0: none)"
    )
    args = parser.parse_args(argv)
    methods = tuple(parse_methods(args.methods))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        # One group for both passes; each of the processes sharing the cores gets one thread.
        torch.distributed.init_process_group("gloo")
        torch.set_num_threads(1)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, methods, world)
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()


def _passes(name, data, model, preprocess, run_dir, methods, args, limit=None):
    """The localisation pass and (unless skipped) the faithfulness pass of ``methods``."""
    common = {"batch_size": args.batch_size, "model_name": "default", "examples": 6, "limit": limit}
    localisation, wall = _pass(
        f"{name}localisation", data, model, preprocess, run_dir / f"{name}localisation",
        BenchmarkConfig(methods=methods, metrics=("localisation",), **common),
    )  # fmt: skip
    runs, walls = [localisation], {"localisation": wall, "faithfulness": 0.0}
    fused = tuple(m for m in methods if not METHODS[m].per_head)
    if not args.skip_faithfulness and fused:
        faithfulness, walls["faithfulness"] = _pass(
            f"{name}faithfulness", data, model, preprocess, run_dir / f"{name}faithfulness",
            BenchmarkConfig(methods=fused, metrics=("faithfulness",),
                            faithfulness_steps=args.steps, **common),
        )  # fmt: skip
        runs.append(faithfulness)
    return runs, walls


def _run(args: argparse.Namespace, methods: tuple[str, ...], world: int) -> int:
    model, preprocess = load_default()
    data = open_dataset(f"synthetic:{args.images}", preprocess.image_size)
    flow_subset = FLOW in methods and (args.flow_images or args.images) < args.images
    main = tuple(m for m in methods if not (flow_subset and m == FLOW))
    runs, walls = _passes("", data, model, preprocess, args.run_dir, main, args)
    if flow_subset:  # its own passes on the first images; the baselines are already scored
        flow_runs, flow_walls = _passes(
            "flow-", data, model, preprocess, args.run_dir, (FLOW,), args, limit=args.flow_images
        )
        runs += [_without_baselines(run) for run in flow_runs]
        walls = {phase: walls[phase] + flow_walls[phase] for phase in walls}
    localisation = runs[0]
    multi = None
    if args.multi_images > 0:
        common = {"batch_size": args.batch_size, "examples": 6}
        multi, walls["class_specific"] = _multi_pass(args, methods, common)
    if not localisation.is_main:
        return 0

    rows = combine_rows(*(run.rows for run in runs))
    meta = dict(localisation.meta)
    meta["methods"] = list(methods)
    meta["metrics"] = {k: v for run in runs for k, v in run.meta["metrics"].items()}
    meta["sessions"] = [s for run in runs for s in run.meta["sessions"]]
    first = {row["image_id"]: row for row in rows}.values()
    accuracy = sum(row["predicted"] == row["label"] for row in first) / len(first)
    losses = _attention_losses(baseline_check(summarise(rows, meta)))
    notes = _notes(args.images, args.steps, walls, accuracy, world)
    if FLOW in methods:
        scored = args.flow_images if flow_subset else args.images
        notes += f"\n\n`{FLOW}` (one max-flow per patch) is scored on the first {scored} images" + (
            " only, in passes of its own (`--flow-images`)." if flow_subset else "."
        )
    layer_images = min(args.layer_images or args.images, args.images)
    per_layer = layer_scores(model, preprocess, data, layer_images, args.batch_size)
    notes += (
        f"\n\n**Each layer on its own** (first {layer_images} images): the mass Jaccard of "
        "every layer's head-mean raw CLS attention and of the rollout of layers 0 … l "
        '(`RawCLSAttention(layer="all")`, `AttentionRollout.layer_maps`; figure at the end).\n\n'
        + layer_table(per_layer, "mass_jaccard")
    )
    sections = [] if multi is None else [_multi_section(args, multi)]
    report = write_report(
        args.out, rows, meta,
        examples=load_examples(args.run_dir / "localisation"),
        title="Quality: the embedded default model on synthetic shapes",
        notes=notes + "\n\n" + _verdict(losses),
        layer_scores=per_layer, sections=sections,
    )  # fmt: skip
    timing = {**walls, "processes": world}
    (args.out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    print(report)

    for method, lost in losses.items():
        if lost:
            print(f"[quality] {method} does not beat both baselines on: {', '.join(lost)}")
    return 1 if any(losses.values()) else 0


def _without_baselines(run):
    """A run's rows minus the baselines' (already scored on every image by the main passes)."""
    run.rows = [row for row in run.rows if row["method"] not in BASELINES]
    return run


def _multi_pass(args: argparse.Namespace, methods: tuple[str, ...], common: dict):
    """The class-specific pass: the multi-label model on the multi-object scenes."""
    model, preprocess = load_default("multilabel")
    data = open_dataset(f"synthetic-multi:{args.multi_images}", preprocess.image_size)
    # Attention flow (one max-flow per patch, the same map for every class) is left out here:
    # asked once per class it would cost more than the rest of the report together.
    fused = tuple(m for m in methods if not METHODS[m].per_head and m != FLOW)
    config = BenchmarkConfig(
        methods=fused, metrics=("class_specific",), **{**common, "model_name": "multilabel"}
    )
    return _pass("class-specific", data, model, preprocess, args.run_dir / "multi", config)


def _multilabel_map(images: int) -> float:
    """Mean average precision of the multi-label model on the first ``images`` scenes."""
    model, preprocess = load_default("multilabel")
    data = open_dataset(f"synthetic-multi:{images}", preprocess.image_size).data
    logits, present = [], []
    for start in range(0, images, 100):
        samples = [data[i] for i in range(start, min(start + 100, images))]
        with torch.no_grad():
            batch = preprocess(torch.stack([s.image for s in samples]))
            logits.append(model(pixel_values=batch).logits)
        for sample in samples:
            hot = torch.zeros(len(CLASS_NAMES))
            hot[sample.object_labels] = 1.0
            present.append(hot)
    return float(average_precision_score(torch.stack(present).numpy(), torch.cat(logits).numpy()))


def _multi_section(args: argparse.Namespace, multi) -> str:
    """The class-specific section of the report, its figure and its summary CSV."""
    examples = load_examples(args.run_dir / "multi")
    methods = [
        m
        for m in multi.meta["methods"]
        if any(m in e.class_maps for e in examples) and m not in REFERENCE_MAPS
    ]
    figure = f"{FIGURES_DIR}/class_maps.png"
    (args.out / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    save_figure(
        class_maps_figure(examples, methods, class_names=CLASS_NAMES),
        args.out / figure,
        dpi=CLASS_FIGURE_DPI,
        colours=FIGURE_COLOURS,
    )
    write_csv(
        [c for c in summarise(multi.rows, multi.meta) if c.category == "class_specific"],
        args.out / "summary_class_specific.csv",
    )
    intro = (
        'The embedded **multi-label** model (`load_default("multilabel")`, see '
        f"`{ZOO_DIR.name}/MODEL_CARD_multilabel.md`; mAP "
        f"**{_multilabel_map(args.multi_images):.3f}** on these images) on the first "
        f"{args.multi_images} scenes of the multi-object test split (`synthetic-multi`, 1-3 "
        "objects of distinct classes each). Same architecture and recipe as the default model, "
        "one sigmoid per class, so every method runs on it unchanged."
    )
    return class_specific_section(multi.rows, multi.meta, figure=figure, intro=intro)


if __name__ == "__main__":
    sys.exit(main())
