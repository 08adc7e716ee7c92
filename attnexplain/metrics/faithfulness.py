"""Faithfulness metrics: does removing what the map calls important change the model's output?

Both metrics follow one calling convention::

    metric = DeletionInsertion(forward_fn, ...)        # or PerturbationTest(forward_fn, ...)
    result = metric(images, attributions, target)      # -> PerturbationCurves

with ``images`` ``(B, C, H, W)`` in ``[0, 1]``, ``attributions`` ``(B, 1, H, W)`` and ``target``
``(B,)`` integer class ids. ``forward_fn`` maps such images to logits ``(B', num_classes)``; the
caller folds the model's preprocessing (normalisation, resizing) into it. It is called under
``torch.no_grad()`` on chunks of at most ``batch_size`` perturbed images, stacked across steps
and samples.

Both metrics are one schedule: every pixel gets the rank of its unit (a patch, or the pixel
itself) in the map's order, and step ``s`` replaces the units of rank ``< counts[s]`` by a
baseline image (deletion) or keeps only those units on top of the baseline (insertion).
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from attnexplain.metrics.base import Category, Metric, check_maps

ForwardFn = Callable[[torch.Tensor], torch.Tensor]

#: Blur baseline: an 11×11 Gaussian of σ = 5 px, RISE's ``gkern(11, 5)`` insertion substrate.
BLUR_KERNEL_SIZE = 11
BLUR_SIGMA = 5.0


@dataclass(frozen=True)
class PerturbationCurves:
    """The curves of one faithfulness run and their areas.

    Attributes:
        x: ``(S + 1,)`` float64, the fraction of units (patches or pixels) removed (deletion,
            perturbation test) or revealed (insertion) at each step; ``x[0] = 0``.
        probability: ``(B, S + 1)`` float64 softmax probability of the target at each step.
        correct: ``(B, S + 1)`` bool, whether the model's top-1 class is the target.
        probability_auc: ``(B,)`` float64 trapezoid area of ``probability`` over ``x``.
        accuracy_auc: ``(B,)`` float64 trapezoid area of ``correct`` over ``x``; its mean over a
            dataset is the area under the dataset's accuracy curve.
        auc: ``(B,)`` float64, the metric's headline score: ``probability_auc`` for
            :class:`DeletionInsertion`, ``accuracy_auc`` for :class:`PerturbationTest`.
    """

    x: torch.Tensor
    probability: torch.Tensor
    correct: torch.Tensor
    probability_auc: torch.Tensor
    accuracy_auc: torch.Tensor
    auc: torch.Tensor


def gaussian_blur(
    images: torch.Tensor, kernel_size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA
) -> torch.Tensor:
    """Blur ``(B, C, H, W)`` images with a separable Gaussian, same shape.

    The kernel is normalised to sum 1 and borders are padded by replication, so a constant
    image stays constant (RISE pads with zeros, which darkens the border).

    Args:
        images: ``(B, C, H, W)`` float images.
        kernel_size: odd kernel width in pixels.
        sigma: standard deviation in pixels.

    Returns:
        ``(B, C, H, W)`` blurred images.
    """
    half = kernel_size // 2
    offsets = torch.arange(-half, half + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (half, half, half, half), mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def unit_ranks(
    maps: torch.Tensor, patch_size: int, *, descending: bool = True
) -> tuple[torch.Tensor, int]:
    """Rank the ``patch_size`` squares of each map by their mean value; give each pixel its rank.

    Patches at the right and bottom edges may be partial when the size is not a multiple of
    ``patch_size``; they are ranked by the mean of the pixels they have. Ties keep raster order
    (stable sort), so the schedule is deterministic.

    Args:
        maps: ``(B, H, W)`` float maps (signed values are used as they are).
        patch_size: side of the square units; 1 ranks single pixels.
        descending: rank 0 is the highest mean when ``True``, the lowest when ``False``.

    Returns:
        ``(ranks, units)``: ``(B, H * W)`` int64 rank of each pixel's unit (0 first), and the
        number of units per image.
    """
    batch, height, width = maps.shape
    grid_w = math.ceil(width / patch_size)
    units = math.ceil(height / patch_size) * grid_w
    rows = torch.arange(height, device=maps.device) // patch_size
    cols = torch.arange(width, device=maps.device) // patch_size
    unit_of_pixel = (rows[:, None] * grid_w + cols[None, :]).flatten()
    sums = torch.zeros(batch, units, dtype=torch.float64, device=maps.device)
    sums.index_add_(1, unit_of_pixel, maps.flatten(1).double())
    means = sums / torch.bincount(unit_of_pixel, minlength=units)
    order = torch.sort(means, dim=1, descending=descending, stable=True).indices
    unit_rank = torch.empty_like(order)
    unit_rank.scatter_(1, order, torch.arange(units, device=maps.device).expand(batch, units))
    return unit_rank[:, unit_of_pixel], units


@dataclass(frozen=True)
class _Schedule:
    """What a faithfulness metric decides; the shared runner does the rest."""

    ranks: torch.Tensor  # (B, H*W) int64, rank of each pixel's unit
    counts: torch.Tensor  # (S+1,) int64, units affected at each step
    x: torch.Tensor  # (S+1,) float64 x-axis of the curves
    baselines: torch.Tensor  # (B, C, H, W), what removed pixels become
    reveal: bool  # insertion: units of rank < count show the image, the rest the baseline


class FaithfulnessMetric(Metric):
    """Template for ``metric(images, attributions, target) -> PerturbationCurves``.

    The base validates inputs, builds the perturbed images chunk by chunk, calls ``forward_fn``
    in batches and integrates the curves; a metric supplies only :meth:`_schedule`.

    Args:
        forward_fn: maps ``(B', C, H, W)`` images in ``[0, 1]`` to logits ``(B', classes)``.
        batch_size: the most images per ``forward_fn`` call.

    Raises:
        TypeError: if ``forward_fn`` is not callable or ``batch_size`` is not an int.
        ValueError: if ``batch_size < 1``.
    """

    category: ClassVar[Category] = "faithfulness"
    _headline: ClassVar[Literal["probability", "accuracy"]]

    def __init__(self, forward_fn: ForwardFn, batch_size: int = 32) -> None:
        if not callable(forward_fn):
            raise TypeError(f"forward_fn must be callable, got {type(forward_fn).__name__}")
        _check_positive_int(batch_size, "batch_size")
        self.forward_fn = forward_fn
        self.batch_size = batch_size

    def __call__(
        self, images: torch.Tensor, attributions: torch.Tensor, target: torch.Tensor
    ) -> PerturbationCurves:
        """Perturb the images in the map's order and record the model's response.

        Args:
            images: ``(B, C, H, W)`` float images in ``[0, 1]``.
            attributions: ``(B, 1, H, W)`` float maps at image resolution.
            target: ``(B,)`` integer class per sample.

        Returns:
            :class:`PerturbationCurves` with ``S + 1`` points per curve.

        Raises:
            TypeError: if an argument is not a tensor of the expected kind, or ``forward_fn``
                does not return a tensor.
            ValueError: on an empty batch, mismatched shapes, NaN/infinite maps, images outside
                ``[0, 1]``, logits that are not ``(B', classes)`` or a target out of range.
        """
        _check_inputs(images, attributions, target)
        plan = self._schedule(images, attributions[:, 0].to(images.device))
        probability, correct = self._run(images, target, plan)
        probability_auc = torch.trapezoid(probability, plan.x, dim=1)
        accuracy_auc = torch.trapezoid(correct.double(), plan.x, dim=1)
        return PerturbationCurves(
            x=plan.x,
            probability=probability,
            correct=correct,
            probability_auc=probability_auc,
            accuracy_auc=accuracy_auc,
            auc=probability_auc if self._headline == "probability" else accuracy_auc,
        )

    @abc.abstractmethod
    def _schedule(self, images: torch.Tensor, maps: torch.Tensor) -> _Schedule:
        """The perturbation schedule for ``(B, C, H, W)`` images and ``(B, H, W)`` maps."""

    def _run(
        self, images: torch.Tensor, target: torch.Tensor, plan: _Schedule
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Target probability and top-1 correctness, each ``(B, S + 1)``, on the CPU."""
        batch, _, height, width = images.shape
        points = plan.counts.numel()
        total = batch * points
        probability = torch.empty(total, dtype=torch.float64)
        correct = torch.empty(total, dtype=torch.bool)
        counts = plan.counts.to(images.device)
        target = target.to(images.device)
        with torch.no_grad():
            # Pairs (sample, step) are enumerated sample-major and built one chunk at a time,
            # so memory holds batch_size perturbed images, not B * (S + 1).
            for start in range(0, total, self.batch_size):
                stop = min(start + self.batch_size, total)
                pair = torch.arange(start, stop, device=images.device)
                sample, step = pair // points, pair % points
                affected = plan.ranks[sample] < counts[step, None]
                replaced = ~affected if plan.reveal else affected
                replaced = replaced.view(-1, 1, height, width)
                perturbed = torch.where(replaced, plan.baselines[sample], images[sample])
                logits = _check_logits(self.forward_fn(perturbed), len(pair), target)
                chunk_target = target[sample, None]
                probs = logits.double().softmax(dim=1).gather(1, chunk_target)[:, 0]
                probability[start:stop] = probs.cpu()
                correct[start:stop] = (logits.argmax(dim=1) == target[sample]).cpu()
        return probability.view(batch, points), correct.view(batch, points)


class DeletionInsertion(FaithfulnessMetric):
    """RISE's deletion or insertion game over patches.

    Patches of ``patch_size`` are ordered by the map's mean per patch, most important first.
    *Deletion* starts from the image and sets patches to the baseline in that order;
    *insertion* starts from the baseline and reveals the image's patches in that order. After
    each step the target's softmax probability is recorded; the score is the area under that
    curve (trapezoid, ``x`` = fraction of patches in ``[0, 1]``). A faithful map makes the
    deletion curve fall fast (low AUC) and the insertion curve rise fast (high AUC).

    Source: Petsiuk, Das & Saenko 2018, "RISE: Randomized Input Sampling for Explanation of
    Black-box Models" (BMVC), Sec. 4.1; ``eclique/RISE`` ``evaluation.py`` (``CausalMetric``).
    RISE steps over pixels (224 per step) with a black deletion substrate and a blurred
    insertion substrate; here the unit is a ViT patch and the baseline is one choice for both.

    Signed maps: used as they are (only the order of patch means matters). Ties keep raster
    order, so a constant map deletes patches top-left first.

    Args:
        forward_fn: maps ``(B', C, H, W)`` images in ``[0, 1]`` to logits ``(B', classes)``.
        mode: ``"deletion"`` (lower is better) or ``"insertion"`` (higher is better).
        patch_size: side of the square units in pixels; partial patches at the right/bottom
            edges are units too.
        baseline: ``"black"`` (zeros) or ``"blur"`` (:func:`gaussian_blur` of the image,
            11×11 kernel, σ = 5 px, as RISE's ``gkern(11, 5)``).
        steps: number of steps ``S``; ``None`` moves one patch per step. With fewer steps,
            step ``s`` affects ``floor(s * patches / S)`` patches.
        batch_size: the most images per ``forward_fn`` call.

    Raises:
        TypeError: if an int argument is not an int or ``forward_fn`` is not callable.
        ValueError: on an unknown ``mode``/``baseline`` or a non-positive size; at call time,
            if ``steps`` exceeds the number of patches.

    Examples:
        >>> import torch
        >>> forward_fn = lambda x: torch.stack([x.mean((1, 2, 3)), 1 - x.mean((1, 2, 3))], 1)
        >>> metric = DeletionInsertion(forward_fn, mode="deletion", patch_size=4)
        >>> result = metric(torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8), torch.tensor([0, 0]))
        >>> result.probability.shape, result.auc.shape
        (torch.Size([2, 5]), torch.Size([2]))
    """

    _headline: ClassVar[Literal["probability", "accuracy"]] = "probability"

    def __init__(
        self,
        forward_fn: ForwardFn,
        *,
        mode: Literal["deletion", "insertion"] = "deletion",
        patch_size: int = 16,
        baseline: Literal["black", "blur"] = "black",
        steps: int | None = None,
        batch_size: int = 32,
    ) -> None:
        super().__init__(forward_fn, batch_size)
        _check_choice(mode, "mode", ("deletion", "insertion"))
        _check_choice(baseline, "baseline", ("black", "blur"))
        _check_positive_int(patch_size, "patch_size")
        if steps is not None:
            _check_positive_int(steps, "steps")
        self.mode = mode
        self.patch_size = patch_size
        self.baseline = baseline
        self.steps = steps
        self.name = mode
        self.higher_is_better = mode == "insertion"

    def _params(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "patch_size": self.patch_size,
            "baseline": self.baseline,
            "steps": self.steps,
            "batch_size": self.batch_size,
        }

    def _schedule(self, images: torch.Tensor, maps: torch.Tensor) -> _Schedule:
        ranks, patches = unit_ranks(maps, self.patch_size)
        steps = patches if self.steps is None else self.steps
        if steps > patches:
            raise ValueError(
                f"steps must be <= the number of patches ({patches} for images of "
                f"{tuple(images.shape[-2:])} and patch_size {self.patch_size}), got {steps}"
            )
        counts = torch.arange(steps + 1) * patches // steps
        baselines = gaussian_blur(images) if self.baseline == "blur" else torch.zeros_like(images)
        return _Schedule(
            ranks=ranks,
            counts=counts,
            x=counts.double() / patches,
            baselines=baselines,
            reveal=self.mode == "insertion",
        )


class PerturbationTest(FaithfulnessMetric):
    """Chefer et al.'s positive / negative perturbation test over pixels.

    For each fraction ``f``, the ``floor(f * H * W)`` pixels with the highest (``"positive"``)
    or lowest (``"negative"``) map values are set to 0 (black, before the model's
    normalisation); the target's probability and the top-1 correctness are recorded. The
    unperturbed image is the point ``f = 0``. The score is the area under the top-1 correctness
    curve over ``x = (0, *fractions)`` (trapezoid, not rescaled), whose dataset mean is the area
    under the accuracy curve the paper reports; the probability curve's area is in the result
    too. Removing the important pixels first should hurt quickly: positive is lower-is-better,
    negative higher-is-better.

    Source: Chefer, Gur & Wolf 2021, "Transformer Interpretability Beyond Attention
    Visualization" (CVPR), Sec. 4; ``hila-chefer/Transformer-Explainability``
    ``pertubation_eval_from_hdf5.py`` (``topk`` of the map, ``scatter_(..., 0)``).

    Signed maps: used as they are (negative mode removes the most negative pixels first). Ties
    keep raster order.

    Args:
        forward_fn: maps ``(B', C, H, W)`` images in ``[0, 1]`` to logits ``(B', classes)``.
        fractions: strictly increasing fractions of pixels to remove, each in ``(0, 1]``.
        mode: ``"positive"`` (remove the highest values first) or ``"negative"`` (lowest first).
        batch_size: the most images per ``forward_fn`` call.

    Raises:
        TypeError: if ``forward_fn`` is not callable or ``batch_size`` is not an int.
        ValueError: on an unknown ``mode``, empty or unsorted ``fractions`` or a fraction
            outside ``(0, 1]``.
    """

    _headline: ClassVar[Literal["probability", "accuracy"]] = "accuracy"

    def __init__(
        self,
        forward_fn: ForwardFn,
        *,
        fractions: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        mode: Literal["positive", "negative"] = "positive",
        batch_size: int = 32,
    ) -> None:
        super().__init__(forward_fn, batch_size)
        _check_choice(mode, "mode", ("positive", "negative"))
        fractions = tuple(float(f) for f in fractions)
        if not fractions:
            raise ValueError("fractions must hold at least one fraction, got an empty sequence")
        if not all(0.0 < f <= 1.0 for f in fractions):
            raise ValueError(f"fractions must each be in (0, 1], got {fractions}")
        if any(b <= a for a, b in itertools.pairwise(fractions)):
            raise ValueError(f"fractions must be strictly increasing, got {fractions}")
        self.fractions = fractions
        self.mode = mode
        self.name = f"perturbation_{mode}"
        self.higher_is_better = mode == "negative"

    def _params(self) -> dict[str, Any]:
        return {"fractions": self.fractions, "mode": self.mode, "batch_size": self.batch_size}

    def _schedule(self, images: torch.Tensor, maps: torch.Tensor) -> _Schedule:
        ranks, pixels = unit_ranks(maps, 1, descending=self.mode == "positive")
        # int() truncates as the reference code's int(base_size * step) does.
        counts = torch.tensor([0] + [int(pixels * f) for f in self.fractions])
        return _Schedule(
            ranks=ranks,
            counts=counts,
            x=torch.tensor((0.0, *self.fractions), dtype=torch.float64),
            baselines=torch.zeros_like(images),
            reveal=False,
        )


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_inputs(images: Any, attributions: Any, target: Any) -> None:
    """Validate ``(images, attributions, target)`` of a faithfulness call (see ``__call__``)."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(f"images must be a floating-point torch.Tensor, got {_describe(images)}")
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0); nothing to score")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError(
            f"images must be finite and in [0, 1], got values in "
            f"[{images.min().item():.4g}, {images.max().item():.4g}]; "
            "fold the model's normalisation into forward_fn"
        )
    check_maps(attributions, "attributions", single=True)
    batch, _, height, width = images.shape
    if attributions.shape[0] != batch or attributions.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"attributions shape mismatch: expected ({batch}, 1, {height}, {width}) to match "
            f"images, got {tuple(attributions.shape)}"
        )
    if not isinstance(target, torch.Tensor) or target.is_floating_point() or target.is_complex():
        raise TypeError(f"target must be an integer torch.Tensor, got {_describe(target)}")
    if tuple(target.shape) != (batch,):
        raise ValueError(f"target shape mismatch: expected ({batch},), got {tuple(target.shape)}")


def _check_logits(logits: Any, rows: int, target: torch.Tensor) -> torch.Tensor:
    """Validate one ``forward_fn`` output against the chunk it was given."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"forward_fn must return a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != rows:
        raise ValueError(
            f"forward_fn must return logits of shape ({rows}, classes) for {rows} images, "
            f"got {tuple(logits.shape)}"
        )
    classes = logits.shape[1]
    if target.min() < 0 or target.max() >= classes:
        raise ValueError(
            f"target must be in [0, {classes}) for {classes} logits, got values in "
            f"[{target.min().item()}, {target.max().item()}]"
        )
    return logits


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of dtype {value.dtype}"
    return type(value).__name__
