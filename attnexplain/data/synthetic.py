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

import functools
from typing import Literal

import numpy as np
import torch
from scipy import ndimage
from skimage import data as skdata
from skimage import draw, transform
from torch.utils.data import Dataset

from attnexplain.data.base import SegmentationSample

__all__ = [
    "CLASS_NAMES",
    "MIN_CONTRAST",
    "SPLIT_SEED_OFFSETS",
    "SyntheticShapes",
    "generate_sample",
]

CLASS_NAMES: tuple[str, ...] = ("disc", "square", "triangle", "star", "cross", "ring")

SPLIT_SEED_OFFSETS: dict[str, int] = {"train": 0, "val": 10**9, "test": 2 * 10**9}
_SPLIT_SEED_SPAN = 10**9

MIN_CONTRAST = 0.4
"""Least RGB Euclidean distance between the object's mean colour and the background under it."""

_RADIUS_RANGE = (0.25, 0.35)  # object circumradius, as a fraction of the image side
_RGB_BACKGROUNDS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
)
_GREY_BACKGROUNDS = ("brick", "grass", "gravel", "camera", "moon", "coins", "clock", "cell", "page")
# A crop is taken from a copy whose shorter side is this many image sides, so the same photograph
# appears at several scales: close-ups look like texture, wide views like scenes.
_BACKGROUND_SCALES = (1.2, 2.0, 3.5)


def _star_vertices() -> np.ndarray:
    angles = np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross_vertices() -> np.ndarray:
    arm = 0.32  # half-width of each arm, as a fraction of the circumradius
    tip = np.sqrt(1.0 - arm**2)  # the arms' corners lie on the unit circle
    return np.array(
        [
            [arm, tip],
            [arm, arm],
            [tip, arm],
            [tip, -arm],
            [arm, -arm],
            [arm, -tip],
            [-arm, -tip],
            [-arm, -arm],
            [-tip, -arm],
            [-tip, arm],
            [-arm, arm],
            [-arm, tip],
        ]
    )


# Unit polygons (x, y) with circumradius 1, centred on the origin.
_POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]]) / np.sqrt(2.0),
    "triangle": np.stack(
        [
            np.cos(np.pi / 2 + np.arange(3) * 2 * np.pi / 3),
            np.sin(np.pi / 2 + np.arange(3) * 2 * np.pi / 3),
        ],
        axis=1,
    ),
    "star": _star_vertices(),
    "cross": _cross_vertices(),
}
_RING_INNER_RATIO = (0.5, 0.65)


def shape_mask(
    kind: str,
    center: tuple[float, float],
    radius: float,
    angle: float,
    image_size: int,
    inner_ratio: float = 0.58,
) -> np.ndarray:
    """Rasterise one class shape: the pixels whose centres fall inside it.

    Args:
        kind: one of :data:`CLASS_NAMES`.
        center: ``(row, col)`` of the shape's centre, in pixels.
        radius: circumradius in pixels.
        angle: rotation in radians (ignored by the rotation-invariant disc and ring).
        image_size: side of the square canvas.
        inner_ratio: a ring's inner radius over its outer radius (ignored by other kinds).

    Returns:
        ``(image_size, image_size)`` bool array.

    Raises:
        ValueError: if ``kind`` is not a class name.
    """
    mask = np.zeros((image_size, image_size), dtype=bool)
    row, col = center
    if kind == "disc":
        mask[draw.disk((row, col), radius, shape=mask.shape)] = True
    elif kind == "ring":
        mask[draw.disk((row, col), radius, shape=mask.shape)] = True
        mask[draw.disk((row, col), radius * inner_ratio, shape=mask.shape)] = False
    elif kind in _POLYGONS:
        cos, sin = np.cos(angle), np.sin(angle)
        x, y = _POLYGONS[kind].T
        cols = col + radius * (cos * x - sin * y)
        rows = row - radius * (sin * x + cos * y)
        mask[draw.polygon(rows, cols, shape=mask.shape)] = True
    else:
        raise ValueError(f"kind must be one of {CLASS_NAMES}, got {kind!r}")
    return mask


def _as_float_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32) / 255.0
    return image[..., :3] if image.ndim == 3 else image


