"""Figures for attention maps: head grids, DINO masks, method comparisons, MAD and curves.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so nothing leaks
into global pyplot state and the figures render headless (Agg) and in notebooks alike. Maps keep
the formula's unscaled values everywhere else in the library; here, and only here, they are
min-max normalised per map for display. Inputs are never modified.

Accepted inputs (torch tensors or numpy arrays):

- images: ``(3, H, W)`` float in ``[0, 1]``, ``(H, W, 3)`` float in ``[0, 1]`` or uint8 in
  ``[0, 255]``, or a batch of one ``(1, 3, H, W)``;
- maps: ``(K, H, W)``, ``(1, H, W)``, ``(H, W)`` or a batch of one ``(1, K, H, W)`` (what
  ``attribute`` returns for one image), at image resolution or on the patch grid ``(h, w)``;
  patch-grid maps are upsampled bilinearly to the image size for drawing.

Examples:
    >>> import torch
    >>> from attnexplain.viz import head_grid, save_figure
    >>> image = torch.rand(3, 64, 64)
    >>> cls_attention = torch.rand(6, 8, 8)  # 6 heads on an 8 x 8 patch grid
    >>> fig = head_grid(image, cls_attention)
    >>> len(fig.axes)
    7
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Literal, TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, to_rgb
from matplotlib.figure import Figure

from attnexplain.metrics.threshold import mass_threshold_mask

__all__ = [
    "compare_overlays",
    "curves_plot",
    "head_grid",
    "image_to_captum",
    "mad_plot",
    "mass_threshold_overlay",
    "save_figure",
    "to_captum",
]

ArrayLike: TypeAlias = torch.Tensor | np.ndarray

# Inches per image panel: large enough to read a 14 x 14 patch grid, small enough that a
# 12-head grid still fits a notebook cell.
_PANEL_INCHES = 2.4
# Slack on the float image range, so values like 1.0000001 from a resize are not rejected.
_RANGE_TOLERANCE = 1e-3
# A patch grid is (H // p, W // p), so H / h and W / w may differ by up to one patch's worth of
# rounding; a larger gap means the map belongs to a different image (or is transposed).
_ASPECT_TOLERANCE = 0.25


# ----------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    """Copy ``x`` to a float64 numpy array (a copy, so later steps can never write into inputs)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    if isinstance(x, np.ndarray):
        return np.array(x, dtype=np.float64, copy=True)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _prepare_image(image: ArrayLike, name: str = "image") -> np.ndarray:
    """Validate an image and return it as ``(H, W, 3)`` float64 in ``[0, 1]``."""
    if not isinstance(image, torch.Tensor | np.ndarray):
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy.ndarray, got {type(image).__name__}"
        )
    shape = tuple(image.shape)
    is_integer = (
        not torch.is_floating_point(image)
        if isinstance(image, torch.Tensor)
        else np.issubdtype(image.dtype, np.integer)
    )
    array = _to_numpy(image, name)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or 3 not in (array.shape[0], array.shape[-1]):
        raise ValueError(
            f"{name} must be (3, H, W) or (H, W, 3) (or a batch of one), got shape {shape}"
        )
    # A (3, H, 3) array is ambiguous: tensors follow torch's channels-first convention,
    # numpy arrays the PIL / matplotlib channels-last one.
    channels_last = array.shape[-1] == 3 and (array.shape[0] != 3 or isinstance(image, np.ndarray))
    if not channels_last:
        array = array.transpose(1, 2, 0)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if is_integer:
        if array.min() < 0 or array.max() > 255:
            raise ValueError(
                f"integer {name} must hold values in [0, 255], "
                f"got range [{array.min():g}, {array.max():g}]"
            )
        return array / 255.0
    low, high = float(array.min()), float(array.max())
    if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(
            f"float {name} must hold values in [0, 1], got range [{low:g}, {high:g}]; "
            "undo the model's mean/std normalisation before drawing"
        )
    return np.clip(array, 0.0, 1.0)


