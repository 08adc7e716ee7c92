"""AttnLRP (Achtibat et al., ICML 2024) and its CP-LRP variant."""

from __future__ import annotations

from typing import Literal

from torch import nn

from attnexplain.capture import ModelAdapter
from attnexplain.methods._relevance import PixelRelevance
from attnexplain.relevance import attnlrp_rules

Variant = Literal["attnlrp", "cp-lrp"]


class AttnLRP(PixelRelevance):
    r"""Attention-aware LRP to the pixels, summed over the colour channels.

    Achtibat et al. 2024, *AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
    Transformers* (ICML), with the rules of :func:`~attnexplain.relevance.attnlrp_rules`: the
    ε-rule on linear layers, the patch embedding and additions; the identity rule on element-wise
    activations and on LayerNorm's division by its standard deviation; the softmax rule
    :math:`R_{in} = x \odot (R - s \sum R)`; the uniform rule on the attention matmuls and on
    products. Relevance starts at each sample's target logit (Gradient × Input from a unit
    gradient, as the authors' ``lxt`` does), so without biases it sums to the logit.

    ``variant="cp-lrp"`` treats the attention probabilities as constants inside the attention
    (Ali et al. 2022, *XAI for Transformers: Better Explanations through Conservative
    Propagation*; lxt's default for torchvision ViTs).

    Args:
        model: any supported vision transformer with a classification head (or its adapter).
        epsilon: the ε-rule's stabiliser.
        variant: ``"attnlrp"`` or ``"cp-lrp"``.

    Shapes:
        ``attribute(x, target)`` on ``(B, C, H, W)`` returns ``(B, 1, H, W)``; with
        ``upsample=False`` each patch's sum, ``(B, 1, h, w)``. Signed.

    Raises:
        ValueError: for an unknown ``variant`` or ``epsilon <= 0``.
        UnsupportedModelError: at ``attribute``, without a classification head or for an op
            no rule covers (the message names it and its module).

    Examples:
        >>> maps = AttnLRP(model).attribute(x, target=[1, 3])  # (2, 1, H, W)  # doctest: +SKIP
    """

    def __init__(
        self, model: nn.Module | ModelAdapter, *, epsilon: float = 1e-6,
        variant: Variant = "attnlrp",
    ) -> None:  # fmt: skip
        super().__init__(model)
        if variant not in ("attnlrp", "cp-lrp"):
            raise ValueError(f"variant must be 'attnlrp' or 'cp-lrp', got {variant!r}")
        self.variant = variant
        self.epsilon = epsilon
        self.rules = attnlrp_rules(epsilon, conservative_attention=variant == "cp-lrp")
        self.start = "score"
