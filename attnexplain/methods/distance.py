"""Mean attention distance (Dosovitskiy et al. 2021, the ViT paper, Fig. 7)."""

from __future__ import annotations

import torch
from torch import nn

from attnexplain.capture import AttentionDistanceProbe, ModelAdapter, capture_attention
from attnexplain.methods._checks import check_bool
from attnexplain.methods.base import Target, ViTAttribution


class MeanAttentionDistance(ViTAttribution):
    r"""Attention-weighted pixel distance per layer and head.

    The ViT paper's analysis as coded in the founding document (All Things ViTs,
    ``compute_mean_attention_dist``): with prefix tokens dropped on both axes,

    .. math:: \mathrm{MAD}_{l,h} = \frac{1}{P} \sum_{q=1}^{P} \sum_{k=1}^{P}
              A^{(l)}_{h,q,k}\; d(q, k),

    where :math:`d(q, k)` is the patch size times the Euclidean distance between patches
    :math:`q` and :math:`k` on the grid and :math:`P` the number of patches. The rows are *not*
    renormalised after dropping prefix keys (the founding definition); ``renormalize=True``
    rescales each patch-to-patch row to sum 1 first. Each layer is reduced while its attention
    streams; no attention matrix is stored.

    Args:
        model: any supported vision transformer (or its adapter); no CLS token needed.
        renormalize: renormalise patch-to-patch rows before weighting.

    Raises:
        TypeError: if ``renormalize`` is not a bool.

    Shapes:
        ``attribute(x)`` on ``(B, C, H, W)`` returns ``(B, layers, heads)`` in pixels.

    Examples:
        >>> distances = MeanAttentionDistance(model).attribute(x)  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module | ModelAdapter, *, renormalize: bool = False) -> None:
        super().__init__(model)
        self.renormalize = check_bool(renormalize, "renormalize")

    def attribute(self, inputs: torch.Tensor, target: Target = None) -> torch.Tensor:
        """Mean attention distance of every layer and head.

        Args:
            inputs: ``(B, C, H, W)`` batch.
            target: unused (the distance does not depend on a class).

        Returns:
            ``(B, layers, heads)`` float32 distances in pixels.

        Raises:
            TypeError, ValueError: for invalid inputs.
        """
        inputs = self.validate_inputs(inputs)
        probe = AttentionDistanceProbe(self.renormalize)
        with torch.no_grad():
            layout = capture_attention(self.adapter, probe, inputs).layout
        sums = torch.stack([probe.sums[layer] for layer in range(self.adapter.num_layers)], dim=1)
        return sums / layout.num_patches
