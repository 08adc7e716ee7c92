"""Recipes: the settings that reproduce published localisation tables with this benchmark.

A recipe fixes methods, metrics, targets and the scoring resolution; the model and the dataset
path come from the command line (``attnexplain benchmark --recipe NAME --model M --dataset D``),
so one recipe runs each model of its table. ``benchmarks/recipes.md`` lists the commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from attnexplain.benchmark.registry import TargetPolicy
from attnexplain.benchmark.runner import BenchmarkConfig, MaskResolution


@dataclass(frozen=True)
class Recipe:
    """Settings of one published table.

    Attributes:
        name: the ``--recipe`` name.
        title: what it reproduces.
        source: the paper and the reference code it follows.
        models: the models of the published table (hub ids or ``timm:`` names).
        dataset: the dataset form it expects (``voc:ROOT``, ``imagenet-seg:MAT``).
        methods: methods run (the random and centre baselines are always added).
        metrics: metrics scored.
        target: which class gradient methods explain.
        mask_resolution: where maps meet masks (see :class:`BenchmarkConfig`).
        method_options: keyword arguments per method.
        compare_method: the method whose scores make the published table.
    """

    name: str
    title: str
    source: str
    models: tuple[str, ...]
    dataset: str
    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    target: TargetPolicy
    mask_resolution: MaskResolution
    compare_method: str
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def config(self, **overrides: Any) -> BenchmarkConfig:
        """The :class:`BenchmarkConfig` of this recipe, with ``overrides`` (batch size, limit …).

        Raises:
            ValueError: if an override is invalid (see :class:`BenchmarkConfig`).
        """
        settings: dict[str, Any] = {
            "methods": self.methods,
            "metrics": self.metrics,
            "target": self.target,
            "mask_resolution": self.mask_resolution,
            "method_options": {k: dict(v) for k, v in self.method_options.items()},
        }
        settings.update(overrides)
        return BenchmarkConfig(**settings)


DINO_VOC = Recipe(
    name="dino-voc",
    title="DINO's Jaccard of last-layer CLS attention with VOC12 val objects",
    source=(
        "Caron et al. 2021, Emerging Properties in Self-Supervised Vision Transformers (ICCV), "
        "Sec. 4.2.1: per-head CLS attention of the last layer, 60 % mass threshold, Jaccard of "
        "the best head; facebookresearch/dino visualize_attention.py"
    ),
    models=(
        "facebook/dino-vits16",
        "facebook/dino-vits8",
        "facebook/deit-small-patch16-224",
    ),
    dataset="voc:ROOT",
    methods=("raw_heads",),
    metrics=("best_head_jaccard",),
    target="predicted",
    mask_resolution="image",
    compare_method="raw_heads",
)

#: The six rows of Chefer et al.'s table, then the gradient-weighted rollout of their later paper.
CHEFER_METHODS = ("raw", "rollout", "gradcam", "lrp", "partial_lrp", "transformer_attribution",
                  "grad_rollout")  # fmt: skip
CHEFER_METRICS = ("pixel_accuracy", "mean_iou", "average_precision", "perturbation_positive",
                  "perturbation_negative")  # fmt: skip

CHEFER_IMAGENET_SEG = Recipe(
    name="chefer-imagenet-seg",
    title=(
        "Chefer et al.'s ImageNet-segmentation table (pixel accuracy, mIoU, mAP) and its "
        "positive / negative perturbation test, all six rows"
    ),
    source=(
        "Chefer, Gur & Wolf 2021, Transformer Interpretability Beyond Attention Visualization "
        "(CVPR), Sec. 4; hila-chefer/Transformer-Explainability imagenet_seg_eval.py and "
        "generate_visualizations.py (rollout and Transformer Attribution from layer 1, LRP and "
        "partial LRP with the ViT_orig_LRP rules, predicted class, images and masks at 224 x 224)"
    ),
    models=("google/vit-base-patch16-224",),
    dataset="imagenet-seg:MAT",
    methods=CHEFER_METHODS,
    metrics=CHEFER_METRICS,
    target="predicted",
    mask_resolution="model",
    compare_method="transformer_attribution",
    method_options=MappingProxyType(
        {
            "rollout": MappingProxyType({"start_layer": 1}),
            "transformer_attribution": MappingProxyType({"start_layer": 1}),
        }
    ),
)

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (DINO_VOC, CHEFER_IMAGENET_SEG)}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    return RECIPES[name]
