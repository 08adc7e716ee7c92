"""Relevance rules: how the relevance arriving at one op's output is shared among its inputs.

A rule is a small object with one method, ``relevance(call, R) -> R_in``: ``call`` is the
:class:`~attnexplain.relevance.ops.OpCall` recorded for the op in the forward (its inputs, its
output, its constants and the transposed map of its inputs), ``R`` the relevance at the output
(same shape) and ``R_in`` one tensor per relevance-carrying input (``None`` where none flows).
Rule sets (:mod:`attnexplain.relevance.rule_sets`) say which rule each kind of op gets, as
zennit's composites map module types to rules.

Every division by an activation goes through a *divide* policy, so a denominator near 0 uses
the rule's stabiliser and never gives NaN: :func:`chefer_divide` (Chefer et al.'s
``safe_divide``) or :class:`EpsilonDivide` (the ε-rule's ``z + ε·sign(z)``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from attnexplain.relevance.ops import OpCall

Divide = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Relevances = tuple[torch.Tensor | None, ...]

#: The stabiliser of Chefer et al.'s ``safe_divide`` and of their z^B rule.
CHEFER_STABILISER = 1e-9
#: Below this fraction of ``|x||W|``, a part of α1β0 computed as ``(xW ± |x||W|) / 2`` would have
#: lost more than 1 % of its float32 digits to cancellation, so it is computed directly.
_CANCELLATION = 1e-2


def chefer_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``safe_divide`` of hila-chefer/Transformer-Explainability ``modules/layers_ours.py``.

    ``a / (b + 1e-9)`` whatever the sign of ``b`` (their ``b.clamp(min=1e-9) + b.clamp(max=1e-9)``
    is ``b + 1e-9``), with a further ``1e-9`` where that sum is exactly 0, and 0 wherever ``b``
    itself is exactly 0.

    Args:
        numerator: ``a``.
        denominator: ``b``, broadcastable against ``a``.

    Returns:
        ``a / b`` stabilised, broadcast shape.
    """
    stabilised = denominator.clamp(min=CHEFER_STABILISER) + denominator.clamp(max=CHEFER_STABILISER)
    stabilised = stabilised + stabilised.eq(0).to(stabilised.dtype) * CHEFER_STABILISER
    return numerator / stabilised * denominator.ne(0).to(denominator.dtype)


