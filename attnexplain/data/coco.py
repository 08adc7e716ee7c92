"""COCO instance segmentation, read with pycocotools from COCO's own layout.

Expected layout (what the official zips unpack to)::

    coco/
        val2017/<12-digit id>.jpg                  the ``root`` argument
        annotations/instances_val2017.json         the ``ann_file`` argument

Polygon, RLE and uncompressed-RLE (crowd) segmentations are all decoded by pycocotools'
``annToMask``. Reading needs ``pycocotools`` (extra ``coco``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnexplain.data.base import SegmentationSample
from attnexplain.data.io import (
    check_index,
    check_same_size,
    import_optional,
    load_rgb,
    require_path,
    sample_from_objects,
)
from attnexplain.data.objects import AnnotatedObject, objects_of


class COCOInstances:
    """COCO instances: one sample per image with at least one scored object.

    An annotation of a selected category is an *object* (one mask in ``object_masks``, its
    category id in ``object_labels``) unless it is a crowd region (``iscrowd = 1``) or smaller than
    ``min_area``: those pixels go to ``ignore``, because they do show the class and a map pointing
    at them should be neither rewarded as an object nor penalised as background. Annotations of
    other categories are background. ``label`` is the category of the largest object and
    ``mask`` the union of that category's objects. Images left with no object are skipped.

    Args:
        root: the image folder, e.g. ``coco/val2017``.
        ann_file: the instances JSON, e.g. ``coco/annotations/instances_val2017.json``.
        category_ids: COCO category ids to keep (COCO's own ids, 1..90); all by default.
        min_area: smallest object area in pixels (COCO's ``area`` field) scored as an object.

    Attributes:
        category_names: ``{category id: name}`` for every category in the file.
        coco_image_ids: the COCO image id of each sample, in sample order.

    Raises:
        ImportError: if pycocotools is missing (install the ``coco`` extra).
        FileNotFoundError: if ``root``, ``ann_file`` or a listed image file is missing.
        ValueError: if ``category_ids`` names a category the file does not have, or
            ``min_area`` is negative.

    Examples:
        >>> coco = COCOInstances(  # doctest: +SKIP
        ...     "coco/val2017", "coco/annotations/instances_val2017.json", category_ids=[1]
        ... )
        >>> coco.category_names[coco[0].label]  # doctest: +SKIP
        'person'
    """

    def __init__(
        self,
        root: str | Path,
        ann_file: str | Path,
        *,
        category_ids: Iterable[int] | None = None,
        min_area: float = 0,
    ) -> None:
        pycocotools_coco = import_optional("pycocotools.coco", "coco")
        self.root = require_path(Path(root), "COCO image folder")
        if not self.root.is_dir():
            raise FileNotFoundError(f"COCO image folder must be a folder, got file {self.root}")
        ann_file = require_path(Path(ann_file), "COCO annotation file")
        if min_area < 0:
            raise ValueError(f"min_area must be >= 0 pixels, got {min_area}")
        self.min_area = min_area
        # pycocotools prints progress to stdout on load; keep library output quiet.
        with contextlib.redirect_stdout(StringIO()):
            self._coco = pycocotools_coco.COCO(str(ann_file))

        self.category_names: dict[int, str] = {
            cat["id"]: cat["name"] for cat in self._coco.loadCats(self._coco.getCatIds())
        }
        if category_ids is None:
            self.category_ids = tuple(sorted(self.category_names))
        else:
            self.category_ids = tuple(sorted(set(category_ids)))
            unknown = sorted(set(self.category_ids) - set(self.category_names))
            if unknown:
                raise ValueError(
                    f"category_ids {unknown} are not in {ann_file}; "
                    f"its categories are {sorted(self.category_names)}"
                )
        self.coco_image_ids: list[int] = [
            image_id
            for image_id in sorted(self._coco.getImgIds())
            if any(self._is_object(ann) for ann in self._annotations(image_id))
        ]
        self._check_files_exist()

    def _annotations(self, coco_image_id: int) -> list[dict[str, Any]]:
        ann_ids = self._coco.getAnnIds(imgIds=[coco_image_id], catIds=list(self.category_ids))
        return self._coco.loadAnns(ann_ids)

    def _is_object(self, ann: dict[str, Any]) -> bool:
        return not ann.get("iscrowd", 0) and ann["area"] >= self.min_area

    def _image_path(self, coco_image_id: int) -> Path:
        return self.root / self._coco.imgs[coco_image_id]["file_name"]

    def _check_files_exist(self) -> None:
        # Fail at construction, not mid-benchmark, when root points at the wrong split's folder.
        for coco_image_id in self.coco_image_ids:
            path = self._image_path(coco_image_id)
            if not path.is_file():
                raise FileNotFoundError(
                    f"COCO image {coco_image_id} not found: expected {path}; root must be the "
                    "image folder that matches ann_file (e.g. val2017/ for instances_val2017.json)"
                )

    def __len__(self) -> int:
        return len(self.coco_image_ids)

    def class_name(self, label: int) -> str:
        """The name of COCO category ``label`` (e.g. 1 -> ``"person"``).

        Raises:
            KeyError: if the annotation file has no such category.
        """
        return self.category_names[label]

    def objects(self, index: int) -> list[AnnotatedObject]:
        """The scored objects of sample ``index``, one per instance, in ``object_masks`` order.

        Instances of one category stay separate records here; group them by class with
        :func:`~attnexplain.data.objects.class_masks`.
        """
        return objects_of(self[index], self.class_name)

    def __getitem__(self, index: int) -> SegmentationSample:
        """Load one image and decode its annotations.

        Returns:
            A :class:`SegmentationSample` with ``image`` ``(3, H, W)``, ``object_masks``
            ``(K, H, W)`` in annotation order, ``object_labels`` ``(K,)`` COCO category ids,
            ``ignore`` ``(H, W)`` (crowd and too-small objects) and ``image_id`` the file name's
            stem (e.g. ``"000000397133"``).

        Raises:
            IndexError: if ``index`` is out of range.
            ValueError: if the image file's size differs from the size the annotations give.
        """
        coco_image_id = self.coco_image_ids[check_index(index, len(self))]
        info = self._coco.imgs[coco_image_id]
        path = self._image_path(coco_image_id)
        image = load_rgb(path)
        check_same_size(image, (info["height"], info["width"]), f"of {path.name} in the JSON")

        masks, labels = [], []
        ignore = np.zeros((info["height"], info["width"]), dtype=bool)
        for ann in self._annotations(coco_image_id):
            pixels = self._coco.annToMask(ann).astype(bool)
            if self._is_object(ann):
                masks.append(pixels)
                labels.append(ann["category_id"])
            else:
                ignore |= pixels
        return sample_from_objects(
            image=image,
            object_masks=torch.from_numpy(np.stack(masks)),
            object_labels=torch.tensor(labels, dtype=torch.int64),
            ignore=torch.from_numpy(ignore),
            image_id=Path(info["file_name"]).stem,
        )
