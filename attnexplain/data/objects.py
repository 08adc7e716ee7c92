"""Per-object annotations: one interface for every dataset with several objects per image.

Every loader yields :class:`~attnexplain.data.base.SegmentationSample`, whose ``object_masks``
``(K, H, W)`` and ``object_labels`` ``(K,)`` already hold one mask per annotated object. This
module adds what class-specific evaluation needs on top:

- :class:`AnnotatedObject`: one object as a ``(label, class_name, mask, colour_name)`` record.
  Multi-object loaders (:class:`~attnexplain.data.scenes.SyntheticScenes`,
  :class:`~attnexplain.data.synthetic.SyntheticShapes`,
  :class:`~attnexplain.data.coco.COCOInstances`) implement :class:`ObjectDataset`: besides
  ``len`` and ``[i]`` they have ``objects(i)`` (the per-object records of sample ``i``) and
  ``class_name(label)``.
- :func:`class_masks`: the objects grouped by class (the union of each class's objects), with
  objects that have no visible pixel left out and counted: the ground truth a map *for one class*
  is scored against.

Examples:
    >>> from attnexplain.data.scenes import SyntheticScenes
    >>> scenes = SyntheticScenes("test", size=4)
    >>> [obj.phrase for obj in scenes.objects(1)]
    ['pink triangle', 'red square', 'yellow cross']
    >>> grouped = class_masks(scenes[1].object_labels, scenes[1].object_masks)
    >>> grouped.labels.tolist(), tuple(grouped.masks.shape), grouped.empty
    ([1, 2, 4], (3, 96, 96), 0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch

from attnexplain.data.base import SegmentationSample


class AnnotatedObject(NamedTuple):
    """One annotated object of an image.

    Attributes:
        label: its class, in the dataset's own id space (an index into the synthetic data's
            ``CLASS_NAMES``, a COCO category id).
        class_name: the class's name, e.g. ``"star"`` or ``"person"``.
        mask: ``(H, W)`` bool, the object's visible pixels.
        colour_name: the name of its paint colour where the dataset knows it (the synthetic
            scenes: ``"red"``, ``"blue"``, ...), else ``None``.
    """

    label: int
    class_name: str
    mask: torch.Tensor
    colour_name: str | None = None

    @property
    def phrase(self) -> str:
        """``"red star"`` when the colour is known, else the class name alone."""
        return (
            self.class_name if self.colour_name is None else f"{self.colour_name} {self.class_name}"
        )


class ObjectDataset(Protocol):
    """What a dataset offers for per-object (class, mask) evaluation."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> SegmentationSample: ...

    def objects(self, index: int) -> list[AnnotatedObject]:
        """The annotated objects of sample ``index``, in ``object_masks`` order."""
        ...

    def class_name(self, label: int) -> str:
        """The name of class ``label``."""
        ...


def objects_of(
    sample: SegmentationSample,
    class_name: Callable[[int], str],
    colour_names: tuple[str | None, ...] | None = None,
) -> list[AnnotatedObject]:
    """The per-object records of a sample.

    Args:
        sample: any :class:`~attnexplain.data.base.SegmentationSample`.
        class_name: label -> name (a dataset's ``class_name``).
        colour_names: one colour name (or ``None``) per object, in ``object_masks`` order.

    Returns:
        One :class:`AnnotatedObject` per annotated object, in ``object_masks`` order.

    Raises:
        ValueError: if ``colour_names`` does not have one entry per object.
    """
    count = int(sample.object_labels.shape[0])
    colours = colour_names if colour_names is not None else (None,) * count
    if len(colours) != count:
        raise ValueError(f"colour_names has {len(colours)} entries for {count} objects")
    return [
        AnnotatedObject(int(label), class_name(int(label)), mask, colour)
        for label, mask, colour in zip(sample.object_labels, sample.object_masks, colours)
    ]


class ClassMasks(NamedTuple):
    """The objects of one image grouped by class.

    Attributes:
        labels: ``(C,)`` int64, the classes present, ascending.
        masks: ``(C, H, W)`` bool, the union of each class's visible objects.
        empty: how many annotated objects had no visible pixel (e.g. fully occluded) and were
            left out.
    """

    labels: torch.Tensor
    masks: torch.Tensor
    empty: int


def class_masks(object_labels: torch.Tensor, object_masks: torch.Tensor) -> ClassMasks:
    """Group per-object masks by class, skipping (and counting) objects with no visible pixel.

    Two objects of the same class (two persons in COCO) become one mask: a map for that class is
    not penalised for pointing at either. Masks of *different* classes may overlap (COCO
    instances do); they are returned as they are, and the class-specific metrics
    (:mod:`attnexplain.metrics.class_specific`) say how they treat the shared pixels.

    Args:
        object_labels: ``(K,)`` integer class of each object.
        object_masks: ``(K, H, W)`` bool mask of each object.

    Returns:
        The :class:`ClassMasks` (``C = 0`` when no object is visible).

    Raises:
        TypeError: if the masks are not bool or the labels not integers.
        ValueError: if the shapes are not ``(K,)`` and ``(K, H, W)`` with the same ``K``.
    """
    if object_masks.dtype != torch.bool:
        raise TypeError(f"object_masks must be a bool tensor, got dtype {object_masks.dtype}")
    if object_labels.is_floating_point() or object_labels.dtype == torch.bool:
        raise TypeError(f"object_labels must be integers, got dtype {object_labels.dtype}")
    if object_masks.dim() != 3 or object_labels.dim() != 1:
        raise ValueError(
            "object_masks must be (K, H, W) and object_labels (K,), got shapes "
            f"{tuple(object_masks.shape)} and {tuple(object_labels.shape)}"
        )
    if object_masks.shape[0] != object_labels.shape[0]:
        raise ValueError(
            f"{object_masks.shape[0]} object masks but {object_labels.shape[0]} labels; "
            "give one label per mask"
        )
    visible = object_masks.flatten(1).any(dim=1)
    kept_labels = object_labels[visible].to(torch.int64)
    kept_masks = object_masks[visible]
    present = torch.unique(kept_labels)  # sorted
    masks = object_masks.new_zeros((len(present), *object_masks.shape[1:]))
    for row, label in enumerate(present):
        masks[row] = kept_masks[kept_labels == label].any(dim=0)
    return ClassMasks(present, masks, int((~visible).sum()))
