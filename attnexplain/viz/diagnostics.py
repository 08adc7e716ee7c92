"""Figures of the artifact diagnostics, after Darcet et al. 2024 (Figs. 2–4).

- :func:`norm_histograms`: the distribution of token norms per layer on a log scale (Fig. 4a),
  with the tokens flagged at the detection layer drawn apart in every layer, so one sees where
  they become high-norm;
- :func:`artifact_overlay`: for one image, the map of token norms and the raw attention map
  with the detected positions outlined (Figs. 2–3), optionally next to a cleaned map;
- :func:`artifact_scores_plot`: the artifact score (and register share) per layer and head.

They read an :class:`~attnexplain.diagnostics.ArtifactReport` and return a
:class:`~matplotlib.figure.Figure` built without pyplot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator

from attnexplain.diagnostics import ArtifactReport
from attnexplain.viz._common import (
    ArrayLike,
    _as_map_stack,
    _draw_heat,
    _draw_image,
    _normalise,
    _panels,
    _prepare_image,
    _prepare_maps,
    _resize,
    _root_figure,
    _single,
)

#: Most layer panels drawn by default (evenly spaced, the detection layer always included).
MAX_DEFAULT_LAYERS = 12
_FLAGGED_COLOR = "tab:red"
_PATCH_COLOR = "0.55"
_REGISTER_COLOR = "tab:blue"
_CLS_COLOR = "tab:green"
_PLAIN = FuncFormatter(lambda value, _position: f"{value:g}")


def _default_layers(report: ArtifactReport) -> list[int]:
    count = report.norms.shape[1]
    if count <= MAX_DEFAULT_LAYERS:
        return list(range(count))
    chosen = {round(i * (count - 1) / (MAX_DEFAULT_LAYERS - 1)) for i in range(MAX_DEFAULT_LAYERS)}
    return sorted(chosen | {report.layer})


def _check_index(report: ArtifactReport, index: int) -> None:
    batch = report.norms.shape[0]
    if not -batch <= index < batch:
        raise ValueError(f"index {index} is out of range for a report of {batch} images")


def norm_histograms(
    report: ArtifactReport,
    *,
    layers: Sequence[int] | None = None,
    bins: int = 40,
    ncols: int | None = None,
    axes: Sequence[Axes] | np.ndarray | None = None,
) -> Figure:
    """Histogram of the patch-token norms of every image, one panel per layer, log-log.

    Bins are log-spaced over all the norms shown; counts are on a log axis so a few outliers
    stay visible next to thousands of ordinary tokens. In every panel the tokens flagged at the
    detection layer are stacked in red on the others (grey); CLS (green) and register (blue)
    norms are marked as ticks along the bottom; the detection layer's panel draws each image's
    finite threshold as a dashed line.

    Args:
        report: what :meth:`~attnexplain.diagnostics.ArtifactDiagnostics.diagnose` returned.
        layers: layers to draw (0-based); default all, or 12 evenly spaced for deeper models.
        bins: number of log-spaced bins.
        ncols: panels per row (default up to 4).
        axes: one existing Axes per layer.

    Returns:
        The Figure; panel ``i`` draws ``layers[i]`` with x = norm, y = token count.

    Raises:
        ValueError: for a layer out of range, fewer than 2 bins or a wrong number of axes.

    Examples:
        >>> fig = norm_histograms(report)  # doctest: +SKIP
    """
    count = report.norms.shape[1]
    chosen = _default_layers(report) if layers is None else [int(layer) for layer in layers]
    for layer in chosen:
        if not -count <= layer < count:
            raise ValueError(f"layer {layer} is out of range for a model with {count} layers")
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    chosen = [layer % count for layer in chosen]
    if axes is None:
        columns = min(ncols or 4, len(chosen))
        rows = math.ceil(len(chosen) / columns)
        fig = Figure(figsize=(3.0 * columns, 2.3 * rows), layout="constrained")
        grid = fig.subplots(rows, columns, squeeze=False).ravel()
        for spare in grid[len(chosen) :]:
            fig.delaxes(spare)
        panels = list(grid[: len(chosen)])
    else:
        panels = list(np.ravel(np.asarray(axes, dtype=object)))
        if len(panels) != len(chosen):
            raise ValueError(
                f"axes must hold {len(chosen)} Axes (one per layer), got {len(panels)}"
            )
        fig = _root_figure(panels[0])

    norms = report.norms.double().cpu().numpy()  # (B, L, N)
    prefix = report.layout.num_prefix_tokens
    flagged = report.high_norm.cpu().numpy()[:, prefix:]
    shown = norms[:, chosen, prefix:]
    edges = np.geomspace(max(shown.min(), 1e-12), shown.max() * 1.0001 + 1e-12, bins + 1)
    for ax, layer in zip(panels, chosen):
        patches = norms[:, layer, prefix:]
        ax.hist(
            [patches[~flagged], patches[flagged]], bins=edges, stacked=True, log=True,
            color=[_PATCH_COLOR, _FLAGGED_COLOR], label=["patch tokens", "high-norm (detected)"],
        )  # fmt: skip
        cls = report.layout.cls_index
        special = [(cls, _CLS_COLOR, "CLS")] if cls is not None else []
        special += [(token, _REGISTER_COLOR, "registers") for token in report.registers]
        for token, color, label in special:
            ax.plot(norms[:, layer, token], np.full(norms.shape[0], 0.6), "|", color=color,
                    markersize=10, markeredgewidth=1.5, label=label)  # fmt: skip
        if layer == report.layer:
            for threshold in {float(t) for t in report.thresholds if math.isfinite(float(t))}:
                ax.axvline(threshold, color="0.2", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        # Plain labels at 1, 2, 5 x 10^k: readable over a narrow range, never overlapping.
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.xaxis.set_minor_formatter(_PLAIN)
        ax.set_ylim(bottom=0.5)
        ax.set_title(f"layer {layer}" + (" (detection)" if layer == report.layer else ""),
                     fontsize="medium")  # fmt: skip
        ax.tick_params(labelsize="small")
    panels[0].set_ylabel("tokens")
    panels[-1].set_xlabel("L2 norm of the block output")
    handles, labels = panels[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # one "registers" entry, not one per register
    panels[0].legend(unique.values(), unique.keys(), fontsize="x-small", loc="upper right")
    return fig


def _outline_patches(ax: Axes, positions: list[tuple[int, int]], cell: tuple[float, float]):
    for row, col in positions:
        ax.add_patch(Rectangle((col * cell[1] - 0.5, row * cell[0] - 0.5), cell[1], cell[0],
                               fill=False, edgecolor="cyan", linewidth=1.6))  # fmt: skip


def artifact_overlay(
    image: ArrayLike,
    report: ArtifactReport,
    index: int = 0,
    *,
    stage: int = -1,
    cleaned: ArrayLike | None = None,
    cmap: str = "inferno",
    alpha: float = 0.65,
    axes: Sequence[Axes] | np.ndarray | None = None,
) -> Figure:
    """One image: its token-norm map and its raw attention map, detected tokens outlined.

    Panels: the image; the patch-token norms at the detection layer; the query's attention at
    ``stage`` (head mean) over the patches; and, if ``cleaned`` is given, that map too (e.g.
    ``RawCLSAttention(model, exclude_tokens=...)``, the high-norm tokens left out). Each map is
    min-max normalised for display, the norms drawn patch by patch (nearest), the attention
    bilinearly; the high-norm patches are outlined in cyan.

    Args:
        image: ``(3, H, W)`` float in ``[0, 1]`` or ``(H, W, 3)`` float/uint8: the picture the
            model saw (its input size, not normalised).
        report: the diagnostics of a batch holding this image.
        index: the image's position in the batch.
        stage: which stage of the query's attention to draw (default: the last layer).
        cleaned: a single ``(H, W)`` / ``(1, h, w)`` / ``(1, 1, h, w)`` map to draw last.
        cmap: colormap of the maps.
        alpha: opacity of the maps in ``[0, 1]``.
        axes: existing Axes, one per panel.

    Returns:
        The Figure; ``fig.axes[k].images[1]`` holds panel ``k``'s normalised map and each map
        panel has one outline (``ax.patches``) per detected token.

    Raises:
        ValueError: for an ``index`` out of range or a map that does not match the image.
    """
    _check_index(report, index)
    picture = _prepare_image(image)
    size = picture.shape[:2]
    maps = {f"token norms, layer {report.layer}": report.norm_maps()[index]}
    if report.query_rows is not None:
        attention = report.attention_maps(stage)[index].mean(dim=0, keepdim=True)
        maps[f"{report.query} attention, {report.stage_names[stage]}"] = attention
    if cleaned is not None:
        maps["cleaned"] = cleaned
    heats = {
        title: _normalise(_single(_prepare_maps(value, size, name), name))
        for (title, value), name in zip(maps.items(), ("norm map", "attention", "cleaned"))
    }
    norm_title = next(iter(maps))
    norm_grid = _as_map_stack(maps[norm_title], "norm map")
    heats[norm_title] = _normalise(_resize(norm_grid, size, "nearest"))[0]
    fig, panels = _panels(len(heats) + 1, None, axes)
    positions = report.positions(index)
    _draw_image(panels[0], picture, f"image ({len(positions)} high-norm tokens)")
    grid = report.layout.grid
    cell = (size[0] / grid[0], size[1] / grid[1])
    for ax, (title, heat) in zip(panels[1:], heats.items()):
        _draw_heat(ax, picture, heat, cmap, alpha, title)
        _outline_patches(ax, positions, cell)
    return fig


def artifact_scores_plot(
    report: ArtifactReport, *, axes: Sequence[Axes] | np.ndarray | None = None
) -> Figure:
    """Mean artifact score (and register share) over the batch, per layer and head.

    Args:
        report: diagnostics with a measured query (a model with a CLS token, or a given query).
        axes: existing Axes: 1, or 2 when the model has registers.

    Returns:
        The Figure: one heat map per share, x = head, y = stage, colour = share of the query's
        attention (0 to 1) with its value written in each cell.

    Raises:
        ValueError: when the report measured no attention, or ``axes`` has the wrong length.
    """
    shares = {"share on high-norm tokens": report.artifact_share}
    if shares["share on high-norm tokens"] is None:
        raise ValueError("the report measured no attention (model without CLS token or query)")
    if report.register_share is not None:
        shares["share on registers"] = report.register_share
    stages, heads = report.query_rows.shape[1:3]
    if axes is None:
        fig = Figure(figsize=(1.2 + 0.55 * heads * len(shares), 1.0 + 0.3 * stages + 0.6),
                     layout="constrained")  # fmt: skip
        panels = list(fig.subplots(1, len(shares), squeeze=False).ravel())
    else:
        panels = list(np.ravel(np.asarray(axes, dtype=object)))
        if len(panels) != len(shares):
            raise ValueError(f"axes must hold {len(shares)} Axes, got {len(panels)}")
        fig = _root_figure(panels[0])
    for ax, (title, share) in zip(panels, shares.items()):
        mean = share.double().mean(dim=0).cpu().numpy()  # (stages, heads)
        image = ax.imshow(mean, vmin=0.0, vmax=1.0, cmap="magma", aspect="auto")
        if stages * heads <= 400:
            for (s, h), value in np.ndenumerate(mean):
                ax.text(h, s, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if value < 0.6 else "black")  # fmt: skip
        ax.set_xticks(range(heads))
        ax.set_yticks(range(stages), [name.replace("layer ", "") for name in report.stage_names])
        ax.set_xlabel("head")
        ax.set_title(title, fontsize="medium")
    panels[0].set_ylabel(f"{report.query} query, layer")
    fig.colorbar(image, ax=panels, shrink=0.8, label="attention share")
    return fig
