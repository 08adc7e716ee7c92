"""The LRP baselines of Chefer et al.'s table: full LRP to the pixels, and partial LRP."""

from __future__ import annotations

import torch
from torch import nn

from attnexplain.capture import ModelAdapter, TokenLayout
from attnexplain.methods._checks import require_cls_token
from attnexplain.methods._relevance import PixelRelevance, traced_relevance
from attnexplain.methods.base import Interpolation, MapAttribution, Target, patch_tokens_to_grid
from attnexplain.relevance import CHEFER_BASELINE_RULES


class LRP(PixelRelevance):
    r"""Layer-wise relevance propagation to the pixels, summed over the colour channels.

    Bach et al. 2015, as the "LRP" row of Chefer, Gur & Wolf 2021 (CVPR) Table 1 computes it:
    ``generate_LRP(method="full")`` on ``baselines/ViT/ViT_orig_LRP.py`` with the rules of
    ``modules/layers_lrp.py`` (:data:`~attnexplain.relevance.CHEFER_BASELINE_RULES`): α1β0 on
    linear layers, each half divided by itself; z^B on the patch embedding; proportional
    splits at additions; each operand of the attention matmuls halved; softmax, LayerNorm and
    GELU passing relevance on. Relevance starts at 1 on each sample's target logit. The
    position embedding and the CLS token keep the relevance they receive.

    The relevance is signed and not conserved (the α1β0 halves each take the whole relevance
    of their output; the reference code does the same), so only its spatial pattern means
    anything: viz and metrics normalise each map.

    Args:
        model: any supported vision transformer with a classification head (or its adapter).

    Shapes:
        ``attribute(x, target)`` on ``(B, C, H, W)`` returns ``(B, 1, H, W)``; with
        ``upsample=False`` each patch's sum, ``(B, 1, h, w)``.

    Raises:
        TypeError: if ``model`` is not a module.
        UnsupportedModelError: if the model has no attention this library can read; at
            ``attribute``, without a classification head or for an op no rule covers.

    Examples:
        >>> maps = LRP(model).attribute(x, target=[1, 3])  # (2, 1, H, W)  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module | ModelAdapter) -> None:
        super().__init__(model)
        self.rules = CHEFER_BASELINE_RULES


class PartialLRP(MapAttribution):
    r"""Relevance of the last layer's attention probabilities (Voita et al. 2019).

    The "partial LRP" row of Chefer, Gur & Wolf 2021 (CVPR) Table 1:
    ``generate_LRP(method="last_layer")`` on ``ViT_orig_LRP.py``, i.e. relevance propagated
    with :data:`~attnexplain.relevance.CHEFER_BASELINE_RULES` from 1 on the target logit to the
    last layer's attention :math:`A^{(L-1)}`, giving :math:`R^{(L-1)}`; the map is the CLS row
    of :math:`\mathbb{E}_h[(R^{(L-1)})^+]` over the patch tokens, unscaled.

    Args:
        model: any supported vision transformer with a CLS token and a classification head.
        interpolation: resize mode for ``upsample=True``.

    Shapes:
        ``attribute(x, target)`` on ``(B, C, H, W)`` returns ``(B, 1, H, W)`` (``(B, 1, h, w)``
        with ``upsample=False``); non-negative.

    Raises:
        UnsupportedModelError: for a model without a CLS token; at ``attribute``, without a
            classification head or for an op no rule covers.
        TypeError, ValueError: at ``attribute``, for invalid targets.

    Examples:
        >>> maps = PartialLRP(model).attribute(x, target=0)  # doctest: +SKIP
    """

    def __init__(
        self, model: nn.Module | ModelAdapter, *, interpolation: Interpolation = "bilinear"
    ) -> None:
        super().__init__(model, interpolation=interpolation)
        self.cls_index = require_cls_token(self.adapter, type(self).__name__)

    def patch_maps(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, TokenLayout]:
        last = self.adapter.num_layers - 1
        (relevance,), _, trace = traced_relevance(
            self, CHEFER_BASELINE_RULES, inputs, target, [last]
        )
        cls = self.cls_index
        row = relevance[:, :, cls : cls + 1].clamp(min=0).mean(dim=1)  # (B, 1, N)
        return patch_tokens_to_grid(row, trace.layout), trace.layout
