"""LeGrad (Bousselham et al.): the gradient of each layer's own score w.r.t. its attention."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from attnexplain.capture import FullAttentionProbe, ModelAdapter, TokenLayout, capture_attention
from attnexplain.methods._checks import check_layer
from attnexplain.methods._gradients import explaining, gradients, target_score
from attnexplain.methods.base import Interpolation, MapAttribution, Target, patch_tokens_to_grid


@contextmanager
def _block_outputs(blocks: list[nn.Module], layers: list[int]) -> Iterator[dict[int, Any]]:
    """Record the output tokens of the chosen blocks for one forward; hooks removed after."""
    outputs: dict[int, Any] = {}

    def recorder(layer: int):
        def record(_module: nn.Module, _args: Any, output: Any) -> None:
            outputs[layer] = output[0] if isinstance(output, tuple | list) else output

        return record

    handles = [blocks[layer].register_forward_hook(recorder(layer)) for layer in layers]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


class LeGrad(MapAttribution):
    r"""LeGrad: how sensitive each layer's own prediction is to that layer's attention.

    Bousselham, Boggust, Chaybouti, Strobelt & Kuehne, *LeGrad: An Explainability Method for
    Vision Transformers via Feature Formation Sensitivity* (ICCV 2025; WalBouss/LeGrad). For
    every layer :math:`l \ge s` (``start_layer``) with output tokens :math:`Z^{(l)}` and
    attention probabilities :math:`A^{(l)} \in \mathbb{R}^{B \times H \times N \times N}`, the
    layer's score is the target read out of *its* tokens by the model's own final norm, pooling
    and head, :math:`y^{(l)} = f_{\mathrm{head}}(Z^{(l)})_t` (so :math:`y^{(L-1)}` is the model's
    own target logit); then

    .. math::
        E^{(l)}_j = \frac{1}{H N} \sum_{h} \sum_{i}
            \mathrm{ReLU}\Big(\frac{\partial y^{(l)}}{\partial A^{(l)}_{h,i,j}}\Big), \qquad
        E = \frac{1}{L - s} \sum_{l \ge s} E^{(l)},

    the positive gradient averaged over heads and over every query row (prefix tokens
    included), and the map is :math:`E` over the patch keys (the prefix keys dropped), unscaled:
    the paper's final min-max normalisation is left to display (viz) and the metrics. Attention
    values are not multiplied in.

    Each :math:`y^{(l)}` depends on :math:`A^{(l)}` through block :math:`l` only, so one capture
    (attention kept in the autograd graph) and one short backward per layer give every term; the
    model runs in evaluation mode (restored afterwards) and no parameter ``.grad`` is written.
    The readout is the adapter's (:meth:`~attnexplain.capture.ModelAdapter.readout`); custom
    modules pass it as ``CustomAdapter(model, readout=...)``.

    Args:
        model: any supported vision transformer whose output holds the target's score (a
            classification head), or its adapter.
        start_layer: first layer averaged (negative counts from the end); the reference code's
            OpenCLIP default ``layer_index=-2`` averages the last two layers.
        interpolation: resize mode for ``upsample=True``.

    Shapes:
        ``attribute(x, target)`` on ``(B, C, H, W)`` returns ``(B, 1, H, W)`` (``(B, 1, h, w)``
        with ``upsample=False``).

    Raises:
        TypeError, ValueError: for a bad ``start_layer``; at ``attribute``, for invalid targets.
        UnsupportedModelError: at ``attribute``, for a model without a classification head (a
            backbone has no score to explain), or a custom module without a readout.

    Examples:
        >>> maps = LeGrad(model).attribute(x, target=[1, 3])  # doctest: +SKIP
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

    def patch_maps(self, inputs: torch.Tensor, target: Target) -> tuple[torch.Tensor, TokenLayout]:
        layers = list(range(self.start_layer, self.adapter.num_layers))
        probe = FullAttentionProbe(layers, requires_grad=True)
        with explaining(self.model, inputs) as x:
            with _block_outputs(self.adapter.blocks, layers) as tokens:
                result = capture_attention(self.adapter, probe, x)
            if target is None:  # every layer explains the model's own prediction
                logits = self.adapter.logits(result.output).detach()
                target = self.validate_target(None, logits.shape[0], logits)
            relevance = None
            for layer in layers:
                score = target_score(self, self.adapter.readout(tokens.pop(layer)), target)
                attention = probe.attentions.pop(layer)
                (grad,) = gradients(score, [attention], f"attention probabilities of layer {layer}")
                term = grad.clamp_min(0).mean(dim=(1, 2))  # (B, N): over heads and query rows
                relevance = term if relevance is None else relevance + term
        maps = patch_tokens_to_grid((relevance / len(layers)).unsqueeze(1), result.layout)
        return maps, result.layout
