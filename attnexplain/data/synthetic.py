"""Embedded synthetic dataset: one labelled shape on a cluttered photographic background.

Every image is a pure function of an integer seed, so the dataset needs no download and any sample
can be regenerated bit for bit. The label is the outline of one object (six classes, see
:data:`CLASS_NAMES`); its exact pixel mask is the ground truth for localisation metrics.

How an image is built, in order:

1. **Background**: a random crop (random scale, flips, quarter turns) of one of the photographs and
   textures bundled with scikit-image (no network), grey ones tinted with a random colour, with
   random brightness, reduced contrast, a smooth illumination gradient and a slight blur.
2. **Distractors**: 0-2 shapes of kinds that are *not* classes: elongated ellipses (aspect
   >= 2.5, so never a disc), straight thick bars and thick wavy lines, coloured and filled like
   objects.
3. **Object**: one shape of the label class with random colour and fill (solid, two-colour gradient,
   stripes or a tinted texture), position, scale and rotation. It is painted *after* the
   distractors, so it is never occluded and its mask is exactly the pixels it was painted on
   (a ring's hole shows the background and is not in the mask).
4. **Sensor noise**: additive Gaussian noise on 70 % of images, then quantisation to 8 bits like
   a photograph (so a uint8 cache of the images is lossless).

Difficulty knobs (chosen so a small ViT trained on CPU for 30 minutes reaches >= 95 % accuracy,
see ``attnexplain/zoo/MODEL_CARD.md``): the object's circumradius is 25-35 % of the image side and
its colour is at least :data:`MIN_CONTRAST` (RGB Euclidean distance) from the mean background
under it; the background's contrast is scaled by 0.4-0.9 and it is blurred (sigma 0.5-1.5 px), so
the clutter stays photographic but the object's outline is the strongest edge.

Splits draw from disjoint seed ranges: ``train`` uses seeds ``[0, 10**9)``, ``val``
``[10**9, 2 * 10**9)`` and ``test`` ``[2 * 10**9, 3 * 10**9)``; index ``i`` of a split uses its
range's start plus ``i``. The label is ``seed % 6``, so any run of consecutive indices is balanced.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from attnexplain.data._painting import (
    CLASS_NAMES,
    MIN_CONTRAST,
    RING_INNER_RATIO,
    background,
    fill,
    finish,
    object_colour,
    paint_distractors,
    shape_mask,
)
from attnexplain.data.base import SegmentationSample
from attnexplain.data.objects import AnnotatedObject, objects_of

__all__ = [
    "CLASS_NAMES",
    "MIN_CONTRAST",
    "SPLIT_SEED_OFFSETS",
    "SeededSplit",
    "SyntheticShapes",
    "generate_sample",
    "shape_mask",
]

SPLIT_SEED_OFFSETS: dict[str, int] = {"train": 0, "val": 10**9, "test": 2 * 10**9}
SPLIT_SEED_SPAN = 10**9
"""Number of seeds of each split, hence the largest split size."""

_RADIUS_RANGE = (0.25, 0.35)  # object circumradius, as a fraction of the image side


def generate_sample(seed: int, image_size: int = 96) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Generate one image, its class and the exact mask of the labelled object.

    Args:
        seed: any non-negative integer; the same seed always gives the bit-identical sample.
        image_size: side of the square image in pixels (at least 32).

    Returns:
        ``(image, label, mask)``: ``image`` is ``(3, H, W)`` float32 in ``[0, 1]`` (multiples of
        1/255), ``label`` is ``seed % 6``, an index into :data:`CLASS_NAMES`, and ``mask`` is
        ``(H, W)`` bool, the object's visible pixels (all of them: nothing is painted over it).

    Raises:
        ValueError: if ``seed`` is negative or ``image_size`` is below 32.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    rng = np.random.default_rng(seed)
    label = seed % len(CLASS_NAMES)
    image = background(rng, image_size)
    paint_distractors(rng, image)

    radius = rng.uniform(*_RADIUS_RANGE) * image_size
    # Keep the whole object inside the frame so its mask is the complete shape.
    row, col = rng.uniform(radius + 1, image_size - radius - 1, size=2)
    angle = rng.uniform(0.0, 2 * np.pi)
    inner_ratio = rng.uniform(*RING_INNER_RATIO)
    mask = shape_mask(CLASS_NAMES[label], (row, col), radius, angle, image_size, inner_ratio)
    colour = object_colour(rng, image[mask].mean(axis=0))
    paint = fill(rng, image_size, colour, rng.uniform(0.0, np.pi))
    image[mask] = paint[mask]
    return finish(rng, image), label, torch.from_numpy(mask)


class SeededSplit(Dataset):
    """Base of the synthetic datasets: a split whose sample ``i`` is generated from one seed.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``; sample ``i`` uses seed
            ``SPLIT_SEED_OFFSETS[split] + i``, so the splits never share a seed.
        size: number of samples, at most ``10**9``.
        image_size: side of the square images in pixels.

    Raises:
        ValueError: if ``split`` is unknown or ``size`` is out of range.
    """

    def __init__(
        self, split: Literal["train", "val", "test"], size: int, image_size: int = 96
    ) -> None:
        if split not in SPLIT_SEED_OFFSETS:
            raise ValueError(f"split must be one of {tuple(SPLIT_SEED_OFFSETS)}, got {split!r}")
        if not 0 <= size <= SPLIT_SEED_SPAN:
            raise ValueError(f"size must be in [0, {SPLIT_SEED_SPAN}], got {size}")
        self.split = split
        self.size = size
        self.image_size = image_size

    def __len__(self) -> int:
        return self.size

    def seed(self, index: int) -> int:
        """The generator seed of sample ``index`` of this split."""
        return SPLIT_SEED_OFFSETS[self.split] + index

    def class_name(self, label: int) -> str:
        """The name of class ``label``, an index into :data:`CLASS_NAMES`."""
        return CLASS_NAMES[label]

    def _checked_index(self, index: int) -> int:
        if not -self.size <= index < self.size:
            raise IndexError(f"index must be in [{-self.size}, {self.size}), got {index}")
        return index % self.size


class SyntheticShapes(SeededSplit):
    """A split of the synthetic dataset, generated on the fly from disjoint seed ranges.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``; see the module docstring for the seed ranges.
        size: number of samples, at most ``10**9``.
        image_size: side of the square images in pixels.

    Raises:
        ValueError: if ``split`` is unknown or ``size`` is out of range.

    Examples:
        >>> sample = SyntheticShapes("test", size=8)[3]
        >>> sample.image.shape, sample.image_id
        (torch.Size([3, 96, 96]), 'synthetic-test-000003')
    """

    def __getitem__(self, index: int) -> SegmentationSample:
        index = self._checked_index(index)
        image, label, mask = generate_sample(self.seed(index), self.image_size)
        return SegmentationSample(
            image=image,
            label=label,
            mask=mask,
            object_masks=mask[None],
            object_labels=torch.tensor([label], dtype=torch.int64),
            ignore=torch.zeros_like(mask),
            image_id=f"synthetic-{self.split}-{index:06d}",
        )

    def objects(self, index: int) -> list[AnnotatedObject]:
        """The one object of sample ``index`` (its colour is random, so unnamed)."""
        return objects_of(self[index], self.class_name)
