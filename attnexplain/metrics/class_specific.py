"""Class-specific metrics: is the map *for* class c on the object of class c, and not on the others?

On an image with several labelled objects a method is asked one question per present class.
These metrics score the answers together, so a method that gives every class the same map (raw
CLS attention, rollout) is told apart from one whose map follows the class (Grad-CAM, the
relevance methods). Every metric is an object with one calling convention::

    scores = metric(maps, masks, ignore=None)   # -> (C,) float64, on the CPU

with ``maps`` ``(C, H, W)`` (``maps[i]`` is the map explaining class ``i``), ``masks``
``(C, H, W)`` bool (the visible pixels of class ``i``: the union of its objects, as
:func:`attnexplain.data.objects.class_masks` builds them) and ``ignore`` ``(H, W)`` bool. One
score per present class comes back; a benchmark averages them per image. The metrics are pure
functions of maps and masks: they do not know where the maps come from.

Masses are of the map's positive part, ``map⁺ = max(map, 0)``, as in the energy pointing game:
``share(map, region) = sum(map⁺ · region) / sum(map⁺)`` (0 for a map with no positive value).

**Overlapping masks** (COCO instances of two classes may share pixels): a shared pixel belongs
to *both* classes. It counts as the target's own pixel for localisation and pointing, never as
leakage onto another object; :class:`ClassSensitivity` compares maps on each class's *exclusive*
pixels (its mask minus every other class's), since a shared pixel cannot tell two maps apart.

**Empty masks** are refused with a clear error: an object with no visible pixel (e.g. fully
occluded) has nothing to be scored against; :func:`~attnexplain.data.objects.class_masks` skips
and counts such objects before scoring.

**Negative queries** (a class that is not in the image) have no mask; :class:`NegativeQueryMass`
scores their maps by the mass they put on the objects that *are* present.

Examples:
    >>> import torch
    >>> masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    >>> masks[0, :, :2] = True  # class 0 on the left, class 1 on the right
    >>> masks[1, :, 2:] = True
    >>> ClassSensitivity()(masks.float(), masks)  # each map on its own object
    tensor([1., 1.], dtype=torch.float64)
    >>> ClassSensitivity()(torch.ones(2, 4, 4), masks)  # one map for every class
    tensor([0., 0.], dtype=torch.float64)
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch

from attnexplain.metrics.base import Category, Metric
from attnexplain.metrics.localisation import (
    EnergyPointingGame,
    LocalisationMetric,
    PointingGame,
    dilate,
)

__all__ = [
    "ClassSensitivity",
    "ClassSpecificMetric",
    "Leakage",
    "NegativeQueryMass",
    "ObjectLocalisation",
    "TargetPointingGame",
    "exclusive_masks",
    "other_object_masks",
    "positive_shares",
]


def positive_shares(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """The share of each map's positive mass in each region.

    Args:
        maps: ``(Q, N)`` float values of the scored pixels.
        regions: ``(R, N)`` bool regions over the same pixels.

    Returns:
        ``(Q, R)`` float64: ``sum(map⁺ · region) / sum(map⁺)``, 0 for a map without positive
        values.
    """
    energy = maps.double().clamp(min=0)
    total = energy.sum(dim=1, keepdim=True)
    inside = energy @ regions.double().T
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


def other_object_masks(masks: torch.Tensor) -> torch.Tensor:
    """For each class, the pixels of the *other* classes' objects that are not its own.

    Args:
        masks: ``(C, ...)`` bool class masks.

    Returns:
        ``(C, ...)`` bool: ``union_{j != i} masks[j]`` minus ``masks[i]``.
    """
    counts = masks.sum(dim=0, dtype=torch.int64)
    others = (counts - masks.long()) > 0
    return others & ~masks


def exclusive_masks(masks: torch.Tensor) -> torch.Tensor:
    """For each class, its pixels that no other class's mask covers.

    Args:
        masks: ``(C, ...)`` bool class masks.

    Returns:
        ``(C, ...)`` bool: ``masks[i]`` minus ``union_{j != i} masks[j]``.
    """
    return masks & (masks.sum(dim=0, dtype=torch.int64) == 1)


class ClassSpecificMetric(Metric):
    """Template for ``metric(maps, masks, ignore=None) -> (Q,)``.

    The base validates the inputs, drops ignored pixels and calls :meth:`_score` once with every
    map and mask of the image flattened to the remaining pixels.

    Attributes:
        paired: ``True`` when ``maps[i]`` explains the class of ``masks[i]`` (so ``Q = C``);
            ``False`` for maps of classes that are not present (:class:`NegativeQueryMass`).
        min_classes: the fewest present classes the metric is defined for.
    """

    category: ClassVar[Category] = "class_specific"
    higher_is_better = True
    paired: ClassVar[bool] = True
    min_classes: ClassVar[int] = 1

    def __call__(
        self,
        maps: torch.Tensor,
        masks: torch.Tensor,
        ignore: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Score the maps of one image against its class masks.

        Args:
            maps: ``(Q, H, W)`` float maps; for a paired metric ``Q = C`` and ``maps[i]``
                explains the class of ``masks[i]``.
            masks: ``(C, H, W)`` bool, the visible pixels of each present class.
            ignore: ``(H, W)`` bool pixels excluded from scoring, or ``None``.

        Returns:
            ``(Q,)`` float64 scores on the CPU, one per map.

        Raises:
            TypeError: if an argument is not a tensor of the expected dtype.
            ValueError: on a shape mismatch, fewer than :attr:`min_classes` classes, NaN or
                infinite values in ``maps``, an empty class mask, or an ``ignore`` that covers
                every pixel.
        """
        size = _check_inputs(maps, masks, self.paired, self.min_classes, type(self).__name__)
        valid = torch.ones(size, dtype=torch.bool)
        if ignore is not None:
            if not isinstance(ignore, torch.Tensor) or ignore.dtype != torch.bool:
                raise TypeError(f"ignore must be a bool tensor, got {_describe(ignore)}")
            if tuple(ignore.shape) != size:
                raise ValueError(
                    f"ignore shape mismatch: expected {size} (the maps' H, W), "
                    f"got {tuple(ignore.shape)}"
                )
            valid = ~ignore.cpu()
        if not valid.any():
            raise ValueError("ignore covers every pixel; nothing left to score")
        flat_maps = maps.detach().to("cpu", torch.float64)[:, valid]
        flat_masks = masks.cpu()[:, valid]
        empty = (~flat_masks.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"class mask(s) {empty} have no (non-ignored) pixel; drop objects with empty "
                "masks before scoring (attnexplain.data.objects.class_masks skips and counts them)"
            )
        return self._score(flat_maps, flat_masks, valid).to(torch.float64)

    @abc.abstractmethod
    def _score(self, maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Scores ``(Q,)`` from ``maps`` ``(Q, N)`` and ``masks`` ``(C, N)`` of the ``N`` scored
        pixels; ``valid`` ``(H, W)`` says which pixels those are (for geometric rules)."""


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of dtype {value.dtype}"
    return type(value).__name__


def _check_inputs(
    maps: Any, masks: Any, paired: bool, min_classes: int, metric: str
) -> tuple[int, int]:
    """Validate ``(Q, H, W)`` maps against ``(C, H, W)`` masks; returns ``(H, W)``."""
    if not isinstance(maps, torch.Tensor) or not maps.is_floating_point():
        raise TypeError(f"maps must be a floating-point tensor, got {_describe(maps)}")
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool:
        raise TypeError(f"masks must be a bool tensor, got {_describe(masks)}")
    if maps.dim() != 3 or masks.dim() != 3:
        raise ValueError(
            "maps must be (Q, H, W) and masks (C, H, W), one per class; got shapes "
            f"{tuple(maps.shape)} and {tuple(masks.shape)}"
        )
    if maps.shape[-2:] != masks.shape[-2:]:
        raise ValueError(
            f"maps are {tuple(maps.shape[-2:])} (H, W) but masks are {tuple(masks.shape[-2:])}; "
            "resize the maps to the masks' resolution first"
        )
    if paired and maps.shape[0] != masks.shape[0]:
        raise ValueError(
            f"{maps.shape[0]} maps for {masks.shape[0]} class masks; give one map per present "
            "class, in the order of the masks"
        )
    if masks.shape[0] < min_classes:
        raise ValueError(
            f"{metric} needs at least {min_classes} present class(es), got {masks.shape[0]}"
        )
    if maps.shape[0] == 0 or maps.shape[1] == 0 or maps.shape[2] == 0:
        raise ValueError(f"maps has an empty dimension: shape {tuple(maps.shape)}")
    if not torch.isfinite(maps).all():
        raise ValueError("maps contain NaN or infinite values; check the method that made them")
    return int(maps.shape[1]), int(maps.shape[2])


class ObjectLocalisation(ClassSpecificMetric):
    """Any localisation metric, applied to each class's map against that class's own mask.

    The other objects are background here: a map for "dog" that also covers the cat scores as a
    map with false positives. With the default :class:`~attnexplain.metrics.EnergyPointingGame`
    the score is ``share(map_i, mask_i)``.

    Args:
        metric: a single-map :class:`~attnexplain.metrics.localisation.LocalisationMetric`
            (energy pointing game by default; e.g. ``AUROC()``, ``MassJaccard()``).

    Raises:
        TypeError: if ``metric`` is not a single-map localisation metric.
    """

    def __init__(self, metric: LocalisationMetric | None = None) -> None:
        metric = EnergyPointingGame() if metric is None else metric
        if not isinstance(metric, LocalisationMetric) or metric.per_head:
            raise TypeError(
                f"metric must be a single-map LocalisationMetric, got {type(metric).__name__}"
            )
        self.metric = metric
        self.name = f"object_{metric.name}"
        self.higher_is_better = metric.higher_is_better

    def _params(self) -> dict[str, Any]:
        return {"metric": self.metric}

    def _score(self, maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        # Scatter back to the image so geometric metrics (dilation) see the true layout.
        height, width = valid.shape
        images = torch.zeros(len(maps), 1, height, width, dtype=torch.float64)
        targets = torch.zeros(len(maps), height, width, dtype=torch.bool)
        images[:, 0, valid], targets[:, valid] = maps, masks
        ignored = (~valid).expand(len(maps), height, width)
        return self.metric(images, targets, ignored)


class Leakage(ClassSpecificMetric):
    """The share of each class's map that falls on the *other* classes' objects.

    ``share(map_i, others_i)`` with ``others_i = union_{j != i} mask_j \\ mask_i``
    (:func:`other_object_masks`): 0 when the map for a class avoids every other object, the
    other objects' share of the map otherwise. A class-agnostic map leaks whatever it puts on the
    objects it is not asked about. On an image with one class it is 0 by definition.

    Lower is better. Degenerate case: a map with no positive value scores 0.
    """

    name = "leakage"
    higher_is_better = False

    def _score(self, maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        shares = positive_shares(maps, other_object_masks(masks))
        return torch.diagonal(shares)


class ClassSensitivity(ClassSpecificMetric):
    """How differently a method answers two present classes, measured on their objects.

    For two present classes ``a`` and ``b`` with exclusive masks ``A`` and ``B``
    (:func:`exclusive_masks`), each map's *target minus other* mass is
    ``d_a = share(map_a, A) - share(map_a, B)`` and ``d_b = share(map_b, B) - share(map_b, A)``;
    the pair's sensitivity is their mean ``(d_a + d_b) / 2``, which equals
    ``[(share(map_a, A) - share(map_b, A)) + (share(map_b, B) - share(map_a, B))] / 2``: how much
    more of each object the map asked about it covers than the map asked about the other one.

    - It is exactly 0 when both classes get the same map, wherever that map points (the cost of
      answering every class with one attention map); 1 when each map lies entirely on its own
      object; negative when the maps are swapped.
    - The score of class ``a`` is the mean over the other present classes ``b``.

    Needs at least two present classes. Degenerate case: a map with no positive value has zero
    shares.
    """

    name = "class_sensitivity"
    min_classes: ClassVar[int] = 2

    def _score(self, maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        exclusive = exclusive_masks(masks)
        shares = positive_shares(maps, exclusive)  # shares[i, j] = share(map_i, exclusive_j)
        own = torch.diagonal(shares)
        # pair[a, b] = (d_a + d_b) / 2 with d_a = own[a] - shares[a, b].
        target_minus_other = own[:, None] - shares
        pair = (target_minus_other + target_minus_other.T) / 2
        count = len(own)
        return (pair.sum(dim=1) - torch.diagonal(pair)) / (count - 1)


class TargetPointingGame(ClassSpecificMetric):
    """Whether the maximum of each class's map falls on *that* class's object.

    A hit when the argmax lies in the class mask dilated by ``tolerance`` pixels, **minus the
    other classes' objects**: the tolerance never turns a maximum on the neighbouring object into
    a hit. Tied maxima are all candidates and the score is the fraction that hit (the expected
    hit of a random tie-break), as in :class:`~attnexplain.metrics.PointingGame`; ignored pixels
    cannot be the maximum.

    Source: the pointing game of Zhang et al. 2016 (ECCV), restricted to the target object.

    Args:
        tolerance: radius in pixels of the dilation, ``>= 0``.

    Raises:
        TypeError: if ``tolerance`` is not an int.
        ValueError: if ``tolerance`` is negative.
    """

    name = "object_pointing_game"

    def __init__(self, tolerance: int = 0) -> None:
        self.tolerance = PointingGame(tolerance).tolerance  # the same checks and messages

    def _params(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance}

    def _score(self, maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        height, width = valid.shape
        full = torch.zeros(len(masks), height, width, dtype=torch.bool)
        full[:, valid] = masks
        hit_region = (dilate(full, self.tolerance) & ~other_object_masks(full))[:, valid]
        top = maps == maps.max(dim=1, keepdim=True).values
        return (top & hit_region).sum(dim=1).double() / top.sum(dim=1)


class NegativeQueryMass(ClassSpecificMetric):
    """For the map of a class that is *not* in the image: its share on the objects that are.

    ``share(map_q, union_j mask_j)``. Asked about an absent class, a class-specific method has no
    object to point at; a class-agnostic one returns its usual map and puts its usual share on
    the present objects. Compare with the same method's :class:`ObjectLocalisation` on the
    present classes: a method whose negative-query mass equals its positive one ignores the
    question.

    ``maps`` are ``(Q, H, W)`` maps of ``Q`` absent classes; ``masks`` the present classes'.
    Lower is better. Degenerate case: a map with no positive value scores 0.
    """

    name = "negative_object_mass"
    higher_is_better = False
    paired: ClassVar[bool] = False

    def _score(self, maps: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return positive_shares(maps, masks.any(dim=0, keepdim=True))[:, 0]
