"""Multi-object synthetic scenes: 1-3 shapes of distinct classes, each with its exact visible mask.

The multi-object sibling of :mod:`attnexplain.data.synthetic`, built from the same pieces (the
six class outlines, photographic backgrounds, distractors, fills and sensor noise of
:mod:`attnexplain.data._painting`) and with the same seeding: sample ``i`` of a split is a pure
function of the seed ``SPLIT_SEED_OFFSETS[split] + i``, and the splits' seed ranges are disjoint.
The scenes draw from a random stream of their own (``numpy.random.default_rng((seed, 1))``), so a
scene and the single-object image with the same seed share nothing.

How a scene is built, in order:

1. **Background and distractors**: exactly as in :mod:`attnexplain.data.synthetic`.
2. **Objects**: 1, 2 or 3 objects (probabilities :data:`OBJECT_COUNT_PROBABILITIES`) of
   distinct classes, drawn without replacement from :data:`CLASS_NAMES`. Their circumradius shrinks
   with their number (:data:`RADIUS_RANGES`, fractions of the side), so three still fit; each lies
   wholly inside the frame. Centres are drawn at random until every pair of objects is at least
   :data:`SEPARATION` times the sum of their radii apart and every object keeps at least
   :data:`MIN_VISIBLE` of its pixels visible once the later objects are painted over it.
3. **Paint**: objects are painted in the order drawn (later ones occlude earlier ones). Each takes a
   *named* colour of :data:`PALETTE` (so captions such as "the red star" are true), one no other
   object of the scene has, at least :data:`~attnexplain.data.synthetic.MIN_CONTRAST` from the
   mean of what lies under it, jittered by at most 0.04 per channel; fills are those of the
   single-object data, with gradients shifted by at most 0.12 per channel so the colour keeps its
   name.
4. **Sensor noise and 8-bit quantisation**, as in :mod:`attnexplain.data.synthetic`.

Each object's mask is the pixels where *it* was painted and no later object was: the masks of a
scene are disjoint and exact (a ring's hole shows what lies behind it and is not in its mask).

The :class:`~attnexplain.data.base.SegmentationSample` of a scene has one mask per object in
``object_masks`` (painting order) and its class in ``object_labels``; ``label`` is the class of the
largest visible object and ``mask`` its mask. Colour names come with :meth:`SyntheticScenes.objects`
(or :func:`generate_scene`), which return :class:`~attnexplain.data.objects.AnnotatedObject`
records: ``(label, class_name, mask, colour_name)``.

Examples:
    >>> scenes = SyntheticScenes("test", size=100)
    >>> sample = scenes[1]
    >>> sample.object_labels.tolist(), tuple(sample.object_masks.shape)
    ([2, 1, 4], (3, 96, 96))
    >>> [obj.phrase for obj in scenes.objects(1)]
    ['pink triangle', 'red square', 'yellow cross']
    >>> generate_scene(scenes.seed(1)).caption
    'a pink triangle, a red square and a yellow cross'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attnexplain.data._painting import (
    CLASS_NAMES,
    MIN_CONTRAST,
    RING_INNER_RATIO,
    background,
    fill,
    finish,
    paint_distractors,
    shape_mask,
)
from attnexplain.data.base import SegmentationSample
from attnexplain.data.io import sample_from_objects
from attnexplain.data.objects import AnnotatedObject
from attnexplain.data.synthetic import SeededSplit

__all__ = [
    "CLASS_NAMES",
    "MIN_VISIBLE",
    "OBJECT_COUNT_PROBABILITIES",
    "PALETTE",
    "RADIUS_RANGES",
    "SEPARATION",
    "Scene",
    "SyntheticScenes",
    "generate_scene",
]

OBJECT_COUNT_PROBABILITIES: dict[int, float] = {1: 0.25, 2: 0.4, 3: 0.35}
"""How often a scene holds 1, 2 or 3 objects."""

RADIUS_RANGES: dict[int, tuple[float, float]] = {1: (0.25, 0.35), 2: (0.2, 0.3), 3: (0.17, 0.25)}
"""Circumradius range, as a fraction of the image side, by number of objects in the scene."""

SEPARATION = 0.75
"""Least distance between two objects' centres, as a fraction of the sum of their radii."""

