"""PASCAL VOC 2012 segmentation, read from its standard on-disk layout.

Expected layout (what the official tarball unpacks to)::

    VOCdevkit/VOC2012/
        JPEGImages/<id>.jpg
        SegmentationObject/<id>.png      palette PNG: 0 background, 1..K instances, 255 void
        SegmentationClass/<id>.png       palette PNG: 0 background, 1..20 classes, 255 void
        ImageSets/Segmentation/{train,val,trainval}.txt
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from attnexplain.data.base import SegmentationSample
from attnexplain.data.io import (
    check_index,
    check_same_size,
    load_index_png,
    load_rgb,
    require_path,
    sample_from_objects,
)

VOCSplit = Literal["train", "val", "trainval"]

CLASS_NAMES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""VOC class names indexed by class id: ``CLASS_NAMES[15] == "person"``; 0 is background."""

VOID = 255
"""Index of VOC's "void" pixels: object borders and ambiguous regions, excluded from scoring."""

_SUBFOLDERS = ("JPEGImages", "SegmentationObject", "SegmentationClass")


def _find_voc_root(root: Path) -> Path:
    """Return the folder that holds ``JPEGImages``: ``root`` itself, ``root/VOC2012`` or
    ``root/VOCdevkit/VOC2012`` (torchvision's convention), so any of the three can be passed."""
    if not root.is_dir():
        raise FileNotFoundError(f"VOC root folder not found: {root}")
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no JPEGImages/ folder in {root}, {root / 'VOC2012'} or "
        f"{root / 'VOCdevkit' / 'VOC2012'}; pass the VOC2012 folder of the unpacked "
        "VOCtrainval tarball (or a parent of it)"
    )


class VOCSegmentation:
    """PASCAL VOC 2012 segmentation: one sample per image, one mask per object instance.

    Each sample's objects come from ``SegmentationObject`` (one mask per instance id) and their
    classes from ``SegmentationClass`` (the majority class under each instance; VOC draws both
    from the same polygons, so the majority is the only class except at rare rasterisation
    seams). ``label`` is the class of the largest instance and ``mask`` the union of all instances
    of that class; void (255) pixels go to ``ignore``.

    Args:
        root: the ``VOC2012`` folder, or a parent of it (``VOCdevkit`` or the folder holding
            ``VOCdevkit``).
        split: which ``ImageSets/Segmentation/<split>.txt`` lists the images.
        image_set_file: a text file of image ids (one per line) to use instead of ``split``'s.

    Raises:
        FileNotFoundError: if the root, one of its subfolders, the image set file, or a listed
            image's JPEG/PNGs is missing; the message names the expected path.
        ValueError: if ``split`` is unknown or the image set lists no ids.

    Examples:
        >>> voc = VOCSegmentation("data/VOCdevkit/VOC2012", split="val")  # doctest: +SKIP
        >>> sample = voc[0]  # doctest: +SKIP
        >>> CLASS_NAMES[sample.label], sample.image.shape  # doctest: +SKIP
        ('aeroplane', torch.Size([3, 366, 500]))
    """

    def __init__(
        self,
        root: str | Path,
        split: VOCSplit = "val",
        *,
        image_set_file: str | Path | None = None,
    ) -> None:
        self.root = _find_voc_root(Path(root))
        for name in _SUBFOLDERS:
            require_path(self.root / name, f"VOC {name} folder")
        if image_set_file is None:
            if split not in get_args(VOCSplit):
                raise ValueError(
                    f"unknown VOC split {split!r}; expected one of {get_args(VOCSplit)} "
                    "or pass image_set_file="
                )
            image_set_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        image_set = require_path(Path(image_set_file), "VOC image set file")
        self.image_ids: list[str] = image_set.read_text().split()
        if not self.image_ids:
            raise ValueError(f"image set file {image_set} lists no image ids")
        self._check_files_exist()

    def _check_files_exist(self) -> None:
        # Fail at construction, not hours into a benchmark, when the tarball is half unpacked.
        for image_id in self.image_ids:
            for path in self._paths(image_id):
                require_path(path, f"file for VOC image {image_id!r}")

    def _paths(self, image_id: str) -> tuple[Path, Path, Path]:
        return (
            self.root / "JPEGImages" / f"{image_id}.jpg",
            self.root / "SegmentationObject" / f"{image_id}.png",
            self.root / "SegmentationClass" / f"{image_id}.png",
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> SegmentationSample:
        """Load one image and its instances.

        Returns:
            A :class:`SegmentationSample` with ``image`` ``(3, H, W)``, ``object_masks``
            ``(K, H, W)`` (instances in id order), ``object_labels`` ``(K,)`` VOC class ids
            1..20, ``ignore`` ``(H, W)`` the void pixels and ``image_id`` the VOC id
            (e.g. ``"2007_000033"``).

        Raises:
            IndexError: if ``index`` is out of range.
            ValueError: if the PNGs and the JPEG differ in size, or the image has no instance.
        """
        image_id = self.image_ids[check_index(index, len(self))]
        image_path, object_path, class_path = self._paths(image_id)
        image = load_rgb(image_path)
        objects = load_index_png(object_path)
        classes = load_index_png(class_path)
        check_same_size(image, objects.shape, object_path)
        check_same_size(image, classes.shape, class_path)

        instance_ids = [i for i in np.unique(objects).tolist() if i not in (0, VOID)]
        if not instance_ids:
            raise ValueError(f"{object_path} has no object instance (only background and void)")
        masks = np.stack([objects == i for i in instance_ids])
        labels = [_majority_class(classes[m], object_path, i) for m, i in zip(masks, instance_ids)]
        return sample_from_objects(
            image=image,
            object_masks=torch.from_numpy(masks),
            object_labels=torch.tensor(labels, dtype=torch.int64),
            ignore=torch.from_numpy((objects == VOID) | (classes == VOID)),
            image_id=image_id,
        )


def _majority_class(class_values: np.ndarray, source: Path, instance_id: int) -> int:
    """The most frequent real class (1..20) under one instance's pixels."""
    counts = np.bincount(class_values, minlength=VOID + 1)[1 : len(CLASS_NAMES)]
    if counts.sum() == 0:
        raise ValueError(
            f"instance {instance_id} of {source} covers no class pixel (1..20) in "
            "SegmentationClass; the two PNGs do not describe the same image"
        )
    return int(np.argmax(counts)) + 1
