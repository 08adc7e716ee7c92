"""The bridge to ``captum.attr.visualization``: our maps and images in Captum's layout."""

from __future__ import annotations

import numpy as np

from attnexplain.viz._common import (
    ArrayLike,
    _as_map_stack,
    _check_grid,
    _prepare_image,
    _resize,
    _single,
)


def to_captum(attribution: ArrayLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Convert one map to the ``(H, W, 1)`` array ``captum.attr.visualization`` expects.

    Values are kept as they are (Captum normalises them itself), only the layout changes.

    Args:
        attribution: a single map, ``(H, W)``, ``(1, H, W)`` or ``(1, 1, H, W)``.
        size: optional ``(H, W)`` to upsample a patch-grid map to (bilinear), e.g. the image
            size, since Captum requires the map and the image to have the same size.

    Returns:
        ``(H, W, 1)`` float64 array (``size`` if given).

    Raises:
        ValueError: if ``attribution`` holds several maps (``K > 1``: select a head or fuse),
            a batch of more than one image, NaNs, or is larger than ``size``.
        TypeError: if it is neither a tensor nor a numpy array.

    Examples:
        >>> import torch
        >>> from captum.attr import visualization  # a module attribute, not an importable path
        >>> image = torch.rand(3, 32, 32)
        >>> fig, ax = visualization.visualize_image_attr(
        ...     to_captum(torch.rand(1, 4, 4), size=(32, 32)), image_to_captum(image),
        ...     method="blended_heat_map", sign="positive", use_pyplot=False)
    """
    stack = _as_map_stack(attribution, "attribution")
    single = _single(stack, "attribution")
    if size is not None:
        size = (int(size[0]), int(size[1]))
        _check_grid(single.shape, size, "attribution")
        single = _resize(single[None], size, "bilinear")[0]
    return single[..., None]


def image_to_captum(image: ArrayLike) -> np.ndarray:
    """Convert an image to the channels-last ``(H, W, 3)`` float array Captum draws.

    Args:
        image: ``(3, H, W)`` or ``(H, W, 3)`` float in ``[0, 1]``, ``(H, W, 3)`` uint8, or a
            batch of one ``(1, 3, H, W)``.

    Returns:
        ``(H, W, 3)`` float64 array in ``[0, 1]``.

    Raises:
        ValueError: on another shape, NaNs, or values outside ``[0, 1]`` (float) / ``[0, 255]``
            (integer) — e.g. an image still carrying the model's mean/std normalisation.

    Examples:
        >>> import torch
        >>> image_to_captum(torch.rand(3, 32, 32)).shape
        (32, 32, 3)
    """
    return _prepare_image(image)