MIN_VISIBLE = 0.55
"""Least fraction of an object's own pixels that stays visible after occlusion."""

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "orange": (0.98, 0.55, 0.08),
    "yellow": (0.96, 0.88, 0.12),
    "green": (0.15, 0.68, 0.2),
    "cyan": (0.15, 0.82, 0.88),
    "blue": (0.12, 0.25, 0.88),
    "purple": (0.56, 0.18, 0.76),
    "pink": (0.98, 0.52, 0.76),
    "white": (0.95, 0.95, 0.95),
    "black": (0.07, 0.07, 0.07),
}
"""The named object colours (RGB in ``[0, 1]``), before a jitter of at most 0.04 per channel."""

_STREAM = 1  # the scenes' random stream, independent of the single-object images' stream
_COLOUR_JITTER = 0.04
_GRADIENT_SHIFT = 0.12
_PLACEMENT_TRIES = 200
_SHRINK = 0.9  # radius factor applied when no placement was found


@dataclass(frozen=True)
class Scene:
    """One generated scene.

    Attributes:
        image: ``(3, H, W)`` float32 in ``[0, 1]`` (multiples of 1/255).
        objects: the objects in painting order (back to front), each with its visible mask and
            colour name.
    """

    image: torch.Tensor
    objects: tuple[AnnotatedObject, ...]

    @property
    def caption(self) -> str:
        """The objects in painting order, e.g. ``"a red star and a blue disc"``."""
        phrases = [f"{_article(obj.phrase)} {obj.phrase}" for obj in self.objects]
        if len(phrases) == 1:
            return phrases[0]
        return ", ".join(phrases[:-1]) + " and " + phrases[-1]

    def sample(self, image_id: str) -> SegmentationSample:
        """The scene as a :class:`~attnexplain.data.base.SegmentationSample` named ``image_id``."""
        masks = torch.stack([obj.mask for obj in self.objects])
        return sample_from_objects(
            image=self.image,
            object_masks=masks,
            object_labels=torch.tensor([obj.label for obj in self.objects], dtype=torch.int64),
            ignore=torch.zeros_like(masks[0]),
            image_id=image_id,
        )


def _article(phrase: str) -> str:
    return "an" if phrase[0] in "aeiou" else "a"


