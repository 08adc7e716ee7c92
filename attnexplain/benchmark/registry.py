"""Names the benchmark accepts, and the factories behind them: methods, metrics and datasets.

Everything the command line or a recipe can name is resolved here, so the runner only ever sees
built objects. Every method is wrapped into one calling convention::

    explain(inputs, target, image_ids) -> maps        # (B, 3, S, S) -> (B, K, S, S)

with ``inputs`` the model's normalised batch, ``target`` ``(B,)`` int64 class ids (``None`` for
a model without a classification head) and ``image_ids`` the samples' ids (the random baseline
seeds itself from them, so its map of an image never depends on batching or sharding).

Class-specific evaluation (``--metrics class_specific``, the default on ``synthetic-multi``) asks
every method once per present class of an image and once for an absent class; its metrics
(:data:`CLASS_METRICS`) score those maps together against the per-class masks, and the oracle
``all_objects`` (the union of the image's object masks, the same whatever the target) shows what
a perfect but class-agnostic map scores.
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from attnexplain.methods import (
    LRP,
    AttentionFlow,
    AttentionRollout,
    AttnLRP,
    GradCAM,
    GradientWeightedRollout,
    LeGrad,
    PartialLRP,
    RawCLSAttention,
    TransformerAttribution,
)
from attnexplain.metrics import (
    AUROC,
    AveragePrecision,
    BestHeadJaccard,
    ClassSensitivity,
    ClassSpecificMetric,
    DeletionInsertion,
    EnergyPointingGame,
    FaithfulnessMetric,
    Leakage,
    LocalisationMetric,
    MassJaccard,
    MeanIoU,
    NegativeQueryMass,
    ObjectLocalisation,
    PerturbationTest,
    PixelAccuracy,
    PointingGame,
    TargetPointingGame,
    centre_gaussian_map,
    random_map,
)
from attnexplain.zoo import Preprocess

ExplainFn = Callable[[torch.Tensor, "torch.Tensor | None", Sequence[str]], torch.Tensor]
LogitsFn = Callable[[torch.Tensor], torch.Tensor]
MethodKind = Literal["attention", "gradient", "captum", "baseline", "oracle"]
ObjectsFn = Callable[[Sequence[str]], torch.Tensor]
TargetPolicy = Literal["label", "predicted"]

#: Interpolation steps of Integrated Gradients (Captum's default is 50; 32 keeps the benchmark
#: affordable on CPU while the completeness error stays small on ViTs).
IG_STEPS = 32


@dataclass(frozen=True)
class MethodContext:
    """What a method factory may use.

    Attributes:
        model: the model, in eval mode.
        preprocess: its preprocessing (the IG baseline is the normalised black image).
        logits: normalised ``(B, 3, S, S)`` batch -> logits ``(B, classes)``, differentiable.
        batch_size: the most images per model call (Captum's internal batches).
        seed: seed of the random baseline.
        objects: image ids -> ``(B, S, S)`` bool, the union of each image's annotated objects
            at the model's input size (ground truth, for the oracle baselines only).
    """

    model: nn.Module
    preprocess: Preprocess
    logits: LogitsFn
    batch_size: int
    seed: int = 0
    objects: ObjectsFn | None = None


@dataclass(frozen=True)
class MethodSpec:
    """A method the benchmark can run.

    Attributes:
        name: its command-line name.
        kind: ``"attention"``, ``"gradient"`` (needs a head), ``"captum"`` (needs a head),
            ``"baseline"`` (always reported next to the others) or ``"oracle"`` (a baseline
            built from the ground truth, added to class-specific runs).
        build: ``build(context, **options) -> explain``.
        description: one line for ``--help`` and the report.
        per_head: maps have ``K = heads`` (scored only by per-head metrics).
        attribution: the attribution class ``build`` constructs, if any; its constructor's
            keyword arguments are the method's options (``attnexplain explain --layer ...`` passes
            a flag only to the methods whose constructor takes it).
        fixed: constructor arguments ``build`` sets itself, so they are not options.
    """

    name: str
    kind: MethodKind
    build: Callable[..., ExplainFn]
    description: str
    per_head: bool = False
    attribution: type | None = None
    fixed: tuple[str, ...] = ()

    def options(self) -> dict[str, inspect.Parameter]:
        """The options a caller may pass to ``build``: ``attribution``'s constructor parameters
        after ``model``, without ``fixed`` (none without an ``attribution`` class)."""
        if self.attribution is None:
            return {}
        parameters = list(inspect.signature(self.attribution).parameters.values())[1:]
        keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return {p.name: p for p in parameters if p.kind in keyword and p.name not in self.fixed}

    @property
    def needs_head(self) -> bool:
        """Whether the method differentiates a class logit."""
        return self.kind in ("gradient", "captum")


def _attribution(method: Any) -> ExplainFn:
    """Wrap a ``MapAttribution``-style object into the benchmark's calling convention."""

    def explain(
        inputs: torch.Tensor, target: torch.Tensor | None, ids: Sequence[str]
    ) -> torch.Tensor:
        return method.attribute(inputs, target)

    return explain


