"""Rule sets: which relevance rule every kind of op gets, one set per published method.

A :class:`RuleSet` maps op kinds to rules (zennit's composites map module types to rules the
same way). The sets are the rules each reference implementation applies:

- :data:`CHEFER_RULES`: hila-chefer/Transformer-Explainability ``modules/layers_ours.py`` on
  ``baselines/ViT/ViT_LRP.py``, the model behind the paper's Transformer Attribution row;
- :data:`CHEFER_BASELINE_RULES`: ``modules/layers_lrp.py`` on ``baselines/ViT/ViT_orig_LRP.py``,
  behind the same table's "LRP" and "partial LRP" rows;
- :func:`attnlrp_rules`: Achtibat et al. 2024 (AttnLRP), and its CP-LRP variant.

Ops that only move values (reshape, permute, index, cat, clone, expand, cast, eval dropout) need
no rule: their own backward moves the relevance with them, and a tensor used twice sums the
relevance of its uses (Chefer et al.'s ``Clone``). Scaling by a constant (``x * c``, ``x / c``,
``-x``) passes relevance unchanged in every set.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from attnexplain.relevance.rules import (
    AlphaBeta,
    Constant,
    EpsilonDivide,
    Identity,
    LinearisedLayerNorm,
    RenormalisedAdd,
    Rule,
    TaylorSoftmax,
    Uniform,
    ZBox,
    ZRule,
    chefer_divide,
)


@dataclass(frozen=True)
class RuleSet:
    """The rule of every op kind a ViT runs.

    Attributes:
        name: for messages and docs.
        linear: ``F.linear``.
        stem: the convolution of the patch embedding (the layer that sees the pixels).
        conv: any other ``F.conv2d``.
        add: ``a + b``, ``a - b`` of a carrier and a tensor (residuals, position embeddings).
        product: element-wise product of two carriers.
        bilinear: ``a @ b`` of two carriers (attention scores, attention times values).
        constant_matmul: ``a @ W`` with one operand a constant.
        softmax: softmax (the attention probabilities).
        norm: ``F.layer_norm``.
        activation: element-wise activations (GELU, ReLU, SiLU, sigmoid, tanh, ...).
        reduction: ``mean`` / ``sum`` over dimensions (token pooling).
    """

    name: str
    linear: Rule
    stem: Rule
    conv: Rule
    add: Rule
    product: Rule
    bilinear: Rule
    constant_matmul: Rule
    softmax: Rule
    norm: Rule
    activation: Rule
    reduction: Rule

    def describe(self) -> str:
        """One line per op kind: ``kind: rule``."""
        return "\n".join(
            f"{f.name}: {getattr(self, f.name)!r}" for f in fields(self) if f.name != "name"
        )


#: Transformer Attribution (``layers_ours.py``): α1β0 on linear layers with one denominator,
#: z^B on the patch embedding, the renormalised proportional split on additions, both operands of
#: a matmul halved, softmax / LayerNorm / GELU passing relevance on.
CHEFER_RULES = RuleSet(
    name="chefer",
    linear=AlphaBeta(1.0, 0.0, joint=True),
    stem=ZBox(),
    conv=AlphaBeta(1.0, 0.0, joint=False),
    add=RenormalisedAdd(chefer_divide),
    product=Uniform(),
    bilinear=ZRule(chefer_divide, share=0.5),
    constant_matmul=ZRule(chefer_divide),
    softmax=Identity(),
    norm=Identity(),
    activation=Identity(),
    reduction=ZRule(chefer_divide),
)

#: The "LRP" / "partial LRP" baselines (``layers_lrp.py``): as :data:`CHEFER_RULES` but α1β0
#: divides each half of a linear layer by itself and additions split proportionally without
#: renormalisation (``RelPropSimple``).
CHEFER_BASELINE_RULES = replace(
    CHEFER_RULES,
    name="chefer-baseline",
    linear=AlphaBeta(1.0, 0.0, joint=False),
    add=ZRule(chefer_divide),
)


def attnlrp_rules(epsilon: float = 1e-6, *, conservative_attention: bool = False) -> RuleSet:
    """AttnLRP's rules (Achtibat et al. 2024), or CP-LRP's inside the attention.

    ε-rule on linear layers, convolutions, additions and token pooling; identity rule on
    element-wise activations; LayerNorm linearised with its standard deviation held constant;
    the softmax rule of Prop. 3.1; the uniform rule on products and on the attention matmuls
    (Prop. 3.3). With ``conservative_attention=True`` the attention probabilities are constants
    (CP-LRP, Ali et al. 2022; lxt's default for torchvision ViTs): no relevance reaches queries
    and keys, and the values take all of it.

    Args:
        epsilon: the ε-rule's stabiliser.
        conservative_attention: CP-LRP inside the attention.

    Returns:
        The rule set.

    Raises:
        ValueError: for ``epsilon <= 0``.
    """
    divide = EpsilonDivide(epsilon)
    return RuleSet(
        name="cp-lrp" if conservative_attention else "attnlrp",
        linear=ZRule(divide),
        stem=ZRule(divide),
        conv=ZRule(divide),
        add=ZRule(divide),
        product=Uniform(),
        bilinear=ZRule(divide, share=0.5),
        constant_matmul=ZRule(divide),
        softmax=Constant() if conservative_attention else TaylorSoftmax(),
        norm=LinearisedLayerNorm(divide),
        activation=Identity(),
        reduction=ZRule(divide),
    )