def _as_map_stack(maps: ArrayLike, name: str) -> np.ndarray:
    """Return ``maps`` as ``(K, h, w)`` float64; accepts (H, W), (K, H, W) and (1, K, H, W)."""
    array = _to_numpy(maps, name)
    shape = tuple(array.shape)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 4:
        if array.shape[0] != 1:
            raise ValueError(
                f"{name} must hold one image's maps, got a batch of shape {shape}; "
                f"pass {name}[i] for image i"
            )
        array = array[0]
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(
            f"{name} must be (K, H, W), (H, W) or (1, K, H, W) with non-empty dims, "
            f"got shape {shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _check_grid(map_hw: tuple[int, int], image_hw: tuple[int, int], name: str) -> None:
    """Raise unless a ``map_hw`` map can be drawn over an ``image_hw`` image."""
    (h, w), (height, width) = map_hw, image_hw
    if h > height or w > width:
        raise ValueError(
            f"{name} spatial size {map_hw} is larger than the image {image_hw}; expected the "
            "image size or the patch grid"
        )
    ratio_h, ratio_w = height / h, width / w
    if abs(ratio_h - ratio_w) > _ASPECT_TOLERANCE * max(ratio_h, ratio_w):
        raise ValueError(
            f"{name} spatial size {map_hw} does not match the image {image_hw}: expected the "
            f"image size or its patch grid (H/h = {ratio_h:.3g} vs W/w = {ratio_w:.3g})"
        )


def _resize(
    maps: np.ndarray, size: tuple[int, int], mode: Literal["bilinear", "nearest"]
) -> np.ndarray:
    """Resize ``(K, h, w)`` maps to ``(K, *size)``; returned as they are when already that size."""
    if maps.shape[-2:] == size:
        return maps
    tensor = torch.from_numpy(maps)[None]
    if mode == "nearest":
        # "nearest-exact" takes the cell under each pixel's centre: the same as DINO's
        # scale_factor=patch_size upsampling when H is a multiple of h, and unbiased otherwise
        # (plain "nearest" floors, drifting towards the top-left).
        return F.interpolate(tensor, size=size, mode="nearest-exact")[0].numpy()
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0].numpy()


def _prepare_maps(maps: ArrayLike, image_hw: tuple[int, int], name: str = "maps") -> np.ndarray:
    """Validate maps and return them as ``(K, H, W)`` float64 at image resolution."""
    stack = _as_map_stack(maps, name)
    _check_grid(stack.shape[-2:], image_hw, name)
    return _resize(stack, image_hw, "bilinear")


def _single(maps: np.ndarray, name: str) -> np.ndarray:
    """Return the only map of a ``(1, H, W)`` stack, or say how to get one."""
    if maps.shape[0] != 1:
        raise ValueError(
            f"{name} must hold a single map, got {maps.shape[0]} maps (shape "
            f"{tuple(maps.shape)}); select a head (maps[k]) or fuse them (maps.mean(0)) first"
        )
    return maps[0]


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Min-max normalise each ``(..., H, W)`` map to ``[0, 1]``; a constant map becomes all 0."""
    low = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - low
    return np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)


def _check_titles(titles: Sequence[str] | None, n: int, default: list[str]) -> list[str]:
    if titles is None:
        return default
    if len(titles) != n:
        raise ValueError(f"titles must have one entry per map ({n}), got {len(titles)}")
    return list(titles)


def _check_alpha(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


# ----------------------------------------------------------------------------------------------
# Figure plumbing
# ----------------------------------------------------------------------------------------------


def _root_figure(ax: Axes) -> Figure:
    """The top-level Figure of ``ax``, also when ``ax`` lives in a (nested) SubFigure."""
    try:
        return ax.get_figure(root=True)
    except TypeError:  # matplotlib < 3.10: no ``root``, and SubFigure.figure is the root
        return ax.figure.figure


def _panels(
    n: int, ncols: int | None, axes: Sequence[Axes] | np.ndarray | None
) -> tuple[Figure, list[Axes]]:
    """Return ``n`` image panels: the caller's ``axes`` or a new grid with spare cells removed."""
    if axes is not None:
        flat = list(np.ravel(np.asarray(axes, dtype=object)))
        if len(flat) != n:
            raise ValueError(f"axes must hold {n} Axes (one per panel), got {len(flat)}")
        return _root_figure(flat[0]), flat
    if ncols is None:
        # Up to 7 panels (image + 6 heads, DINO's figure) stay on one row; beyond that a
        # near-square grid keeps 12- or 16-head models readable.
        ncols = n if n <= 7 else math.ceil(math.sqrt(n))
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(_PANEL_INCHES * ncols, _PANEL_INCHES * nrows), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for spare in grid[n:]:
        fig.delaxes(spare)
    return fig, list(grid[:n])


def _draw_image(ax: Axes, image: np.ndarray, title: str | None) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title, fontsize="medium")


def _draw_heat(
    ax: Axes, image: np.ndarray, heat: np.ndarray, cmap: str, alpha: float, title: str
) -> None:
    """Image with a ``[0, 1]`` heat map on top (``ax.images[1]`` holds ``heat`` exactly)."""
    _draw_image(ax, image, title)
    ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0, interpolation="nearest")


