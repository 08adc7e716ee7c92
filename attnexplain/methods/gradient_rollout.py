"""Gradient-weighted attention rollout (Chefer, Gur & Wolf 2021)."""

from __future__ import annotations

import torch
from torch import nn

from attnexplain.capture import FullAttentionProbe, ModelAdapter, TokenLayout, capture_attention
from attnexplain.methods._checks import check_layer, pooling_rows, readout_cls_index
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

    **Pooling heads** (SigLIP, timm ``global_pool="map"``, OpenCLIP's attentional pooler): the
    pooled output is read by a learned query's attention :math:`P` over the last layer's tokens,
    so the head is one more layer, mapping the tokens to the query, without identity (the query
    is not a token and has no residual path to them): the map is
    :math:`r R` with :math:`r = \mathbb{E}_h[(\nabla P \odot P)^+]`, averaged over the queries
    forming the pooled output.

    The attention is captured once with its autograd graph, also from default-loaded models
    (SDPA / fused kernels); the model runs in evaluation mode (restored afterwards) and only the
    attention probabilities are differentiated: no parameter ``.grad`` is ever written.

    Args:
        model: any supported vision transformer with a CLS token or a pooling head, and a
            target to score (a classification head, a text tower, an embedding; or its adapter).
        start_layer: first layer of the product (negative counts from the end).
        interpolation: resize mode for ``upsample=True``.

    Shapes:
        ``attribute(x, target)`` on ``(B, C, H, W)`` returns ``(B, 1, H, W)`` (``(B, 1, h, w)``
        with ``upsample=False``).

    Raises:
        TypeError, ValueError: for a bad ``start_layer``; at ``attribute``, for invalid targets.
        UnsupportedModelError: for a model without a CLS token or pooling head; at
            ``attribute``, for a model without what the target reads, or whose attention is read
            as a copy outside the autograd graph: an ``nn.MultiheadAttention`` used with masks,
            ``bias_k`` / ``bias_v`` or separate projections returns per-head weights its output
            is not computed from. torchvision's ViT (plain self-attention) is served by the
            capture's own kernel and works.

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
        self.cls_index = readout_cls_index(self.adapter, type(self).__name__)

    def patch_maps(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, TokenLayout]:
        layers = list(range(self.start_layer, self.adapter.num_layers))
        probe = FullAttentionProbe(layers, requires_grad=True)
        pooled = self.cls_index is None
        with explaining(self.model, inputs) as x:
            result = capture_attention(self.adapter, probe, x, pooling=pooled)
            score = target_score(self, result.output, target)
            attentions = [probe.attentions.pop(layer) for layer in layers]
            pooling = [result.pooling] if pooled else []
            what = f"attention probabilities of layers {layers}"
            what += " and of the pooling head" if pooled else ""
            grads = gradients(score, [*attentions, *pooling], what)
        if pooled:
            grad = grads.pop()
            weighted = (grad * result.pooling.detach()).clamp_min(0)  # (B, heads, Q, N)
            start = pooling_rows(weighted, self.adapter.pooling_head).mean(dim=1, keepdim=True)
        else:
            start = cls_row(attentions[0], self.cls_index)
        weights = [
            (grad * attention.detach()).clamp_min(0).mean(dim=1)  # (B, N, N)
            for attention, grad in zip(attentions, grads)
        ]
        row = rollout_row(start, weights)
        return patch_tokens_to_grid(row, result.layout), result.layout


def cls_row(like: torch.Tensor, cls_index: int) -> torch.Tensor:
    """The one-hot row of the CLS token, ``(B, 1, N)``, for ``like`` shaped ``(B, ..., N)``."""
    row = like.new_zeros(like.shape[0], 1, like.shape[-1])
    row[..., cls_index] = 1.0
    return row


def rollout_row(start: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """The row ``start · (I + W_L) ⋯ (I + W_s)``, the product left unnormalised.

    The row is multiplied through from the last layer down, so only ``(B, 1, N)`` vectors are
    formed (Chefer et al.'s ``compute_rollout_attention`` and ``generate_relevance`` add the
    identity without renormalising the rows).

    Args:
        start: ``(B, 1, N)``: the CLS token's one-hot row (:func:`cls_row`), or the pooling
            head's query row for models read through one.
        weights: ``(B, N, N)`` per layer, first to last.

    Returns:
        ``(B, 1, N)``.
    """
    row = start
    for weight in reversed(weights):
        row = row + torch.bmm(row, weight)
    return row
