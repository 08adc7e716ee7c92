"""Figures for attention maps: head grids, DINO masks, method comparisons, per-layer grids, MAD
and curves.

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

from attnexplain.viz.captum import image_to_captum, to_captum
from attnexplain.viz.diagnostics import artifact_overlay, artifact_scores_plot, norm_histograms
from attnexplain.viz.layers import layer_grid
from attnexplain.viz.output import save_figure
from attnexplain.viz.overlays import compare_overlays, head_grid, mass_threshold_overlay
from attnexplain.viz.plots import curves_plot, mad_plot

__all__ = [
    "artifact_overlay",
    "artifact_scores_plot",
    "compare_overlays",
    "curves_plot",
    "head_grid",
    "image_to_captum",
    "layer_grid",
    "mad_plot",
    "mass_threshold_overlay",
    "norm_histograms",
    "save_figure",
    "to_captum",
]