# ----------------------------------------------------------------------------------------------
# Captum bridge
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Image figures
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def _figure_and_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return _root_figure(ax), ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _head_colors(n: int, cmap: str | None) -> np.ndarray:
    """``n`` RGB(A) colours, one per head, that keep neighbouring heads apart."""
    if cmap is None and n <= 10:
        return np.asarray(colormaps["tab10"].colors)[:n]
    if cmap is None and n <= 20:
        # tab20 pairs a dark and a light shade of each hue; taking every other entry first
        # keeps heads h and h + 1 in different hues.
        pairs = np.asarray(colormaps["tab20"].colors)
        return np.concatenate([pairs[0::2], pairs[1::2]])[:n]
    palette = colormaps[cmap or "turbo"]
    if isinstance(palette, ListedColormap) and palette.N <= 20:
        # A qualitative palette: cycle its colours (resampling would repeat neighbours).
        return np.asarray(palette(np.arange(n) % palette.N))
    return palette.resampled(n)(np.arange(n))


def mad_plot(
    distances: ArrayLike,
    *,
    patch_size: int | None = None,
    ax: Axes | None = None,
    cmap: str | None = None,
) -> Figure:
    """Plot mean attention distance against depth, one point per head (ViT paper, Fig. 7).

    Args:
        distances: ``(layers, heads)`` or ``(B, layers, heads)`` (averaged over ``B``) mean
            attention distances in pixels, as returned by ``MeanAttentionDistance``.
        patch_size: if given, a dashed line marks the distance of one patch (in pixels), so
            "local" heads (at or below one patch) stand out.
        ax: an existing Axes to draw into.
        cmap: colormap whose colours tell the heads apart; by default ``tab10`` for up to 10
            heads, ``tab20`` (its 10 dark shades first, then the light ones) for up to 20, and
            ``turbo`` beyond.

    Returns:
        The Figure: x = layer index (0-based, as in ``distances[:, l]``), y = distance in pixels;
        ``ax.collections[h]`` holds head ``h``'s points (``layers`` of them), with a legend.

    Raises:
        ValueError: if ``distances`` is not 2-D/3-D, holds NaN or negative values, or
            ``patch_size`` is not positive.

    Examples:
        >>> import torch
        >>> fig = mad_plot(torch.rand(4, 12, 6) * 64, patch_size=16)
        >>> len(fig.axes[0].collections)
        6
    """
    array = _to_numpy(distances, "distances")
    if array.ndim == 3:
        array = array.mean(axis=0)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(
            "distances must be (layers, heads) or (B, layers, heads), "
            f"got shape {tuple(distances.shape)}"
        )
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError("distances must be finite and non-negative (pixels)")
    if patch_size is not None and patch_size <= 0:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    layers, heads = array.shape
    fig, ax = _figure_and_axes(ax, (5.0, 3.6))
    colors = _head_colors(heads, cmap)
    depth = np.arange(layers)
    for h in range(heads):
        ax.scatter(depth, array[:, h], s=18, color=colors[h], label=f"head {h}")
    if patch_size is not None:
        ax.axhline(patch_size, color="0.4", linestyle="--", linewidth=1)
        ax.annotate(
            f"1 patch = {patch_size} px",
            xy=(0, patch_size),
            xycoords=("axes fraction", "data"),
            xytext=(4, 3),
            textcoords="offset points",
            fontsize="small",
            color="0.3",
        )
    ax.set_xlabel("network depth (layer index)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_xticks(depth if layers <= 16 else depth[:: math.ceil(layers / 12)])
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="x-small", ncols=math.ceil(heads / 8), loc="best", markerscale=0.8)
    return fig


# Axis labels and reading hints per curve kind; deletion wants a fast drop, insertion a fast rise.
_CURVE_TEXT: dict[str, tuple[str, str]] = {
    "deletion": ("fraction of pixels deleted", "Deletion (lower AUC is better)"),
    "insertion": ("fraction of pixels inserted", "Insertion (higher AUC is better)"),
    "perturbation": ("fraction of input perturbed", "Perturbation"),
}


