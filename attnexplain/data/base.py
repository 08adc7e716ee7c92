"""The one sample type every dataset in :mod:`attnexplain.data` yields.

Metrics and the benchmark only see :class:`SegmentationSample`, so a new dataset is one loader that
produces it, whatever its on-disk format.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class SegmentationSample(NamedTuple):
    """An image with the ground truth the localisation metrics score against.

    The first three fields unpack like the classic ``(image, label, mask)`` triple.

    Attributes:
        image: ``(3, H, W)`` float32 RGB in ``[0, 1]`` (no normalisation: models' preprocessing
            is applied by the caller).
        label: the image-level class used as the explanation target, in the dataset's own id
            space; ``-1`` when the dataset has none (the model's prediction is then used).
        mask: ``(H, W)`` bool, the pixels of every object of ``label`` (for single-object data the
            object itself).
        object_masks: ``(K, H, W)`` bool, one mask per annotated object, ``K >= 1``.
        object_labels: ``(K,)`` int64, the class of each object.
        ignore: ``(H, W)`` bool, pixels excluded from scoring (e.g. VOC's 255 borders).
        image_id: a stable identifier, used as the key of benchmark rows (resume).
    """

    image: torch.Tensor
    label: int
    mask: torch.Tensor
    object_masks: torch.Tensor
    object_labels: torch.Tensor
    ignore: torch.Tensor
    image_id: str
