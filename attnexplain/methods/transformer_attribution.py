"""Transformer Attribution (Chefer, Gur & Wolf, CVPR 2021)."""

from __future__ import annotations

import torch
from torch import nn

from attnexplain.capture import ModelAdapter, TokenLayout
from attnexplain.methods._checks import require_cls_token
from attnexplain.methods._relevance import traced_relevance
from attnexplain.methods.base import Interpolation, Target, patch_tokens_to_grid
from attnexplain.methods.gradient_rollout import GradientWeightedRollout, cls_row, rollout_row
from attnexplain.relevance import CHEFER_RULES


class TransformerAttribution(GradientWeightedRollout):
    r"""LRP relevance of the attention, weighted by its gradient and rolled out over the layers.

    Chefer, Gur & Wolf 2021, *Transformer Interpretability Beyond Attention Visualization*
    (CVPR), with the rules of their released code (hila-chefer/Transformer-Explainability,
    ``modules/layers_ours.py`` on ``baselines/ViT/ViT_LRP.py``; see
    :data:`~attnexplain.relevance.CHEFER_RULES`). Relevance starts at 1 on each sample's target
    logit (their one-hot vector) and is propagated to every layer's attention probabilities
    :math:`A^{(l)}`, giving :math:`R^{(l)}` (each operand of the attention matmuls receives half);
    with the gradient :math:`\nabla A^{(l)} = \partial y_t / \partial A^{(l)}`:

    .. math::
        \bar A^{(l)} = \mathbb{E}_h\big[(\nabla A^{(l)} \odot R^{(l)})^+\big], \qquad
        C = (I + \bar A^{(L-1)}) \cdots (I + \bar A^{(s)}),

    and the map is the CLS row of :math:`C` over the patch tokens, unscaled (the identity is
    added without renormalising the rows, as their ``compute_rollout_attention`` does): the
    gradient-weighted rollout with the relevance :math:`R^{(l)}` in place of :math:`A^{(l)}`. One
    forward serves both backward passes: the gradient and the relevance come from the same graph.

    The paper's tables run ``start_layer=1`` (``imagenet_seg_eval.py``,
    ``generate_visualizations.py``), the default here; their functions default to 0.

    Args:
        model: any supported vision transformer with a CLS token and a classification head (or
            its adapter).
        start_layer: first layer of the product :math:`s` (negative counts from the end).
        interpolation: resize mode for ``upsample=True``.

    Shapes:
        ``attribute(x, target)`` on ``(B, C, H, W)`` returns ``(B, 1, H, W)`` (``(B, 1, h, w)``
        with ``upsample=False``); non-negative.

    Raises:
        TypeError, ValueError: for a bad ``start_layer``; at ``attribute``, for invalid targets
            or half-precision inputs on the CPU.
        UnsupportedModelError: for a model without a CLS token; at ``attribute``, for a model
            without a classification head or running an op no relevance rule covers.

    Examples:
        >>> maps = TransformerAttribution(model).attribute(x, target=[1, 3])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | ModelAdapter,
        *,
        start_layer: int = 1,
        interpolation: Interpolation = "bilinear",
    ) -> None:
        super().__init__(model, start_layer=start_layer, interpolation=interpolation)
        # The relevance rules cover the encoder's attention, not a pooling head's query.
        self.cls_index = require_cls_token(self.adapter, type(self).__name__)

    def patch_maps(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, TokenLayout]:
        layers = list(range(self.start_layer, self.adapter.num_layers))
        relevance, grads, trace = traced_relevance(
            self, CHEFER_RULES, inputs, target, layers, gradients_too=True
        )
        weights = [
            (grad * rel).clamp(min=0).mean(dim=1)
            for grad, rel in zip(grads, relevance)  # type: ignore[arg-type]
        ]
        row = rollout_row(cls_row(weights[0], self.cls_index), weights)
        return patch_tokens_to_grid(row, trace.layout), trace.layout
