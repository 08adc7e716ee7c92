"""Painting pieces shared by the synthetic generators: class shapes, backgrounds, fills, noise.

:mod:`attnexplain.data.synthetic` (one object per image) and :mod:`attnexplain.data.scenes`
(several objects) compose these. Every function that draws takes the caller's
``numpy.random.Generator``, so an image stays a pure function of its seed.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from scipy import ndimage
from skimage import data as skdata
from skimage import draw, transform

CLASS_NAMES: tuple[str, ...] = ("disc", "square", "triangle", "star", "cross", "ring")

MIN_CONTRAST = 0.4
"""Least RGB Euclidean distance between the object's mean colour and the background under it."""

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
RING_INNER_RATIO = (0.5, 0.65)
"""Range of a ring's inner radius over its outer radius."""


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


def random_colour(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random RGB colour, ``(3,)`` float32 in ``[0, 1]``."""
    return rng.uniform(0.0, 1.0, size=3).astype(np.float32)


def background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """A photographic background: a random crop of a bundled image, tinted, lit and blurred.

    Args:
        rng: the image's random generator.
        image_size: side of the square crop.

    Returns:
        ``(image_size, image_size, 3)`` float32 in ``[0, 1]``.
    """
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
        dark, light = random_colour(rng), random_colour(rng)
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


def fill(
    rng: np.random.Generator,
    image_size: int,
    base: np.ndarray,
    angle: float,
    gradient_shift: float = 0.3,
) -> np.ndarray:
    """A paint layer around colour ``base``: solid, gradient, stripes or texture.

    Args:
        rng: the image's random generator.
        image_size: side of the square layer.
        base: ``(3,)`` RGB colour in ``[0, 1]``.
        angle: direction of the gradient and stripes, in radians.
        gradient_shift: a gradient runs from ``base`` to ``base`` plus a uniform shift of at
            most this much per channel (smaller keeps the layer's colour name unambiguous).

    Returns:
        ``(image_size, image_size, 3)`` float32.
    """
    style = rng.integers(4)
    layer = np.broadcast_to(base, (image_size, image_size, 3)).astype(np.float32)
    if style == 0:
        return layer
    ramp = np.arange(image_size, dtype=np.float32)
    along = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    if style == 1:
        shift = rng.uniform(-gradient_shift, gradient_shift, size=3)
        other = np.clip(base + shift, 0.0, 1.0).astype(np.float32)
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


def object_colour(rng: np.random.Generator, background_mean: np.ndarray) -> np.ndarray:
    """A random colour at least :data:`MIN_CONTRAST` away from ``background_mean``."""
    colour = random_colour(rng)
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


def distractor_mask(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """The mask of a shape that is not a class: an elongated ellipse, a bar or a wavy line.

    Args:
        rng: the image's random generator.
        image_size: side of the square canvas.

    Returns:
        ``(image_size, image_size)`` bool array.
    """
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


def paint_distractors(rng: np.random.Generator, image: np.ndarray) -> None:
    """Paint 0-2 distractors (:func:`distractor_mask`) onto ``image`` in place.

    Args:
        rng: the image's random generator.
        image: ``(H, W, 3)`` float32 canvas, square.
    """
    image_size = image.shape[0]
    for _ in range(rng.integers(3)):
        distractor = distractor_mask(rng, image_size)
        paint = fill(rng, image_size, random_colour(rng), rng.uniform(0.0, np.pi))
        image[distractor] = paint[distractor]


def finish(rng: np.random.Generator, image: np.ndarray) -> torch.Tensor:
    """Add sensor noise to 70 % of images, quantise to 8 bits and convert to a tensor.

    Args:
        rng: the image's random generator.
        image: ``(H, W, 3)`` float32 canvas.

    Returns:
        ``(3, H, W)`` float32 in ``[0, 1]``, multiples of 1/255 (so a uint8 cache is lossless).
    """
    # Some photographs are clean; the rest get sensor noise of a random strength.
    noise = rng.uniform(0.005, 0.04) if rng.random() < 0.7 else 0.0
    if noise > 0:
        image = image + rng.normal(0.0, noise, size=image.shape).astype(np.float32)
    image = np.round(np.clip(image, 0.0, 1.0) * 255.0) / 255.0
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
