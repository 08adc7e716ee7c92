"""Gradient-weighted attention rollout (Chefer, Gur & Wolf 2021)."""

from __future__ import annotations

import torch
from torch import nn

from attnexplain.capture import FullAttentionProbe, ModelAdapter, TokenLayout, capture_attention
from attnexplain.methods._checks import check_layer, require_cls_token
from attnexplain.methods._gradients import explaining, gradients, target_score
from attnexplain.methods.base import Interpolation, MapAttribution, Target, patch_tokens_to_grid


class GradientWeightedRollout(MapAttribution):
    r"""Attention weighted by its gradient, propagated through the layers: a class-specific map.

    Chefer, Gur & Wolf 2021, *Generic Attention-model Explainability for Interpreting Bi-Modal
    and Encoder-Decoder Transformers* (hila-chefer/Transformer-MM-Explainability, the ViT
    notebook's ``generate_relevance``). For each layer :math:`l \ge s` (``start_layer``) with
    attention probabilities :math:`A^{(l)} \in \mathbb{R}^{B \times H \times N \times N}` and the
    gradient :math:`\nabla A^{(l)} = \partial y_t / \partial A^{(l)}` of each sample's target
    logit :math:`y_t`:

    .. math::
        \bar A^{(l)} = \mathbb{E}_h\big[(\nabla A^{(l)} \odot A^{(l)})^+\big], \qquad
        R \leftarrow R + \bar A^{(l)} R, \quad R = I \text{ initially},

    so :math:`R = (I + \bar A^{(L-1)}) \cdots (I + \bar A^{(s)})`. The map is the CLS row of
    :math:`R` over the patch tokens, unscaled. Only that row is formed, multiplied through the
    layers from the last down (:math:`O(L N^2)` per sample rather than :math:`O(L N^3)`).

    The attention is captured once with its autograd graph, also from default-loaded models
    (SDPA / fused kernels); the model runs in evaluation mode (restored afterwards) and only the
    attention probabilities are differentiated: no parameter ``.grad`` is ever written.

    Args:
        model: any supported vision transformer with a CLS token and a classification head (or
            its adapter).
        start_layer: first layer of the product (negative counts from the end).
        interpolation: resize mode for ``upsample=True``.

    Shapes:
        ``attribute(x, target)`` on ``(B, C, H, W)`` returns ``(B, 1, H, W)`` (``(B, 1, h, w)``
        with ``upsample=False``).

    Raises:
        TypeError, ValueError: for a bad ``start_layer``; at ``attribute``, for invalid targets.
        UnsupportedModelError: for a model without a CLS token; at ``attribute``, for a model
            without a classification head or whose attention is read as a copy outside the
            autograd graph: an ``nn.MultiheadAttention`` used with masks, ``bias_k`` /
            ``bias_v`` or separate projections returns per-head weights its output is not
            computed from. torchvision's ViT (plain self-attention) is served by the capture's
            own kernel and works.

    Examples:
        >>> maps = GradientWeightedRollout(model).attribute(x, target=[1, 3])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module | ModelAdapter,
        *,
        start_layer: int = 0,
        interpolation: Interpolation = "bilinear",
    ) -> None:
        super().__init__(model, interpolation=interpolation)
        self.start_layer = check_layer(start_layer, self.adapter, "start_layer")
        self.cls_index = require_cls_token(self.adapter, type(self).__name__)

    def patch_maps(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, TokenLayout]:
        layers = list(range(self.start_layer, self.adapter.num_layers))
        probe = FullAttentionProbe(layers, requires_grad=True)
        with explaining(self.model, inputs) as x:
            result = capture_attention(self.adapter, probe, x)
            score = target_score(self, result.output, target)
            attentions = [probe.attentions.pop(layer) for layer in layers]
            grads = gradients(score, attentions, f"attention probabilities of layers {layers}")
        weights = [
            (grad * attention.detach()).clamp_min(0).mean(dim=1)  # (B, N, N)
            for attention, grad in zip(attentions, grads)
        ]
        row = cls_rollout(weights, self.cls_index)
        return patch_tokens_to_grid(row, result.layout), result.layout


def cls_rollout(weights: list[torch.Tensor], cls_index: int) -> torch.Tensor:
    """The CLS row of ``(I + W_L) ⋯ (I + W_s)``, the product left unnormalised.

    The row is multiplied through from the last layer down, so only ``(B, 1, N)`` vectors are
    formed (Chefer et al.'s ``compute_rollout_attention`` and ``generate_relevance`` add the
    identity without renormalising the rows).

    Args:
        weights: ``(B, N, N)`` per layer, first to last.
        cls_index: the CLS token's position.

    Returns:
        ``(B, 1, N)``.
    """
    batch, num_tokens, _ = weights[0].shape
    row = weights[0].new_zeros(batch, 1, num_tokens)
    row[..., cls_index] = 1.0
    for weight in reversed(weights):
        row = row + torch.bmm(row, weight)
    return row