def _from_class(
    attribution: type, defaults: dict[str, Any] | None = None, fixed: dict[str, Any] | None = None
) -> Callable[..., ExplainFn]:
    """A ``build`` that constructs ``attribution(model, **options)``: ``defaults`` apply unless
    the caller passes the option, ``fixed`` always win."""

    def build(context: MethodContext, **options: Any) -> ExplainFn:
        settings = {**(defaults or {}), **options, **(fixed or {})}
        return _attribution(attribution(context.model, **settings))

    return build


def _saliency(context: MethodContext, **options: Any) -> ExplainFn:
    saliency = Saliency(context.logits)

    def explain(
        inputs: torch.Tensor, target: torch.Tensor | None, ids: Sequence[str]
    ) -> torch.Tensor:
        # Simonyan et al. 2014: the maximum absolute gradient over the colour channels.
        inputs = inputs.detach().requires_grad_()
        grads = saliency.attribute(inputs, target=target, abs=True, **options)
        return grads.amax(dim=1, keepdim=True)

    return explain


def _integrated_gradients(context: MethodContext, **options: Any) -> ExplainFn:
    integrated = IntegratedGradients(context.logits)
    mean = torch.tensor(context.preprocess.mean)
    std = torch.tensor(context.preprocess.std)
    settings = {"n_steps": IG_STEPS, "internal_batch_size": context.batch_size, **options}

    def explain(
        inputs: torch.Tensor, target: torch.Tensor | None, ids: Sequence[str]
    ) -> torch.Tensor:
        # The baseline is a black image, expressed in the model's normalised input space.
        black = (-mean / std).to(inputs)[None, :, None, None].expand_as(inputs)
        attributions = integrated.attribute(inputs, baselines=black, target=target, **settings)
        return attributions.abs().sum(dim=1, keepdim=True)

    return explain


def _random(context: MethodContext, **options: Any) -> ExplainFn:
    def explain(
        inputs: torch.Tensor, target: torch.Tensor | None, ids: Sequence[str]
    ) -> torch.Tensor:
        height, width = inputs.shape[-2:]
        maps = []
        for image_id in ids:
            seed = zlib.crc32(f"{context.seed}/{image_id}".encode())
            generator = torch.Generator().manual_seed(seed)
            maps.append(random_map(1, int(height), int(width), generator=generator))
        return torch.cat(maps).to(inputs.device)

    return explain


def _centre(context: MethodContext, **options: Any) -> ExplainFn:
    def explain(
        inputs: torch.Tensor, target: torch.Tensor | None, ids: Sequence[str]
    ) -> torch.Tensor:
        batch, _, height, width = inputs.shape
        return centre_gaussian_map(batch, int(height), int(width), device=inputs.device, **options)

    return explain