@functools.lru_cache(maxsize=4)
def _background_pool(image_size: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Bundled photographs resized once per image size: (RGB copies, grey copies)."""

    def rescaled(image: np.ndarray) -> list[np.ndarray]:
        copies = []
        for scale in _BACKGROUND_SCALES:
            factor = scale * image_size / min(image.shape[:2])
            out_shape = (round(image.shape[0] * factor), round(image.shape[1] * factor))
            copies.append(
                transform.resize(image, out_shape, anti_aliasing=True, order=1).astype(np.float32)
            )
        return copies

    rgb = [c for name in _RGB_BACKGROUNDS for c in rescaled(_as_float_rgb(getattr(skdata, name)()))]
    grey = [
        c for name in _GREY_BACKGROUNDS for c in rescaled(_as_float_rgb(getattr(skdata, name)()))
    ]
    return tuple(rgb), tuple(grey)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, size=3).astype(np.float32)


def _background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    rgb_pool, grey_pool = _background_pool(image_size)
    use_grey = rng.random() < 0.45
    pool = grey_pool if use_grey else rgb_pool
    source = pool[rng.integers(len(pool))]
    top = rng.integers(source.shape[0] - image_size + 1)
    left = rng.integers(source.shape[1] - image_size + 1)
    crop = source[top : top + image_size, left : left + image_size]
    crop = np.rot90(crop, k=rng.integers(4))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if use_grey:
        dark, light = _random_colour(rng), _random_colour(rng)
        crop = dark + crop[..., None] * (light - dark)
    contrast = rng.uniform(0.4, 0.9)
    crop = (crop - crop.mean()) * contrast + crop.mean() + rng.uniform(-0.15, 0.15)
    ramp = np.linspace(-1.0, 1.0, image_size, dtype=np.float32)
    direction = rng.uniform(0.0, 2 * np.pi)
    illumination = np.cos(direction) * ramp[None, :] + np.sin(direction) * ramp[:, None]
    crop = crop + rng.uniform(0.0, 0.15) * illumination[..., None]
    blur = rng.uniform(0.5, 1.5)
    crop = ndimage.gaussian_filter(crop, sigma=(blur, blur, 0.0))
    return np.clip(crop, 0.0, 1.0).astype(np.float32)


def _fill(rng: np.random.Generator, image_size: int, base: np.ndarray, angle: float) -> np.ndarray:
    """An ``(H, W, 3)`` paint layer around colour ``base``: solid, gradient, stripes or texture."""
    style = rng.integers(4)
    layer = np.broadcast_to(base, (image_size, image_size, 3)).astype(np.float32)
    if style == 0:
        return layer
    ramp = np.arange(image_size, dtype=np.float32)
    along = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    if style == 1:
        other = np.clip(base + rng.uniform(-0.3, 0.3, size=3), 0.0, 1.0).astype(np.float32)
        t = (along - along.min()) / (along.max() - along.min())
        return layer + t[..., None] * (other - base)
    if style == 2:
        period = rng.uniform(4.0, 10.0)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * along / period)
        other = np.clip(base * 0.5, 0.0, 1.0)
        return layer + stripes[..., None] * (other - base)
    _, grey_pool = _background_pool(image_size)
    texture = grey_pool[rng.integers(len(grey_pool))][:image_size, :image_size]
    return layer + 0.2 * (texture[..., None] - texture.mean())


def _object_colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """A random colour at least :data:`MIN_CONTRAST` away from ``background_mean``."""
    colour = _random_colour(rng)
    distance = float(np.linalg.norm(colour - background_mean))
    if distance >= MIN_CONTRAST:
        return colour
    # Push the colour straight away from the background rather than resampling, so the number of
    # random draws per image stays fixed.
    direction = colour - background_mean
    if np.linalg.norm(direction) < 1e-6:
        direction = np.where(background_mean < 0.5, 1.0, -1.0).astype(np.float32)
    direction /= np.linalg.norm(direction)
    pushed = np.clip(background_mean + MIN_CONTRAST * 1.3 * direction, 0.0, 1.0)
    if np.linalg.norm(pushed - background_mean) < MIN_CONTRAST:
        # Clipped against the cube's wall: take the farthest corner instead.
        pushed = np.where(background_mean < 0.5, 1.0, 0.0)
    return pushed.astype(np.float32)


def _distractor_mask(rng: np.random.Generator, image_size: int) -> np.ndarray:
    mask = np.zeros((image_size, image_size), dtype=bool)
    row, col = rng.uniform(0.1, 0.9, size=2) * image_size
    angle = rng.uniform(0.0, np.pi)
    kind = rng.integers(3)
    if kind == 0:  # elongated ellipse
        major = rng.uniform(0.12, 0.3) * image_size
        minor = major / rng.uniform(2.5, 4.0)
        mask[draw.ellipse(row, col, minor, major, shape=mask.shape, rotation=angle)] = True
        return mask
    length = rng.uniform(0.3, 0.7) * image_size
    half_width = rng.uniform(1.0, 2.5)
    t = np.linspace(-0.5, 0.5, 24)
    wave = 0.0 if kind == 1 else rng.uniform(0.05, 0.12) * image_size
    along, across = t * length, wave * np.sin(2 * np.pi * rng.uniform(1.0, 2.0) * t)
    rows = row - np.sin(angle) * along - np.cos(angle) * across
    cols = col + np.cos(angle) * along - np.sin(angle) * across
    for r0, c0, r1, c1 in zip(rows[:-1], cols[:-1], rows[1:], cols[1:]):
        normal = np.array([c0 - c1, r1 - r0]) / max(np.hypot(r1 - r0, c1 - c0), 1e-6)
        dr, dc = normal * half_width
        quad_rows = [r0 + dr, r1 + dr, r1 - dr, r0 - dr]
        quad_cols = [c0 + dc, c1 + dc, c1 - dc, c0 - dc]
        mask[draw.polygon(quad_rows, quad_cols, shape=mask.shape)] = True
    return mask


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
    image = _background(rng, image_size)

    for _ in range(rng.integers(3)):
        distractor = _distractor_mask(rng, image_size)
        paint = _fill(rng, image_size, _random_colour(rng), rng.uniform(0.0, np.pi))
        image[distractor] = paint[distractor]

    radius = rng.uniform(*_RADIUS_RANGE) * image_size
    # Keep the whole object inside the frame so its mask is the complete shape.
    row, col = rng.uniform(radius + 1, image_size - radius - 1, size=2)
    angle = rng.uniform(0.0, 2 * np.pi)
    inner_ratio = rng.uniform(*_RING_INNER_RATIO)
    mask = shape_mask(CLASS_NAMES[label], (row, col), radius, angle, image_size, inner_ratio)
    colour = _object_colour(rng, image[mask].mean(axis=0))
    paint = _fill(rng, image_size, colour, rng.uniform(0.0, np.pi))
    image[mask] = paint[mask]

    # Some photographs are clean; the rest get sensor noise of a random strength.
    noise = rng.uniform(0.005, 0.04) if rng.random() < 0.7 else 0.0
    if noise > 0:
        image += rng.normal(0.0, noise, size=image.shape).astype(np.float32)
    image = np.round(np.clip(image, 0.0, 1.0) * 255.0) / 255.0
    image_tensor = torch.from_numpy(
        np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    )
    return image_tensor, label, torch.from_numpy(mask)


class SyntheticShapes(Dataset):
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

    def __init__(
        self, split: Literal["train", "val", "test"], size: int, image_size: int = 96
    ) -> None:
        if split not in SPLIT_SEED_OFFSETS:
            raise ValueError(f"split must be one of {tuple(SPLIT_SEED_OFFSETS)}, got {split!r}")
        if not 0 <= size <= _SPLIT_SEED_SPAN:
            raise ValueError(f"size must be in [0, {_SPLIT_SEED_SPAN}], got {size}")
        self.split = split
        self.size = size
        self.image_size = image_size

    def __len__(self) -> int:
        return self.size

    def seed(self, index: int) -> int:
        """The generator seed of sample ``index`` of this split."""
        return SPLIT_SEED_OFFSETS[self.split] + index

    def __getitem__(self, index: int) -> SegmentationSample:
        if not -self.size <= index < self.size:
            raise IndexError(f"index must be in [{-self.size}, {self.size}), got {index}")
        index %= self.size
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