def _trapezoid(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Area under ``y`` over the last axis (``np.trapz`` was renamed in numpy 2)."""
    return ((y[..., 1:] + y[..., :-1]) * 0.5 * np.diff(x)).sum(axis=-1)


def curves_plot(
    curves: Mapping[str, ArrayLike],
    *,
    x: ArrayLike | None = None,
    kind: Literal["deletion", "insertion", "perturbation"] = "deletion",
    ci: float | None = 0.95,
    ax: Axes | None = None,
) -> Figure:
    """Plot deletion / insertion / perturbation curves, one line per method, AUC in the legend.

    Args:
        curves: method name -> ``(steps,)`` curve or ``(B, steps)`` curves of ``B`` images (their
            mean is drawn with a shaded normal-approximation confidence band).
        x: ``(steps,)`` increasing positions of the steps; default ``linspace(0, 1, steps)``
            (fraction perturbed), which makes the AUC a mean score.
        kind: sets the x label and the reading hint in the title.
        ci: confidence level of the band and of the AUC's ``±`` in ``(0, 1)``; ``None`` for none.
        ax: an existing Axes to draw into.

    Returns:
        The Figure; ``ax.lines[i]`` is method ``i``'s mean curve, labelled
        ``"name (AUC a)"`` or ``"name (AUC a ± half-width)"`` for ``B > 1``; one band
        (``ax.collections``) per method with ``B > 1``.

    Raises:
        ValueError: if ``curves`` is empty, a curve is not 1-D/2-D or holds NaNs, ``x`` does not
            match the number of steps or is not increasing, ``kind`` is unknown, or ``ci`` is not
            in ``(0, 1)``.

    Examples:
        >>> import numpy as np
        >>> fig = curves_plot({"rollout": np.linspace(1, 0, 11), "random": np.random.rand(8, 11)})
        >>> fig.axes[0].lines[0].get_label()
        'rollout (AUC 0.500)'
    """
    if len(curves) == 0:
        raise ValueError("curves must hold at least one method's curve, got an empty mapping")
    if kind not in _CURVE_TEXT:
        raise ValueError(f"kind must be one of {sorted(_CURVE_TEXT)}, got {kind!r}")
    if ci is not None and not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1) or None, got {ci}")
    z = NormalDist().inv_cdf(0.5 + ci / 2) if ci is not None else 0.0
    positions = None if x is None else _to_numpy(x, "x")
    if positions is not None and (positions.ndim != 1 or (np.diff(positions) <= 0).any()):
        raise ValueError(
            f"x must be a strictly increasing (steps,) array, got shape {tuple(positions.shape)}"
        )

    fig, ax = _figure_and_axes(ax, (5.0, 3.6))
    for name, values in curves.items():
        label = f"curves[{name!r}]"
        array = _to_numpy(values, label)
        if array.ndim == 1:
            array = array[None]
        if array.ndim != 2 or array.shape[1] < 2:
            raise ValueError(
                f"{label} must be (steps,) or (B, steps) with steps >= 2, "
                f"got shape {tuple(values.shape)}"
            )
        if not np.isfinite(array).all():
            raise ValueError(f"{label} contains NaN or infinite values")
        steps = array.shape[1]
        grid = np.linspace(0.0, 1.0, steps) if positions is None else positions
        if len(grid) != steps:
            raise ValueError(f"x has {len(grid)} positions but {label} has {steps} steps")
        mean = array.mean(axis=0)
        aucs = _trapezoid(array, grid)
        text = f"{name} (AUC {aucs.mean():.3f}"
        if len(array) > 1 and ci is not None:
            # Standard errors of the mean curve and of the mean AUC across images.
            scale = z / math.sqrt(len(array))
            half = scale * array.std(axis=0, ddof=1)
            text += f" ± {scale * aucs.std(ddof=1):.3f}"
        (line,) = ax.plot(grid, mean, label=text + ")")
        if len(array) > 1 and ci is not None:
            ax.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.2)
    xlabel, title = _CURVE_TEXT[kind]
    ax.set_xlabel(xlabel)
    ax.set_ylabel("model score (target class)")
    ax.set_title(title if ci is None else f"{title}; bands: {ci:.0%} CI", fontsize="medium")
    ax.legend(fontsize="small")
    return fig


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Write ``fig`` as a PNG (creating parent folders) and close it.

    Args:
        fig: the Figure to save (any of this module's, or one from pyplot).
        path: destination; must end in ``.png`` (a missing suffix is added).
        dpi: resolution in dots per inch.

    Returns:
        The path written, as a :class:`pathlib.Path`.

    Raises:
        ValueError: if ``path`` has a suffix other than ``.png`` or ``dpi`` is not positive.

    Examples:
        >>> import tempfile, torch
        >>> fig = head_grid(torch.rand(3, 32, 32), torch.rand(2, 4, 4))
        >>> save_figure(fig, tempfile.mkdtemp() + "/heads.png").suffix
        '.png'
    """
    target = Path(path)
    if target.suffix == "":
        target = target.with_suffix(".png")
    if target.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    if dpi <= 0:
        raise ValueError(f"dpi must be positive, got {dpi}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(target, format="png", dpi=dpi)
    finally:
        # Only figures made through pyplot are registered with it; ours are not, and importing
        # pyplot for them would pick a backend as a side effect.
        if fig.canvas.manager is not None:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return target