def _all_objects(context: MethodContext, **options: Any) -> ExplainFn:
    if context.objects is None:
        raise ValueError("the all_objects oracle needs the ground truth (MethodContext.objects)")
    objects = context.objects

    def explain(
        inputs: torch.Tensor, target: torch.Tensor | None, ids: Sequence[str]
    ) -> torch.Tensor:
        return objects(ids).to(inputs.device, torch.float32)[:, None]

    return explain


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "raw",
            "attention",
            _from_class(RawCLSAttention, defaults={"head_fusion": "mean"}),
            "last layer's CLS attention, mean over heads",
            attribution=RawCLSAttention,
        ),
        MethodSpec(
            "raw_heads",
            "attention",
            _from_class(RawCLSAttention, fixed={"head_fusion": None}),
            "last layer's CLS attention per head",
            True,
            attribution=RawCLSAttention,
            fixed=("head_fusion",),
        ),
        MethodSpec(
            "rollout",
            "attention",
            _from_class(AttentionRollout),
            "attention rollout (Abnar & Zuidema 2020)",
            attribution=AttentionRollout,
        ),
        MethodSpec(
            "attention_flow",
            "attention",
            _from_class(AttentionFlow),
            "attention flow: max-flow from each patch to the CLS output (Abnar & Zuidema 2020)",
            attribution=AttentionFlow,
        ),
        MethodSpec(
            "gradcam",
            "gradient",
            _from_class(GradCAM),
            "Grad-CAM on the ViT's tokens",
            attribution=GradCAM,
        ),
        MethodSpec(
            "grad_rollout",
            "gradient",
            _from_class(GradientWeightedRollout),
            "gradient-weighted attention rollout",
            attribution=GradientWeightedRollout,
        ),
        MethodSpec(
            "legrad",
            "gradient",
            _from_class(LeGrad),
            "LeGrad: each layer's own score's attention gradient",
            attribution=LeGrad,
        ),
        MethodSpec(
            "transformer_attribution",
            "gradient",
            _from_class(TransformerAttribution),
            "Chefer et al.'s Transformer Attribution (LRP x gradient rollout, from layer 1)",
            attribution=TransformerAttribution,
        ),
        MethodSpec(
            "lrp",
            "gradient",
            _from_class(LRP),
            "LRP to the pixels, Chefer et al.'s baseline rules",
            attribution=LRP,
        ),
        MethodSpec(
            "partial_lrp",
            "gradient",
            _from_class(PartialLRP),
            "LRP relevance of the last attention layer",
            attribution=PartialLRP,
        ),
        MethodSpec(
            "attnlrp",
            "gradient",
            _from_class(AttnLRP),
            "AttnLRP to the pixels (Achtibat et al.)",
            attribution=AttnLRP,
        ),
        MethodSpec("saliency", "captum", _saliency, "Captum Saliency, max |grad| over channels"),
        MethodSpec(
            "integrated_gradients",
            "captum",
            _integrated_gradients,
            f"Captum IntegratedGradients from black, {IG_STEPS} steps, sum |attr| over channels",
        ),
        MethodSpec("random", "baseline", _random, "uniform noise (chance level)"),
        MethodSpec("centre", "baseline", _centre, "centred Gaussian, sigma = 1/4 side"),
        MethodSpec(
            "all_objects",
            "oracle",
            _all_objects,
            "oracle: the union of the image's object masks, whatever the target",
        ),
    )
}
BASELINES: tuple[str, ...] = tuple(n for n, s in METHODS.items() if s.kind == "baseline")
ORACLES: tuple[str, ...] = tuple(n for n, s in METHODS.items() if s.kind == "oracle")
#: Maps every method is compared with (reported last, marked in tables).
REFERENCE_MAPS: tuple[str, ...] = BASELINES + ORACLES


