"""Plots: mean attention distance per head and deletion / insertion curves."""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from attnexplain.viz._common import (
    ArrayLike,
    _root_figure,
    _to_numpy,
)


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
