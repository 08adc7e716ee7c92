"""What the explorer shows of one image, and the checks that turn user input into it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnexplain.benchmark.maps import MapViews, QuantisedViews, quantise
from attnexplain.viz._common import ArrayLike, _prepare_image, _to_numpy

#: A deletion / insertion curve as the benchmark stores it: ``{"x": [...], "probability": [...]}``.
Curve = Mapping[str, Any]


@dataclass
class ExplorerImage:
    """One image of the explorer page, with every method's maps, scores and curves.

    Attributes:
        image_id: the image's name on the page (unique per page).
        image: ``(3, H, W)`` or ``(H, W, 3)`` float in ``[0, 1]`` or uint8; ``None`` when the
            pixels were not kept (the maps are then drawn on a grey background).
        maps: method -> its maps: :class:`~attnexplain.benchmark.maps.MapViews`,
            :class:`~attnexplain.benchmark.maps.QuantisedViews`, or an array ``(h, w)``,
            ``(K, h, w)`` (``K = 1`` fused, else one map per head) or ``(layers, K, h, w)``.
            Maps of any size are drawn over the whole image (bilinear, like the library's
            upsampling); NaN and infinite pixels are shown transparent.
        mask: ``(H, W)`` bool object mask, for the threshold's Jaccard and the outline.
        ignore: ``(H, W)`` bool pixels left out of the Jaccard (as the benchmark's metrics do).
        scores: method -> metric -> value (the benchmark's scores of this image).
        curves: method -> metric -> :data:`Curve` (deletion / insertion curves).
        caption: one line shown under the image (label, target, prediction).
    """

    image_id: str
    image: ArrayLike | None
    maps: Mapping[str, MapViews | QuantisedViews | ArrayLike] = field(default_factory=dict)
    mask: ArrayLike | None = None
    ignore: ArrayLike | None = None
    scores: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    curves: Mapping[str, Mapping[str, Curve]] = field(default_factory=dict)
    caption: str = ""


@dataclass(frozen=True)
class PreparedImage:
    """An :class:`ExplorerImage` checked and converted for the page.

    Attributes:
        image_id: as given.
        pixels: ``(H, W, 3)`` uint8 or ``None``.
        size: ``(H, W)`` the maps are drawn at (the image's, else the mask's, else the largest
            map's).
        mask, ignore: ``(H, W)`` bool or ``None``.
        views: method -> quantised views.
        scores: method -> metric -> finite float or ``None``.
        curves: method -> metric -> ``{"x": [...], "probability": [...]}``.
        caption: as given.
    """

    image_id: str
    pixels: np.ndarray | None
    size: tuple[int, int]
    mask: np.ndarray | None
    ignore: np.ndarray | None
    views: dict[str, QuantisedViews]
    scores: dict[str, dict[str, float | None]]
    curves: dict[str, dict[str, dict[str, list[float | None]]]]
    caption: str


def finite_or_none(value: Any) -> float | None:
    """``value`` as a float, or ``None`` when it is missing or not finite (JSON has no NaN)."""
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _quantised(maps: MapViews | QuantisedViews | ArrayLike, where: str) -> QuantisedViews:
    if isinstance(maps, QuantisedViews):
        return maps
    if not isinstance(maps, MapViews):
        try:
            maps = MapViews.from_array(_to_numpy(maps, where))
        except (TypeError, ValueError) as error:
            raise type(error)(f"{where}: {error}") from None
    return quantise(maps)


def _pixel_mask(mask: ArrayLike | None, size: tuple[int, int] | None, where: str) -> np.ndarray:
    array = _to_numpy(mask, where)
    if array.ndim != 2 or (size is not None and array.shape != size):
        expected = f"the image's {size}" if size is not None else "(H, W)"
        raise ValueError(f"{where} must be {expected}, got shape {array.shape}")
    return array > 0.5


def _curves(curves: Mapping[str, Curve], where: str) -> dict[str, dict[str, list[float | None]]]:
    prepared = {}
    for metric, curve in curves.items():
        if "x" not in curve or "probability" not in curve:
            raise ValueError(f"{where}[{metric!r}] needs 'x' and 'probability' lists")
        x = [finite_or_none(v) for v in curve["x"]]
        y = [finite_or_none(v) for v in curve["probability"]]
        if len(x) != len(y):
            raise ValueError(f"{where}[{metric!r}]: {len(x)} x values for {len(y)} probabilities")
        prepared[str(metric)] = {"x": x, "probability": y}
    return prepared


def prepare(image: ExplorerImage) -> PreparedImage:
    """Check ``image`` and convert it for the page.

    Raises:
        TypeError: for an argument of the wrong type.
        ValueError: for an image, mask or map of the wrong shape, or a curve without its lists;
            the message names the image and the method.
    """
    if not isinstance(image, ExplorerImage):
        raise TypeError(f"images must be ExplorerImage objects, got {type(image).__name__}")
    where = f"image {image.image_id!r}"
    pixels = None
    if image.image is not None:
        try:
            pixels = np.rint(_prepare_image(image.image, "image") * 255).astype(np.uint8)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{where}: {error}") from None
    views = {
        str(method): _quantised(maps, f"{where}, method {method!r}")
        for method, maps in image.maps.items()
    }
    size = None if pixels is None else pixels.shape[:2]
    mask = ignore = None
    if image.mask is not None:
        mask = _pixel_mask(image.mask, size, f"{where}: mask")
        size = size or mask.shape
    if image.ignore is not None:
        ignore = _pixel_mask(image.ignore, size, f"{where}: ignore")
        size = size or ignore.shape
    if size is None:
        sizes = [v.codes.shape[-2:] for v in views.values()] or [(1, 1)]
        size = max(sizes, key=lambda hw: hw[0] * hw[1])
    scores = {
        str(method): {str(k): finite_or_none(v) for k, v in values.items()}
        for method, values in image.scores.items()
    }
    curves = {
        str(method): _curves(values, f"{where}: curves of {method!r}")
        for method, values in image.curves.items()
    }
    return PreparedImage(
        str(image.image_id),
        pixels,
        (int(size[0]), int(size[1])),
        mask,
        ignore,
        views,
        scores,
        curves,
        str(image.caption),
    )
