"""Input checks and figure plumbing shared by every figure in :mod:`attnexplain.viz`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure

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