def _visible_masks(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Each mask minus every mask painted after it."""
    visible, above = [], np.zeros_like(masks[0])
    for mask in reversed(masks):
        visible.append(mask & ~above)
        above |= mask
    return visible[::-1]


def _place_objects(
    rng: np.random.Generator, classes: np.ndarray, image_size: int
) -> list[np.ndarray]:
    """Full (unoccluded) masks of the objects, placed by rejection sampling."""
    low, high = RADIUS_RANGES[len(classes)]
    masks: list[np.ndarray] = []
    placed: list[tuple[float, float, float]] = []  # (row, col, radius)
    for label in classes:
        radius = rng.uniform(low, high) * image_size
        angle = rng.uniform(0.0, 2 * np.pi)
        inner_ratio = rng.uniform(*RING_INNER_RATIO)
        while True:
            for _ in range(_PLACEMENT_TRIES):
                row, col = rng.uniform(radius + 1, image_size - radius - 1, size=2)
                if any(
                    np.hypot(row - r, col - c) < SEPARATION * (radius + other)
                    for r, c, other in placed
                ):
                    continue
                mask = shape_mask(
                    CLASS_NAMES[label], (row, col), radius, angle, image_size, inner_ratio
                )
                candidate = [*masks, mask]
                visible = _visible_masks(candidate)
                if all(
                    v.sum() >= max(MIN_VISIBLE * m.sum(), 1) for v, m in zip(visible, candidate)
                ):
                    masks.append(mask)
                    placed.append((row, col, radius))
                    break
            else:
                # No room at this size (rare): try again with a smaller object.
                radius *= _SHRINK
                continue
            break
    return masks


def _palette_colour(
    rng: np.random.Generator, background_mean: np.ndarray, taken: set[str]
) -> tuple[str, np.ndarray]:
    """A palette colour not in ``taken``, contrasting with ``background_mean``, jittered."""
    free = [name for name in PALETTE if name not in taken]
    distance = {
        name: float(np.linalg.norm(np.array(PALETTE[name]) - background_mean)) for name in free
    }
    eligible = [name for name in free if distance[name] >= MIN_CONTRAST]
    if not eligible:  # nothing contrasts enough: the most distant free colour
        eligible = [max(free, key=distance.__getitem__)]
    name = eligible[rng.integers(len(eligible))]
    jitter = rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, size=3)
    return name, np.clip(np.array(PALETTE[name]) + jitter, 0.0, 1.0).astype(np.float32)


def generate_scene(seed: int, image_size: int = 96) -> Scene:
    """Generate one scene: the image and its objects with visible masks and colour names.

    Args:
        seed: any non-negative integer; the same seed always gives the bit-identical scene.
        image_size: side of the square image in pixels (at least 32).

    Returns:
        The :class:`Scene`: ``image`` ``(3, H, W)`` float32 and 1-3 objects of distinct classes
        in painting order, each mask ``(H, W)`` bool, non-empty and disjoint from the others.

    Raises:
        ValueError: if ``seed`` is negative or ``image_size`` is below 32.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    rng = np.random.default_rng((seed, _STREAM))
    image = background(rng, image_size)
    paint_distractors(rng, image)

    counts = list(OBJECT_COUNT_PROBABILITIES)
    count = counts[rng.choice(len(counts), p=list(OBJECT_COUNT_PROBABILITIES.values()))]
    classes = rng.choice(len(CLASS_NAMES), size=count, replace=False)
    masks = _place_objects(rng, classes, image_size)
    colours: list[str] = []
    for mask in masks:
        name, colour = _palette_colour(rng, image[mask].mean(axis=0), set(colours))
        paint = fill(rng, image_size, colour, rng.uniform(0.0, np.pi), _GRADIENT_SHIFT)
        image[mask] = paint[mask]
        colours.append(name)
    objects = tuple(
        AnnotatedObject(int(label), CLASS_NAMES[label], torch.from_numpy(visible), colour)
        for label, visible, colour in zip(classes, _visible_masks(masks), colours)
    )
    return Scene(finish(rng, image), objects)


class SyntheticScenes(SeededSplit):
    """A split of the multi-object scenes, generated on the fly from disjoint seed ranges.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (the seed ranges of
            :mod:`attnexplain.data.synthetic`).
        size: number of samples, at most ``10**9``.
        image_size: side of the square images in pixels.

    Raises:
        ValueError: if ``split`` is unknown or ``size`` is out of range.

    Examples:
        >>> scenes = SyntheticScenes("val", size=8)
        >>> scenes[3].image_id, scenes.class_name(int(scenes[3].label))
        ('scenes-val-000003', 'cross')
    """

    def scene(self, index: int) -> Scene:
        """The :class:`Scene` of sample ``index`` (image, objects with colour names).

        Raises:
            IndexError: if ``index`` is out of range.
        """
        return generate_scene(self.seed(self._checked_index(index)), self.image_size)

    def image_id(self, index: int) -> str:
        """The stable id of sample ``index``, e.g. ``"scenes-test-000003"``."""
        return f"scenes-{self.split}-{self._checked_index(index):06d}"

    def __getitem__(self, index: int) -> SegmentationSample:
        return self.scene(index).sample(self.image_id(index))

    def objects(self, index: int) -> list[AnnotatedObject]:
        """The objects of sample ``index`` in ``object_masks`` order, with colour names."""
        return list(self.scene(index).objects)