class EpsilonDivide:
    """The ε-rule's stabilised division ``a / (b + ε·sign(b))``, with ``sign(0) = +1``.

    The stabiliser moves the denominator away from 0 in its own direction, so ``|b + ε·sign(b)|
    >= ε`` and the quotient is always finite (zennit's ``stabilize``).

    Args:
        epsilon: ``ε > 0``.

    Raises:
        ValueError: for ``ε <= 0`` (a zero stabiliser divides by exact zeros).
    """

    def __init__(self, epsilon: float) -> None:
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0 (it keeps divisions finite), got {epsilon}")
        self.epsilon = float(epsilon)

    def __call__(self, numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
        sign = torch.where(denominator >= 0, 1.0, -1.0).to(denominator.dtype)
        return numerator / (denominator + self.epsilon * sign)

    def __repr__(self) -> str:
        return f"EpsilonDivide({self.epsilon:g})"


def per_sample_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first (the batch), shaped to broadcast back."""
    return values.flatten(1).sum(dim=1).reshape(-1, *([1] * (values.dim() - 1)))


class Rule(abc.ABC):
    """How relevance passes through one op."""

    #: The op's output is a constant for relevance: it is detached in the forward, so nothing
    #: flows back through it (CP-LRP's attention probabilities).
    detaches: bool = False

    @abc.abstractmethod
    def relevance(self, call: OpCall, relevance: torch.Tensor) -> Relevances:
        """The relevance of each relevance-carrying input of ``call``.

        Args:
            call: the op as recorded in the forward.
            relevance: relevance at the op's output, its shape.

        Returns:
            One tensor (the input's shape) or ``None`` per carrier of ``call``.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Identity(Rule):
    """All the relevance passes to the op's single relevance-carrying input unchanged.

    Chefer et al. pass relevance this way through softmax, LayerNorm, GELU and dropout; AttnLRP's
    identity rule does the same for element-wise activations. Scaling by a constant (``x * c``,
    ``x / c``, ``-x``) is this rule in every rule set: the z-rule on ``z = c·x`` gives back ``R``.
    """

    def relevance(self, call: OpCall, relevance: torch.Tensor) -> Relevances:
        return tuple(relevance for _ in call.inputs)


class Uniform(Rule):
    """The product of ``n`` carriers gives each ``R / n`` (AttnLRP's uniform rule, Prop. 3.2).

    Used for element-wise products of two relevance-carrying tensors (gates, quick-GELU's
    ``x * sigmoid(1.702 x)``); constant factors carry none.
    """

    def relevance(self, call: OpCall, relevance: torch.Tensor) -> Relevances:
        share = relevance / len(call.inputs)
        return tuple(share.sum_to_size(x.shape) for x in call.inputs)


class Constant(Rule):
    """The op's output is treated as a constant (detached in the forward): no relevance passes.

    CP-LRP (Ali et al. 2022) treats attention probabilities this way, so the relevance of an
    attention output flows through the values only.
    """

    detaches = True

    def relevance(self, call: OpCall, relevance: torch.Tensor) -> Relevances:
        return tuple(None for _ in call.inputs)


class ZRule(Rule):
    """Gradient × input: ``R_i = share · x_i · ∂/∂x_i <divide(R, z), z>`` for each input.

    For a linear map ``z = W x + b`` this is the z-rule (LRP-0) with the bias in ``z``, and the
    ε-rule with :class:`EpsilonDivide`; for a sum (``a + b``, a mean) it splits ``R`` in
    proportion to the terms; for a bilinear map (``a @ b``) each operand gets a full copy of
    ``R``, so ``share=0.5`` halves them as Chefer et al.'s attention matmuls and AttnLRP's
    uniform rule (Prop. 3.3) do. This is also Chefer et al.'s ``RelPropSimple``.

    Args:
        divide: the stabilised division.
        share: the factor each input's relevance is multiplied by.
    """

    def __init__(self, divide: Divide, share: float = 1.0) -> None:
        self.divide = divide
        self.share = share

    def relevance(self, call: OpCall, relevance: torch.Tensor) -> Relevances:
        ratio = self.divide(relevance, call.output)
        return tuple(
            None if grad is None else self.share * x * grad
            for x, grad in zip(call.inputs, call.input_vjp(ratio))
        )

    def __repr__(self) -> str:
        return f"ZRule({self.divide!r}, share={self.share:g})"


class RenormalisedAdd(Rule):
    """Chefer et al.'s residual addition: proportional split, renormalised per sample.

    ``layers_ours.py`` ``Add.relprop``: each term ``t`` of ``z = a + b`` first gets ``t ·
    divide(R, z)``; then, per sample, the term's total is set to ``|Σt| / (|Σa| + |Σb|) · ΣR``, so
    the two totals add up to the relevance that arrived (their sums run over the whole tensor of
    a batch of one; here over each sample). A constant term (a position embedding, a bias) takes
    its share, which flows nowhere.

    Args:
        divide: the stabilised division.
    """

    def __init__(self, divide: Divide = chefer_divide) -> None:
        self.divide = divide

    def relevance(self, call: OpCall, relevance: torch.Tensor) -> Relevances:
        ratio = self.divide(relevance, call.output)
        shares = [term * ratio for term in call.terms]
        totals = [per_sample_sum(share) for share in shares]
        magnitude = sum(total.abs() for total in totals)
        arrived = per_sample_sum(relevance)
        renormalised = [
            share * self.divide(self.divide(total.abs(), magnitude) * arrived, total)
            for share, total in zip(shares, totals)
        ]
        return tuple(
            renormalised[term].sum_to_size(x.shape)
            for x, term in zip(call.inputs, call.carrier_terms)
        )

    def __repr__(self) -> str:
        return f"RenormalisedAdd({getattr(self.divide, '__name__', self.divide)!r})"


class AlphaBeta(Rule):
    """LRP-αβ on a linear map or convolution, bias ignored (Bach et al. 2015).

    With ``x⁺ = max(x, 0)``, ``x⁻ = min(x, 0)``, ``W⁺``, ``W⁻`` likewise, the activating part is
    ``z⁺ = W⁺x⁺ + W⁻x⁻`` and the inhibiting part ``z⁻ = W⁻x⁺ + W⁺x⁻``; ``R_in = α·C(z⁺) −
    β·C(z⁻)`` where ``C`` shares ``R`` in proportion to each contribution. Chefer et al. use
    ``α = 1, β = 0``. ``joint=True`` divides by the sum of the two halves of each part (their
    ``layers_ours.py`` ``Linear``: conservative); ``joint=False`` divides each half by itself
    (their ``layers_lrp.py`` ``Linear`` and both files' ``Conv2d``: each half then receives the
    whole ``R``, so up to twice the relevance leaves the layer).

    Args:
        alpha: weight of the activating part.
        beta: weight of the inhibiting part.
        joint: one denominator for both halves of a part.
        divide: the stabilised division.
    """

    def __init__(
        self, alpha: float = 1.0, beta: float = 0.0, *, joint: bool = True,
        divide: Divide = chefer_divide,
    ) -> None:  # fmt: skip
        self.alpha, self.beta, self.joint, self.divide = alpha, beta, joint, divide

    def relevance(self, call: OpCall, relevance: torch.Tensor) -> Relevances:
        (x,) = call.inputs
        weight = call.weight
        if self.joint:
            # z⁺ = x⁺W⁺ + x⁻W⁻ = (xW + |x||W|) / 2 and z⁻ = (xW − |x||W|) / 2: one product more
            # than the forward instead of two (recomputed exactly where a part is so small that
            # the sum would lose its digits); x⁺W⁺ᵀs + x⁻W⁻ᵀs = (x·Wᵀs ± |x|·|W|ᵀs) / 2.
            plain, absolute = call.output_without_bias(), call.affine(x.abs(), weight.abs())

            def part(activating: bool) -> torch.Tensor:
                sign = 1.0 if activating else -1.0
                z = (plain + sign * absolute) / 2
                lost = z.abs() < _CANCELLATION * absolute
                if lost.any():
                    w_a, w_b = weight.clamp(min=0), weight.clamp(max=0)
                    if not activating:
                        w_a, w_b = w_b, w_a
                    exact = call.affine(x.clamp(min=0), w_a) + call.affine(x.clamp(max=0), w_b)
                    z = torch.where(lost, exact, z)
                ratio = self.divide(relevance, z)
                return (
                    x * call.affine_vjp(ratio, weight)
                    + sign * x.abs() * call.affine_vjp(ratio, weight.abs())
                ) / 2

            result = self.alpha * part(activating=True)
            if self.beta:
                result = result - self.beta * part(activating=False)
            return (result,)
        positive_x, negative_x = x.clamp(min=0), x.clamp(max=0)
        positive_w, negative_w = weight.clamp(min=0), weight.clamp(max=0)

        def separate(weight_a: torch.Tensor, weight_b: torch.Tensor) -> torch.Tensor:
            ratio_a = self.divide(relevance, call.affine(positive_x, weight_a))
            ratio_b = self.divide(relevance, call.affine(negative_x, weight_b))
            return positive_x * call.affine_vjp(ratio_a, weight_a) + negative_x * call.affine_vjp(
                ratio_b, weight_b
            )

        result = self.alpha * separate(positive_w, negative_w)
        if self.beta:
            result = result - self.beta * separate(negative_w, positive_w)
        return (result,)

    def __repr__(self) -> str:
        return f"AlphaBeta({self.alpha:g}, {self.beta:g}, joint={self.joint})"


class ZBox(Rule):
    """The z^B rule for the layer that sees the pixels (Montavon et al. 2017), bias ignored.

    Chefer et al.'s ``Conv2d.relprop`` for a 3-channel input: with per-sample bounds ``l =
    min(x)`` and ``h = max(x)`` over channels and pixels, ``z = W x − W⁺ l − W⁻ h + 10⁻⁹`` and
    ``R_in = x ⊙ Wᵀs − l ⊙ W⁺ᵀs − h ⊙ W⁻ᵀs`` with ``s = R / z``. Every ``z`` is at least the
    stabiliser (``x`` lies in ``[l, h]``), so the division is safe.
    """

    def relevance(self, call: OpCall, relevance: torch.Tensor) -> Relevances:
        (x,) = call.inputs
        dims = tuple(range(1, x.dim()))
        low = x.amin(dim=dims, keepdim=True).expand_as(x)
        high = x.amax(dim=dims, keepdim=True).expand_as(x)
        weight = call.weight
        positive_w, negative_w = weight.clamp(min=0), weight.clamp(max=0)
        z = (
            call.affine(x, weight)
            - call.affine(low, positive_w)
            - call.affine(high, negative_w)
            + CHEFER_STABILISER
        )
        ratio = relevance / z
        return (
            x * call.affine_vjp(ratio, weight)
            - low * call.affine_vjp(ratio, positive_w)
            - high * call.affine_vjp(ratio, negative_w),
        )


class TaylorSoftmax(Rule):
    """AttnLRP's softmax rule (Achtibat et al. 2024, Prop. 3.1): ``R_in = x ⊙ (R − s ΣR)``.

    ``x`` are the softmax's inputs (``−inf`` from masks counts as 0), ``s`` its outputs and the
    sum runs along the softmax dimension. The rule is the Deep Taylor decomposition at ``x`` with
    a bias; it does not conserve relevance.
    """

    def relevance(self, call: OpCall, relevance: torch.Tensor) -> Relevances:
        (scores,) = call.inputs
        scores = torch.where(torch.isneginf(scores), 0.0, scores)
        total = relevance.sum(dim=call.dim, keepdim=True)
        return (scores * (relevance - call.output * total),)


class LinearisedLayerNorm(Rule):
    """AttnLRP's LayerNorm rule: the layer linearised with its standard deviation held constant.

    ``y = (x − mean(x)) / σ · w + b`` with ``σ`` a constant is linear in ``x``; the ε-rule on it
    (identity rule on the division by ``σ`` and on ``· w``, ε-rule on the centring) gives
    ``R_in = x ⊙ Jᵀ divide(R, y)`` with ``Jᵀg = v − mean(v)``, ``v = g · w / σ`` over the
    normalised dimensions (lxt's ``layer_norm`` / ``layer_norm_forward``).

    Args:
        divide: the stabilised division.
    """

    def __init__(self, divide: Divide) -> None:
        self.divide = divide

    def relevance(self, call: OpCall, relevance: torch.Tensor) -> Relevances:
        (x,) = call.inputs
        dims = tuple(range(-call.normalized_ndim, 0))
        sigma = (x.var(dim=dims, unbiased=False, keepdim=True) + call.eps).sqrt()
        scaled = self.divide(relevance, call.output) / sigma
        if call.weight is not None:
            scaled = scaled * call.weight
        return (x * (scaled - scaled.mean(dim=dims, keepdim=True)),)

    def __repr__(self) -> str:
        return f"LinearisedLayerNorm({self.divide!r})"
