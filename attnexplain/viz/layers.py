"""Maps of every layer: one row per image, one column per layer (the founding per-block figure)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from attnexplain.viz._common import (
    ArrayLike,
    _check_alpha,
    _draw_heat,
    _draw_image,
    _normalise,
    _panels,
    _prepare_image,
    _prepare_maps,
    _to_numpy,
)

# Inches per panel: a 12-layer row of 13 panels stays under 20 inches wide.
_LAYER_PANEL_INCHES = 1.5


def _image_list(images: ArrayLike | Sequence[ArrayLike]) -> list[np.ndarray]:
    if isinstance(images, Sequence):
        return [_prepare_image(image, f"images[{i}]") for i, image in enumerate(images)]
    if images.ndim == 4:
        return [_prepare_image(image, f"images[{i}]") for i, image in enumerate(images)]
    return [_prepare_image(images, "images")]


def _layer_stack(maps: ArrayLike, batch: int) -> np.ndarray:
    """``maps`` as ``(B, L, h, w)``: accepts ``(B, L, h, w)``, ``(B, L, 1, h, w)`` and, for one
    image, ``(L, h, w)`` / ``(L, 1, h, w)``."""
    array = _to_numpy(maps, "maps")
    shape = tuple(array.shape)
    if array.ndim == 5 or (batch == 1 and array.ndim == 4 and array.shape[1] == 1):
        if array.shape[-3] != 1:
            raise ValueError(
                f"maps hold {array.shape[-3]} maps per layer (shape {shape}); fuse the heads "
                "first (e.g. RawCLSAttention(..., head_fusion='mean')) or pick one (maps[:, :, k])"
            )
        array = array[..., 0, :, :]
    if array.ndim == 3 and batch == 1:
        array = array[None]
    if array.ndim != 4 or array.shape[0] != batch or 0 in array.shape:
        raise ValueError(
            f"maps must be (B, L, H, W) or (B, L, 1, H, W) with B = {batch} images, got shape "
            f"{shape}"
        )
    return array


def layer_grid(
    images: ArrayLike | Sequence[ArrayLike],
    maps: ArrayLike,
    *,
    layers: Sequence[int] | None = None,
    overlay: bool = True,
    cmap: str = "inferno",
    alpha: float = 0.6,
    axes: Sequence[Axes] | np.ndarray | None = None,
) -> Figure:
    """Draw every layer's map of every image: rows are images, columns the image then the layers.

    The founding document's figure (one block per column, jeonsworld/ViT-pytorch's
    ``aug_att_mat[i]`` maps), for a batch. Each map is min-max normalised on its own, so layers
    with very different value ranges are all visible (compare values with the tensor).

    Args:
        images: ``(B, 3, H, W)`` floats in ``[0, 1]``, one image (``(3, H, W)`` /
            ``(H, W, 3)``), or a sequence of images.
        maps: ``(B, L, H, W)`` or ``(B, L, 1, H, W)`` at image or patch-grid resolution, e.g.
            ``RawCLSAttention(model, layer="all").attribute(x)`` or
            ``AttentionRollout(model).layer_maps(x).per_block``; ``(L, H, W)`` for one image.
        layers: the layer index of each column (default ``0 … L - 1``), for the titles.
        overlay: draw each map over its image (default) or alone, like the founding figure.
        cmap: matplotlib colormap name of the heat maps.
        alpha: opacity of the heat maps over the image, in ``[0, 1]``.
        axes: ``B * (L + 1)`` existing Axes, row by row, to draw into.

    Returns:
        The Figure with ``B * (L + 1)`` Axes, row by row; the panel of image ``b``, layer ``k``
        is ``fig.axes[b * (L + 1) + 1 + k]`` and its last ``images`` entry holds the map
        normalised to ``[0, 1]`` at ``(H, W)``.

    Raises:
        TypeError: for images or maps that are not tensors or arrays.
        ValueError: for a shape that does not match (maps per head, a batch of another size, a
            grid that is not the image's), ``layers`` of the wrong length, or ``alpha`` outside
            ``[0, 1]``.

    Examples:
        >>> import torch
        >>> fig = layer_grid(torch.rand(2, 3, 32, 32), torch.rand(2, 4, 4, 4))
        >>> len(fig.axes), fig.axes[1].get_title()
        (10, 'layer 0')
    """
    _check_alpha(alpha, "alpha")
    pictures = _image_list(images)
    stack = _layer_stack(maps, len(pictures))
    count = stack.shape[1]
    layers = list(range(count)) if layers is None else list(layers)
    if len(layers) != count:
        raise ValueError(f"layers must name each of the {count} maps, got {len(layers)}")
    fig, panels = _panels(len(pictures) * (count + 1), count + 1, axes)
    if axes is None:
        fig.set_size_inches(_LAYER_PANEL_INCHES * (count + 1), _LAYER_PANEL_INCHES * len(pictures))
    for row, (picture, per_layer) in enumerate(zip(pictures, stack)):
        heats = _normalise(_prepare_maps(per_layer, picture.shape[:2], f"maps[{row}]"))
        row_panels = panels[row * (count + 1) : (row + 1) * (count + 1)]
        _draw_image(row_panels[0], picture, "image" if row == 0 else None)
        for ax, heat, layer in zip(row_panels[1:], heats, layers):
            title = f"layer {layer}" if row == 0 else ""
            if overlay:
                _draw_heat(ax, picture, heat, cmap, alpha, title)
            else:
                ax.imshow(heat, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
                ax.set_axis_off()
                ax.set_title(title, fontsize="medium")
    return fig
