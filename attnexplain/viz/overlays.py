"""Image figures: per-head grids, DINO mass-threshold masks and method comparisons."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from attnexplain.metrics.threshold import mass_threshold_mask
from attnexplain.viz._common import (
    ArrayLike,
    _as_map_stack,
    _check_alpha,
    _check_grid,
    _check_titles,
    _draw_heat,
    _draw_image,
    _normalise,
    _panels,
    _prepare_image,
    _prepare_maps,
    _resize,
    _single,
)


def head_grid(
    image: ArrayLike,
    maps: ArrayLike,
    *,
    ncols: int | None = None,
    titles: Sequence[str] | None = None,
    cmap: str = "inferno",
    alpha: float = 0.6,
    axes: Sequence[Axes] | np.ndarray | None = None,
) -> Figure:
    """Draw every head's map over the image, DINO-figure style; the first panel is the image.

    Each map is min-max normalised on its own, so heads with different value ranges are all
    visible (compare absolute values with the raw tensor, not with this figure).

    Args:
        image: ``(3, H, W)`` float in ``[0, 1]`` or ``(H, W, 3)`` float/uint8.
        maps: ``(K, H, W)`` / ``(K, h, w)`` (patch grid, upsampled bilinearly), ``(H, W)`` or
            ``(1, K, H, W)``; typically raw CLS attention with heads kept.
        ncols: panels per row; default one row up to 7 panels, else a near-square grid.
        titles: one title per map (``K``); default ``"head 0"``, ``"head 1"``, ...
        cmap: matplotlib colormap name of the heat maps.
        alpha: opacity of the heat maps in ``[0, 1]``.
        axes: ``K + 1`` existing Axes to draw into instead of a new figure.

    Returns:
        The Figure, with ``K + 1`` image Axes; ``fig.axes[k + 1].images[1]`` holds map ``k``
        normalised to ``[0, 1]`` at ``(H, W)``.

    Raises:
        ValueError: if a shape does not match (naming ``image`` or ``maps``), ``titles`` or
            ``axes`` has the wrong length, or ``alpha`` is outside ``[0, 1]``.

    Examples:
        >>> import torch
        >>> fig = head_grid(torch.rand(3, 64, 64), torch.rand(6, 8, 8))
        >>> len(fig.axes)
        7
    """
    _check_alpha(alpha, "alpha")
    picture = _prepare_image(image)
    heats = _normalise(_prepare_maps(maps, picture.shape[:2]))
    names = _check_titles(titles, len(heats), [f"head {k}" for k in range(len(heats))])
    fig, panels = _panels(len(heats) + 1, ncols, axes)
    _draw_image(panels[0], picture, "image")
    for ax, heat, title in zip(panels[1:], heats, names):
        _draw_heat(ax, picture, heat, cmap, alpha, title)
    return fig


def mass_threshold_overlay(
    image: ArrayLike,
    maps: ArrayLike,
    mass: float = 0.6,
    *,
    fuse: Literal["none", "mean", "max"] = "none",
    ncols: int | None = None,
    titles: Sequence[str] | None = None,
    fill_alpha: float = 0.45,
    colors: Sequence[str | tuple[float, ...]] | None = None,
    axes: Sequence[Axes] | np.ndarray | None = None,
) -> Figure:
    """Draw DINO's attention-mass masks over the image: a translucent fill plus its contour.

    The mask keeps the smallest set of top-valued pixels holding ``mass`` of the map's total
    (:func:`attnexplain.metrics.threshold.mass_threshold_mask`, the rule the Jaccard metrics
    use). It is computed at the resolution the maps come in: on a patch grid, as in DINO's
    ``visualize_attention.py``, and then upsampled with nearest neighbours (each patch is kept
    or not); at image resolution, exactly as the metrics score it.

    Args:
        image: ``(3, H, W)`` float in ``[0, 1]`` or ``(H, W, 3)`` float/uint8.
        maps: non-negative ``(K, H, W)`` / ``(K, h, w)``, ``(H, W)`` or ``(1, K, H, W)``.
        mass: fraction of each map's total mass to keep, in ``(0, 1]`` (DINO uses 0.6).
        fuse: ``"none"`` draws one panel per map; ``"mean"`` / ``"max"`` fuse the ``K`` maps
            into one first (mean or max over heads) and draw a single mask.
        ncols: panels per row (see :func:`head_grid`).
        titles: one title per drawn mask (``K``, or 1 when fused).
        fill_alpha: opacity of the mask fill in ``[0, 1]``.
        colors: colours of the masks, cycled; default the ``tab10`` palette.
        axes: existing Axes to draw into (image panel + one per mask).

    Returns:
        The Figure: the image panel then one panel per mask; ``ax.images[1]`` of a mask panel is
        an ``(H, W, 4)`` RGBA fill whose alpha channel is ``fill_alpha`` exactly on the mask.

    Raises:
        ValueError: on bad shapes, negative or NaN map values (clip signed attributions with
            ``.clamp(min=0)``), ``mass`` outside ``(0, 1]``, an unknown ``fuse``, or wrong
            ``titles`` / ``axes`` lengths.

    Examples:
        >>> import torch
        >>> fig = mass_threshold_overlay(torch.rand(3, 64, 64), torch.rand(6, 8, 8), mass=0.6)
        >>> len(fig.axes)
        7
    """
    _check_alpha(fill_alpha, "fill_alpha")
    picture = _prepare_image(image)
    size = picture.shape[:2]
    stack = _as_map_stack(maps, "maps")
    _check_grid(stack.shape[-2:], size, "maps")
    n_maps = len(stack)
    if fuse == "mean":
        stack = stack.mean(axis=0, keepdims=True)
    elif fuse == "max":
        stack = stack.max(axis=0, keepdims=True)
    elif fuse != "none":
        raise ValueError(f"fuse must be 'none', 'mean' or 'max', got {fuse!r}")
    keep = mass_threshold_mask(torch.from_numpy(stack), mass).numpy()
    masks = _resize(keep.astype(np.float64), size, "nearest") > 0.5

    default = (
        [f"{fuse} of {n_maps} maps"] if fuse != "none" else [f"head {k}" for k in range(len(masks))]
    )
    names = _check_titles(titles, len(masks), default)
    palette = list(colors) if colors is not None else list(colormaps["tab10"].colors)
    fig, panels = _panels(len(masks) + 1, ncols, axes)
    _draw_image(panels[0], picture, f"image ({mass:.0%} of mass)")
    for k, (ax, mask, title) in enumerate(zip(panels[1:], masks, names)):
        color = palette[k % len(palette)]
        _draw_image(ax, picture, title)
        fill = np.zeros((*size, 4))
        fill[..., :3] = to_rgb(color)
        fill[..., 3] = np.where(mask, fill_alpha, 0.0)
        ax.imshow(fill, interpolation="nearest")
        # contour() warns when the level lies outside the data (empty or full mask).
        if mask.any() and not mask.all():
            ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=1.2)
            # contour() autoscales to pixel centres; restore imshow's pixel-edge limits.
            ax.set_xlim(-0.5, size[1] - 0.5)
            ax.set_ylim(size[0] - 0.5, -0.5)
    return fig


def compare_overlays(
    image: ArrayLike,
    maps: Mapping[str, ArrayLike],
    *,
    ncols: int | None = None,
    cmap: str = "inferno",
    alpha: float = 0.6,
    axes: Sequence[Axes] | np.ndarray | None = None,
) -> Figure:
    """Draw the image and one overlay per method side by side, titled with the mapping's keys.

    Args:
        image: ``(3, H, W)`` float in ``[0, 1]`` or ``(H, W, 3)`` float/uint8.
        maps: method name -> a single map, ``(H, W)``, ``(1, H, W)`` or ``(1, 1, H, W)``, at image
            or patch-grid resolution (e.g. ``{"raw": ..., "rollout": ..., "Grad-CAM": ...}``).
        ncols: panels per row (see :func:`head_grid`).
        cmap: matplotlib colormap name of the heat maps.
        alpha: opacity of the heat maps in ``[0, 1]``.
        axes: ``len(maps) + 1`` existing Axes to draw into.

    Returns:
        The Figure, with ``len(maps) + 1`` Axes; panel ``i + 1`` draws the ``i``-th map
        min-max normalised at ``(H, W)`` in ``ax.images[1]``.

    Raises:
        ValueError: if ``maps`` is empty, an entry holds several maps (select a head or fuse),
            or a shape does not match the image (the message names ``maps['key']``).

    Examples:
        >>> import torch
        >>> fig = compare_overlays(
        ...     torch.rand(3, 64, 64), {"raw": torch.rand(8, 8), "rollout": torch.rand(1, 8, 8)})
        >>> [ax.get_title() for ax in fig.axes]
        ['image', 'raw', 'rollout']
    """
    _check_alpha(alpha, "alpha")
    if len(maps) == 0:
        raise ValueError("maps must hold at least one method's map, got an empty mapping")
    picture = _prepare_image(image)
    heats = {
        key: _normalise(
            _single(_prepare_maps(value, picture.shape[:2], f"maps[{key!r}]"), f"maps[{key!r}]")
        )
        for key, value in maps.items()
    }
    fig, panels = _panels(len(heats) + 1, ncols, axes)
    _draw_image(panels[0], picture, "image")
    for ax, (key, heat) in zip(panels[1:], heats.items()):
        _draw_heat(ax, picture, heat, cmap, alpha, str(key))
    return fig