def parse_methods(names: str | Sequence[str]) -> list[str]:
    """Validate method names (comma-separated or a list); append the baselines if missing.

    Returns:
        The names in the given order, baselines last, each once.

    Raises:
        ValueError: for an empty list or an unknown name (the message lists the known ones).
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise ValueError(f"no method given; choose from {', '.join(METHODS)}")
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(
            f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}"
        )
    return list(dict.fromkeys([*names, *BASELINES]))


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------

#: Localisation metrics scored on fused maps (K = 1) against the sample's ``mask``.
MAP_METRICS: dict[str, Callable[[], LocalisationMetric]] = {
    "mass_jaccard": MassJaccard,
    "pixel_accuracy": PixelAccuracy,
    "mean_iou": MeanIoU,
    "average_precision": AveragePrecision,
    "auroc": AUROC,
    "pointing_game": PointingGame,
    "energy_pointing_game": EnergyPointingGame,
}

#: Localisation metrics scored once per annotated object, on every method (``K`` heads or 1),
#: and averaged over the image's objects.
OBJECT_METRICS: dict[str, Callable[[], LocalisationMetric]] = {
    "best_head_jaccard": BestHeadJaccard,
}


@dataclass(frozen=True)
class FaithfulnessContext:
    """What a faithfulness metric factory needs.

    Attributes:
        forward: ``[0, 1]`` images ``(B, 3, S, S)`` -> logits, preprocessing folded in.
        patch_size: the model's patch side in pixels (the unit of deletion / insertion).
        steps: the most deletion / insertion steps (capped at the number of patches).
        batch_size: the most images per model call.
        image_size: ``S``.
    """

    forward: LogitsFn
    patch_size: int
    steps: int
    batch_size: int
    image_size: int

    @property
    def patch_steps(self) -> int:
        """``steps`` capped at the number of patches of an ``S x S`` image."""
        per_side = -(-self.image_size // self.patch_size)
        return min(self.steps, per_side * per_side)


def _game(mode: str, baseline: str) -> Callable[[FaithfulnessContext], FaithfulnessMetric]:
    def build(context: FaithfulnessContext) -> FaithfulnessMetric:
        return DeletionInsertion(
            context.forward,
            mode=mode,  # type: ignore[arg-type]
            patch_size=context.patch_size,
            baseline=baseline,  # type: ignore[arg-type]
            steps=context.patch_steps,
            batch_size=context.batch_size,
        )

    return build


def _perturbation(mode: str) -> Callable[[FaithfulnessContext], FaithfulnessMetric]:
    def build(context: FaithfulnessContext) -> FaithfulnessMetric:
        return PerturbationTest(context.forward, mode=mode, batch_size=context.batch_size)  # type: ignore[arg-type]

    return build


FAITHFULNESS_METRICS: dict[str, Callable[[FaithfulnessContext], FaithfulnessMetric]] = {
    f"{mode}_{baseline}": _game(mode, baseline)
    for mode in ("deletion", "insertion")
    for baseline in ("black", "blur")
} | {f"perturbation_{mode}": _perturbation(mode) for mode in ("positive", "negative")}

#: Class-specific metrics (:mod:`attnexplain.metrics.class_specific`), scored per image on the
#: maps of every present class; ``negative_object_mass`` on the map of one absent class.
CLASS_METRICS: dict[str, Callable[[], ClassSpecificMetric]] = {
    "object_energy_pointing_game": lambda: ObjectLocalisation(EnergyPointingGame()),
    "object_auroc": lambda: ObjectLocalisation(AUROC()),
    "object_pointing_game": TargetPointingGame,
    "leakage": Leakage,
    "class_sensitivity": ClassSensitivity,
    "negative_object_mass": NegativeQueryMass,
}

METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "localisation": (*MAP_METRICS, *OBJECT_METRICS),
    "faithfulness": tuple(FAITHFULNESS_METRICS),
}
METRIC_GROUPS["all"] = METRIC_GROUPS["localisation"] + METRIC_GROUPS["faithfulness"]
# Not part of "all": it asks every method several more questions per image; multi-object
# datasets add it by default (DatasetChoice.class_specific).
METRIC_GROUPS["class_specific"] = tuple(CLASS_METRICS)
KNOWN_METRICS: tuple[str, ...] = METRIC_GROUPS["all"] + METRIC_GROUPS["class_specific"]


@dataclass(frozen=True)
class MetricInfo:
    """Metadata of one metric column, as stored in ``run.json`` and used by the report."""

    name: str
    category: str
    higher_is_better: bool


def metric_info(name: str) -> MetricInfo:
    """Category and direction of the metric called ``name``.

    Raises:
        ValueError: for an unknown name.
    """
    if name in MAP_METRICS or name in OBJECT_METRICS or name in CLASS_METRICS:
        metric: Any = {**MAP_METRICS, **OBJECT_METRICS, **CLASS_METRICS}[name]()
    elif name in FAITHFULNESS_METRICS:
        # Direction is fixed by the mode; a placeholder model is enough to read it.
        metric = FAITHFULNESS_METRICS[name](FaithfulnessContext(lambda x: x, 1, 1, 1, 1))
    else:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(KNOWN_METRICS)}")
    return MetricInfo(name, metric.category, bool(metric.higher_is_better))


def parse_metrics(
    names: str | Sequence[str] | None, *, has_head: bool, class_specific: bool = False
) -> list[str]:
    """Validate metric names or groups (``localisation``, ``faithfulness``, ``class_specific``,
    ``all``).

    Args:
        names: comma-separated names, a list, or ``None`` for every metric that applies
            (faithfulness only when the model has a classification head).
        has_head: whether the model returns class logits.
        class_specific: whether ``None`` also selects the class-specific metrics (a
            multi-object dataset and a model with a head).

    Returns:
        Metric names, each once, localisation first.

    Raises:
        ValueError: for an unknown name, or a faithfulness or class-specific metric asked of a
            headless model.
    """
    if names is None:
        names = ["all"] if has_head else ["localisation"]
        if has_head and class_specific:
            names.append("class_specific")
    elif isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    expanded: list[str] = []
    for name in names:
        if name in METRIC_GROUPS:
            group = METRIC_GROUPS[name]
            if name == "all" and not has_head:
                group = METRIC_GROUPS["localisation"]
            expanded.extend(group)
        elif name in KNOWN_METRICS:
            expanded.append(name)
        else:
            raise ValueError(
                f"unknown metric {name!r}; choose from {', '.join(KNOWN_METRICS)} or a "
                f"group ({', '.join(METRIC_GROUPS)})"
            )
    if not expanded:
        raise ValueError("no metric given")
    if not has_head and any(n in FAITHFULNESS_METRICS for n in expanded):
        raise ValueError(
            "faithfulness metrics need a model with a classification head; this model returns "
            "no logits (use --metrics localisation)"
        )
    if not has_head and any(n in CLASS_METRICS for n in expanded):
        raise ValueError(
            "class-specific metrics explain each present class, which needs a model with a "
            "classification head; this model returns no logits (use --metrics localisation)"
        )
    order = {n: i for i, n in enumerate(KNOWN_METRICS)}
    return sorted(dict.fromkeys(expanded), key=order.__getitem__)


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------

#: Default number of synthetic test images (``synthetic:N`` overrides it).
SYNTHETIC_SIZE = 500


@dataclass(frozen=True)
class DatasetChoice:
    """A dataset opened from a spec.

    Attributes:
        name: the spec, for the report.
        data: indexable samples (``len`` and ``[i]`` -> ``SegmentationSample``).
        default_target: ``"label"`` when the dataset's labels are the model's classes (the
            synthetic data and the embedded model), else ``"predicted"``.
        class_specific: whether its images hold several labelled objects of the model's
            classes, so the class-specific metrics are scored by default.
    """

    name: str
    data: Any
    default_target: TargetPolicy
    class_specific: bool = False


#: Default number of multi-object scenes (``synthetic-multi:N`` overrides it).
SYNTHETIC_MULTI_SIZE = 400

DATASET_FORMS = (
    "synthetic[:N]",
    "synthetic-multi[:N]",
    "voc:ROOT[:SPLIT]",
    "imagenet-seg:MAT",
    "coco:ROOT:ANN",
)


def open_dataset(spec: str, image_size: int) -> DatasetChoice:
    """Open the dataset named by ``spec``.

    Args:
        spec: ``synthetic[:N]`` (the synthetic test split, ``N`` images, default
            :data:`SYNTHETIC_SIZE`, generated at ``image_size``), ``synthetic-multi[:N]`` (the
            test split of the multi-object scenes of :mod:`attnexplain.data.scenes`, default
            :data:`SYNTHETIC_MULTI_SIZE` images; class-specific metrics by default),
            ``voc:ROOT[:SPLIT]`` (PASCAL
            VOC 2012, split ``val`` by default), ``imagenet-seg:MAT`` (``gtsegs_ijcv.mat``) or
            ``coco:ROOT:ANN`` (an image folder and its instances JSON).
        image_size: the model's input side (used by the synthetic data only).

    Returns:
        The :class:`DatasetChoice`.

    Raises:
        ValueError: for an unknown kind or a malformed spec.
        FileNotFoundError: for a missing path (raised by the loader, naming it).
    """
    kind, _, rest = spec.partition(":")
    if kind in ("synthetic", "synthetic-multi"):
        from attnexplain.data.scenes import SyntheticScenes
        from attnexplain.data.synthetic import SyntheticShapes

        size = SYNTHETIC_SIZE if kind == "synthetic" else SYNTHETIC_MULTI_SIZE
        if rest:
            if not rest.isdigit() or int(rest) < 1:
                raise ValueError(f"{kind}:N needs a positive image count, got {spec!r}")
            size = int(rest)
        if kind == "synthetic-multi":
            scenes = SyntheticScenes("test", size, image_size)
            return DatasetChoice(spec, scenes, "label", class_specific=True)
        return DatasetChoice(spec, SyntheticShapes("test", size, image_size), "label")
    if kind == "voc" and rest:
        from attnexplain.data.voc import VOCSegmentation

        root, _, split = rest.rpartition(":")
        if not root or split not in ("train", "val", "trainval"):
            root, split = rest, "val"
        return DatasetChoice(spec, VOCSegmentation(root, split), "predicted")  # type: ignore[arg-type]
    if kind == "imagenet-seg" and rest:
        from attnexplain.data.imagenet_seg import ImageNetSegmentation

        return DatasetChoice(spec, ImageNetSegmentation(rest), "predicted")
    if kind == "coco" and rest.count(":") >= 1:
        from attnexplain.data.coco import COCOInstances

        root, _, ann_file = rest.rpartition(":")
        return DatasetChoice(spec, COCOInstances(root, ann_file), "predicted")
    raise ValueError(f"bad dataset spec {spec!r}; expected one of {', '.join(DATASET_FORMS)}")
